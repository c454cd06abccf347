/**
 * Just enough GGUF (ggml's file format, version 2 and 3) to read and write llama.cpp control
 * vectors. Layout, all little-endian:
 *
 *     u32 magic "GGUF" | u32 version | u64 tensor_count | u64 metadata_kv_count
 *     metadata: key (u64 length + UTF-8) | u32 value type | value        × metadata_kv_count
 *     tensor infos: name | u32 n_dims | u64 dims[n_dims] | u32 ggml type | u64 offset   × tensor_count
 *     padding to `general.alignment` (default 32) | tensor data, each tensor at its aligned offset
 *
 * Strings are a u64 byte length then UTF-8 bytes; arrays are a u32 element type, a u64 count, then
 * the elements. The reader checks every length against the bytes that remain, so a truncated or
 * hostile file is a typed error (SAEGATE_ERR_VECTOR_FILE naming the file and what was wrong), never
 * a RangeError or a huge allocation. Only F32 and F16 tensors are decoded (control vectors are
 * F32); other tensor types are refused by name.
 */
import { err } from '../common/errors.js';
import { f16ToF32 } from '../common/f16.js';

const MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
const DEFAULT_ALIGNMENT = 32;
/** Longest string, longest array and most tensors/keys we accept: far above any control vector. */
const MAX_STRING_BYTES = 1 << 20;
const MAX_ARRAY_LENGTH = 1 << 24;
const MAX_ENTRIES = 1 << 16;

/** GGUF metadata value types. */
export const GgufType = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;

/** ggml tensor types this module decodes. */
export const GgmlType = { F32: 0, F16: 1 } as const;

export type GgufScalar = number | bigint | boolean | string;
export type GgufValue = GgufScalar | GgufValue[];

/** A metadata value with the type it is written as. */
export interface GgufTypedValue {
  type: number;
  value: GgufValue;
  /** Element type, for arrays. */
  elementType?: number;
}

export interface GgufTensor {
  name: string;
  /** Dimensions as ggml lists them (innermost first). */
  dims: number[];
  /** Decoded to f32. */
  data: Float32Array;
}

export interface GgufFile {
  version: number;
  metadata: Map<string, GgufTypedValue>;
  tensors: GgufTensor[];
}

class Reader {
  offset = 0;
  private readonly view: DataView;
  private readonly decoder = new TextDecoder('utf-8', { fatal: true });

  constructor(
    readonly bytes: Uint8Array,
    private readonly source: string,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  fail(what: string): never {
    throw err('SAEGATE_ERR_VECTOR_FILE', this.source, `GGUF: ${what} (at byte ${this.offset})`);
  }

  need(n: number, what: string): void {
    if (n < 0 || this.offset + n > this.bytes.length) this.fail(`truncated while reading ${what}: needs ${n} bytes, ${this.bytes.length - this.offset} left`);
  }

  u32(what: string): number {
    this.need(4, what);
    const v = this.view.getUint32(this.offset, true);
    this.offset += 4;
    return v;
  }

  u64(what: string): number {
    this.need(8, what);
    const v = this.view.getBigUint64(this.offset, true);
    this.offset += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(`${what} ${v} is too large`);
    return Number(v);
  }

  string(what: string): string {
    const length = this.u64(`${what} length`);
    if (length > MAX_STRING_BYTES) this.fail(`${what} is ${length} bytes long (at most ${MAX_STRING_BYTES})`);
    this.need(length, what);
    try {
      const s = this.decoder.decode(this.bytes.subarray(this.offset, this.offset + length));
      this.offset += length;
      return s;
    } catch {
      return this.fail(`${what} is not valid UTF-8`);
    }
  }

  value(type: number, what: string): GgufTypedValue {
    const v = this.view;
    const scalar = (size: number, read: (o: number) => GgufScalar): GgufScalar => {
      this.need(size, what);
      const value = read(this.offset);
      this.offset += size;
      return value;
    };
    switch (type) {
      case GgufType.UINT8: return { type, value: scalar(1, (o) => v.getUint8(o)) };
      case GgufType.INT8: return { type, value: scalar(1, (o) => v.getInt8(o)) };
      case GgufType.UINT16: return { type, value: scalar(2, (o) => v.getUint16(o, true)) };
      case GgufType.INT16: return { type, value: scalar(2, (o) => v.getInt16(o, true)) };
      case GgufType.UINT32: return { type, value: scalar(4, (o) => v.getUint32(o, true)) };
      case GgufType.INT32: return { type, value: scalar(4, (o) => v.getInt32(o, true)) };
      case GgufType.FLOAT32: return { type, value: scalar(4, (o) => v.getFloat32(o, true)) };
      case GgufType.BOOL: {
        const b = scalar(1, (o) => v.getUint8(o));
        if (b !== 0 && b !== 1) this.fail(`${what}: bool value ${String(b)} is neither 0 nor 1`);
        return { type, value: b === 1 };
      }
      case GgufType.STRING: return { type, value: this.string(what) };
      case GgufType.UINT64: return { type, value: scalar(8, (o) => v.getBigUint64(o, true)) };
      case GgufType.INT64: return { type, value: scalar(8, (o) => v.getBigInt64(o, true)) };
      case GgufType.FLOAT64: return { type, value: scalar(8, (o) => v.getFloat64(o, true)) };
      case GgufType.ARRAY: {
        const elementType = this.u32(`${what} element type`);
        if (elementType === GgufType.ARRAY) this.fail(`${what}: nested arrays are not supported`);
        const count = this.u64(`${what} count`);
        if (count > MAX_ARRAY_LENGTH) this.fail(`${what} has ${count} elements (at most ${MAX_ARRAY_LENGTH})`);
        const values: GgufValue[] = [];
        for (let i = 0; i < count; i++) values.push(this.value(elementType, `${what}[${i}]`).value);
        return { type, value: values, elementType };
      }
      default:
        return this.fail(`${what}: unknown value type ${type}`);
    }
  }
}

/** Parses a GGUF file's bytes. `source` names it in errors. */
export function parseGguf(bytes: Uint8Array, source: string): GgufFile {
  const r: Reader = new Reader(bytes, source);
  if (bytes.length < 4 || r.u32('magic') !== MAGIC) {
    r.offset = 0;
    r.fail("not a GGUF file (the first four bytes are not 'GGUF')");
  }
  const version = r.u32('version');
  if (version !== 2 && version !== 3) r.fail(`version ${version} is not supported (2 or 3)`);
  const tensorCount = r.u64('tensor count');
  const kvCount = r.u64('metadata count');
  if (tensorCount > MAX_ENTRIES || kvCount > MAX_ENTRIES) r.fail(`${tensorCount} tensors and ${kvCount} metadata entries is more than a GGUF file can plausibly hold`);
  const metadata = new Map<string, GgufTypedValue>();
  for (let i = 0; i < kvCount; i++) {
    const key = r.string(`metadata key ${i}`);
    if (metadata.has(key)) r.fail(`metadata key '${key}' appears twice`);
    const type = r.u32(`type of '${key}'`);
    metadata.set(key, r.value(type, `'${key}'`));
  }
  const alignmentEntry = metadata.get('general.alignment');
  let alignment = DEFAULT_ALIGNMENT;
  if (alignmentEntry !== undefined) {
    const a = alignmentEntry.value;
    if (typeof a !== 'number' || !Number.isInteger(a) || a <= 0 || (a & (a - 1)) !== 0) r.fail(`general.alignment ${String(a)} is not a power of two`);
    alignment = a;
  }
  const infos: { name: string; dims: number[]; type: number; offset: number }[] = [];
  const names = new Set<string>();
  for (let i = 0; i < tensorCount; i++) {
    const name = r.string(`tensor ${i} name`);
    if (names.has(name)) r.fail(`tensor '${name}' appears twice`);
    names.add(name);
    const nDims = r.u32(`'${name}' dimension count`);
    if (nDims < 1 || nDims > 4) r.fail(`tensor '${name}' has ${nDims} dimensions (1 to 4)`);
    const dims: number[] = [];
    for (let d = 0; d < nDims; d++) dims.push(r.u64(`'${name}' dimension ${d}`));
    const type = r.u32(`'${name}' type`);
    const offset = r.u64(`'${name}' offset`);
    if (offset % alignment !== 0) r.fail(`tensor '${name}' offset ${offset} is not a multiple of the alignment ${alignment}`);
    infos.push({ name, dims, type, offset });
  }
  const dataStart = Math.ceil(r.offset / alignment) * alignment;
  const tensors: GgufTensor[] = [];
  for (const info of infos) {
    const elements = info.dims.reduce((a, b) => a * b, 1);
    let elementBytes: number;
    if (info.type === GgmlType.F32) elementBytes = 4;
    else if (info.type === GgmlType.F16) elementBytes = 2;
    else return r.fail(`tensor '${info.name}' has ggml type ${info.type}; only F32 (0) and F16 (1) are supported for control vectors`);
    const begin = dataStart + info.offset;
    const end = begin + elements * elementBytes;
    if (!Number.isSafeInteger(end) || end > bytes.length) {
      r.offset = begin;
      r.fail(`tensor '${info.name}' (${elements} values) runs past the end of the file`);
    }
    // A copy (Uint8Array's slice, not Buffer's view), so the f32 view below starts at offset 0 of its own buffer.
    const slice = Uint8Array.prototype.slice.call(bytes, begin, end);
    const data =
      info.type === GgmlType.F32
        ? new Float32Array(slice.buffer, 0, elements)
        : (() => {
            const out = new Float32Array(elements);
            f16ToF32(new Uint16Array(slice.buffer, 0, elements), out);
            return out;
          })();
    tensors.push({ name: info.name, dims: info.dims, data });
  }
  return { version, metadata, tensors };
}

class Writer {
  private chunks: Uint8Array[] = [];
  length = 0;
  private readonly encoder = new TextEncoder();

  push(bytes: Uint8Array): void {
    this.chunks.push(bytes);
    this.length += bytes.length;
  }

  scalar(size: number, write: (view: DataView) => void): void {
    const bytes = new Uint8Array(size);
    write(new DataView(bytes.buffer));
    this.push(bytes);
  }

  u32(v: number): void {
    this.scalar(4, (d) => d.setUint32(0, v, true));
  }

  u64(v: number | bigint): void {
    this.scalar(8, (d) => d.setBigUint64(0, BigInt(v), true));
  }

  string(s: string): void {
    const bytes = this.encoder.encode(s);
    this.u64(bytes.length);
    this.push(bytes);
  }

  value(entry: GgufTypedValue): void {
    const { type, value } = entry;
    switch (type) {
      case GgufType.UINT8: return this.scalar(1, (d) => d.setUint8(0, Number(value)));
      case GgufType.INT8: return this.scalar(1, (d) => d.setInt8(0, Number(value)));
      case GgufType.UINT16: return this.scalar(2, (d) => d.setUint16(0, Number(value), true));
      case GgufType.INT16: return this.scalar(2, (d) => d.setInt16(0, Number(value), true));
      case GgufType.UINT32: return this.scalar(4, (d) => d.setUint32(0, Number(value), true));
      case GgufType.INT32: return this.scalar(4, (d) => d.setInt32(0, Number(value), true));
      case GgufType.FLOAT32: return this.scalar(4, (d) => d.setFloat32(0, Number(value), true));
      case GgufType.BOOL: return this.scalar(1, (d) => d.setUint8(0, value === true ? 1 : 0));
      case GgufType.STRING: return this.string(String(value));
      case GgufType.UINT64: return this.scalar(8, (d) => d.setBigUint64(0, BigInt(value as number | bigint), true));
      case GgufType.INT64: return this.scalar(8, (d) => d.setBigInt64(0, BigInt(value as number | bigint), true));
      case GgufType.FLOAT64: return this.scalar(8, (d) => d.setFloat64(0, Number(value), true));
      case GgufType.ARRAY: {
        const elementType = entry.elementType ?? GgufType.STRING;
        const values = Array.isArray(value) ? value : [value];
        this.u32(elementType);
        this.u64(values.length);
        for (const element of values) this.value({ type: elementType, value: element });
        return;
      }
      default:
        throw new TypeError(`unknown GGUF value type ${type}`);
    }
  }

  pad(alignment: number): void {
    const padding = (alignment - (this.length % alignment)) % alignment;
    if (padding > 0) this.push(new Uint8Array(padding));
  }

  concat(): Uint8Array {
    const out = new Uint8Array(this.length);
    let at = 0;
    for (const chunk of this.chunks) {
      out.set(chunk, at);
      at += chunk.length;
    }
    return out;
  }
}

/** Serialises metadata and 1-D F32 tensors as GGUF version 3, default alignment 32. */
export function serializeGguf(metadata: ReadonlyMap<string, GgufTypedValue>, tensors: readonly { name: string; data: Float32Array }[]): Uint8Array {
  const w = new Writer();
  w.u32(MAGIC);
  w.u32(3);
  w.u64(tensors.length);
  w.u64(metadata.size);
  for (const [key, entry] of metadata) {
    w.string(key);
    w.u32(entry.type);
    w.value(entry);
  }
  let offset = 0;
  for (const tensor of tensors) {
    w.string(tensor.name);
    w.u32(1);
    w.u64(tensor.data.length);
    w.u32(GgmlType.F32);
    w.u64(offset);
    offset += Math.ceil((tensor.data.length * 4) / DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
  }
  w.pad(DEFAULT_ALIGNMENT);
  for (const tensor of tensors) {
    const bytes = new Uint8Array(tensor.data.length * 4);
    const view = new DataView(bytes.buffer);
    for (let i = 0; i < tensor.data.length; i++) view.setFloat32(i * 4, tensor.data[i], true);
    w.push(bytes);
    w.pad(DEFAULT_ALIGNMENT);
  }
  return w.concat();
}
