/**
 * Reader and writer for the safetensors format (https://github.com/huggingface/safetensors):
 *
 *     u64 LE header length N | N bytes of JSON header | data section
 *
 * The header maps tensor names to `{dtype, shape, data_offsets: [begin, end]}` (offsets relative
 * to the data section) plus an optional `__metadata__` map of strings. Validation follows the Rust
 * reference implementation: offsets must lie inside the data section, each byte range must equal
 * `product(shape) × dtype size`, and the ranges must tile the data section exactly — no overlap,
 * no holes, no trailing bytes. Anything else is SAEGATE_ERR_SAFETENSORS naming the file and the
 * tensor.
 *
 * Tensors are read lazily with positional reads, so opening a multi-GiB checkpoint costs one read
 * of its header and each `getTensor` reads only that tensor's bytes. The module is shared by the
 * model loaders and the SAE engine, so it knows nothing about models.
 */
import fs from 'node:fs';
import { err } from './errors.js';
import { f16ToF32, f32ToF16 } from './f16.js';

/** Element types of the safetensors format. */
export type SafetensorsDtype =
  | 'F64'
  | 'F32'
  | 'F16'
  | 'BF16'
  | 'I64'
  | 'I32'
  | 'I16'
  | 'I8'
  | 'U64'
  | 'U32'
  | 'U16'
  | 'U8'
  | 'BOOL'
  | 'F8_E4M3'
  | 'F8_E5M2';

/** Bytes per element of each dtype. */
export const dtypeSize: Readonly<Record<SafetensorsDtype, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
};

function isDtype(value: unknown): value is SafetensorsDtype {
  return typeof value === 'string' && Object.hasOwn(dtypeSize, value);
}

/** Where a tensor lives in its file. */
export interface SafetensorsTensorInfo {
  /** Tensor name as in the header. */
  name: string;
  dtype: SafetensorsDtype;
  /** Dimensions, outermost first (row-major). */
  shape: readonly number[];
  /** Absolute byte offset of the first element in the file. */
  byteOffset: number;
  byteLength: number;
}

/** A tensor as stored: raw little-endian bytes in a fresh, zero-offset buffer. */
export interface SafetensorsTensor {
  dtype: SafetensorsDtype;
  /** Dimensions, outermost first (row-major). */
  shape: readonly number[];
  /** Raw bytes; `new Float32Array(data.buffer)` and friends work because the buffer is aligned. */
  data: Uint8Array;
}

/** Largest header accepted, as in the Rust implementation: a bigger one is corruption, not a model. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;
/** fs.readSync takes at most 2 GiB − 1 bytes per call; read bigger tensors in slices of this size. */
const READ_CHUNK_BYTES = 1 << 30;

/** The host's byte order decides whether typed-array views of little-endian data are correct. */
const littleEndianHost = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Positional byte source: a file descriptor or an in-memory buffer. */
interface ByteSource {
  readonly size: number;
  /** Fills `target` with the bytes starting at `position`; the range is known to be in bounds. */
  read(position: number, target: Uint8Array): void;
  close(): void;
}

function fileSource(path: string): ByteSource {
  let fd: number;
  let size: number;
  try {
    fd = fs.openSync(path, 'r');
  } catch (cause) {
    throw err('SAEGATE_ERR_SAFETENSORS', path, `cannot open: ${(cause as Error).message}`);
  }
  try {
    const stat = fs.fstatSync(fd);
    if (!stat.isFile()) throw new Error('not a regular file');
    size = stat.size;
  } catch (cause) {
    fs.closeSync(fd);
    throw err('SAEGATE_ERR_SAFETENSORS', path, `cannot read: ${(cause as Error).message}`);
  }
  let open = true;
  return {
    size,
    read(position, target) {
      if (!open) throw err('SAEGATE_ERR_SAFETENSORS', path, 'read after close()');
      let done = 0;
      while (done < target.length) {
        const want = Math.min(READ_CHUNK_BYTES, target.length - done);
        let got: number;
        try {
          got = fs.readSync(fd, target, done, want, position + done);
        } catch (cause) {
          throw err('SAEGATE_ERR_SAFETENSORS', path, `read failed at byte ${position + done}: ${(cause as Error).message}`);
        }
        // The file shrank under us: every range was checked against the size at open.
        if (got === 0) throw err('SAEGATE_ERR_SAFETENSORS', path, `unexpected end of file at byte ${position + done}`);
        done += got;
      }
    },
    close() {
      if (open) fs.closeSync(fd);
      open = false;
    },
  };
}

function bufferSource(bytes: Uint8Array): ByteSource {
  return {
    size: bytes.length,
    read(position, target) {
      target.set(bytes.subarray(position, position + target.length));
    },
    close() {},
  };
}

function isNonNegativeSafeInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function formatShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

interface ParsedHeader {
  tensors: Map<string, SafetensorsTensorInfo>;
  metadata: Record<string, string> | null;
}

/**
 * Parses and validates a header. `json` is the header text, `dataStart` the absolute offset of the
 * data section and `dataSize` its length.
 */
function parseHeader(path: string, json: string, dataStart: number, dataSize: number): ParsedHeader {
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch (cause) {
    throw err('SAEGATE_ERR_SAFETENSORS', path, `header is not valid JSON: ${(cause as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw err('SAEGATE_ERR_SAFETENSORS', path, 'header is not a JSON object');
  }
  let metadata: Record<string, string> | null = null;
  const tensors = new Map<string, SafetensorsTensorInfo>();
  const ranges: { name: string; begin: number; end: number }[] = [];
  for (const [name, entry] of Object.entries(parsed)) {
    if (name === '__metadata__') {
      if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
        throw err('SAEGATE_ERR_SAFETENSORS', path, '__metadata__ is not an object of strings');
      }
      metadata = {};
      for (const [key, value] of Object.entries(entry)) {
        if (typeof value !== 'string') throw err('SAEGATE_ERR_SAFETENSORS', path, `__metadata__.${key} is not a string`);
        metadata[key] = value;
      }
      continue;
    }
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
      throw err('SAEGATE_ERR_SAFETENSORS', path, `tensor '${name}': entry is not an object`);
    }
    const { dtype, shape, data_offsets: offsets } = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (!isDtype(dtype)) throw err('SAEGATE_ERR_SAFETENSORS', path, `tensor '${name}': unknown dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape) || !shape.every(isNonNegativeSafeInteger)) {
      throw err('SAEGATE_ERR_SAFETENSORS', path, `tensor '${name}': shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegativeSafeInteger)) {
      throw err('SAEGATE_ERR_SAFETENSORS', path, `tensor '${name}': data_offsets ${JSON.stringify(offsets)} is not a pair of non-negative integers`);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end) throw err('SAEGATE_ERR_SAFETENSORS', path, `tensor '${name}': data_offsets [${begin}, ${end}] end before they begin`);
    if (end > dataSize) {
      throw err('SAEGATE_ERR_SAFETENSORS', path, `tensor '${name}': data_offsets [${begin}, ${end}] run past the data section of ${dataSize} bytes`);
    }
    // Products of header-supplied dims can exceed 2^53; a double still orders them correctly
    // against the (exact, small) byte length, which is all the comparison needs.
    const elements = (shape as number[]).reduce((a, b) => a * b, 1);
    const needed = elements * dtypeSize[dtype];
    if (needed !== end - begin) {
      throw err(
        'SAEGATE_ERR_SAFETENSORS',
        path,
        `tensor '${name}': shape ${formatShape(shape as number[])} × ${dtype} needs ${needed} bytes but data_offsets [${begin}, ${end}] hold ${end - begin}`,
      );
    }
    tensors.set(name, { name, dtype, shape: shape as number[], byteOffset: dataStart + begin, byteLength: end - begin });
    ranges.push({ name, begin, end });
  }
  // The ranges must tile [0, dataSize): sorted by start, each begins where the previous ended.
  ranges.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  let previous = '';
  for (const range of ranges) {
    if (range.begin < cursor) {
      throw err('SAEGATE_ERR_SAFETENSORS', path, `tensor '${range.name}': data_offsets [${range.begin}, ${range.end}] overlap tensor '${previous}' (which ends at ${cursor})`);
    }
    if (range.begin > cursor) {
      throw err('SAEGATE_ERR_SAFETENSORS', path, `tensor '${range.name}': data_offsets begin at ${range.begin}, leaving a hole after byte ${cursor} of the data section`);
    }
    cursor = range.end;
    previous = range.name;
  }
  if (cursor !== dataSize) {
    throw err('SAEGATE_ERR_SAFETENSORS', path, `data section has ${dataSize} bytes but the tensors cover only ${cursor}`);
  }
  return { tensors, metadata };
}

/** Converts f16 bit patterns to f32 values, exactly (subnormals, ±Inf and NaN included). */
export function float16ToFloat32(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  f16ToF32(bits, out);
  return out;
}

/** Converts bf16 bit patterns to f32 values: bf16 is the top half of an f32, so a shift is exact. */
export function bfloat16ToFloat32(bits: Uint16Array): Float32Array {
  const out = new Uint32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = bits[i] << 16;
  return new Float32Array(out.buffer);
}

/** Rounds f32 values to f16 bit patterns, to nearest with ties to even; overflow gives ±Inf. */
export function float32ToFloat16(values: Float32Array): Uint16Array {
  const out = new Uint16Array(values.length);
  f32ToF16(values, out);
  return out;
}

/** Rounds f32 values to bf16 bit patterns, to nearest with ties to even. */
export function float32ToBfloat16(values: Float32Array): Uint16Array {
  const words = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const bits = words[i];
    if ((bits & 0x7fffffff) > 0x7f800000) out[i] = (bits >>> 16) | 0x40; // keep NaN a NaN
    else out[i] = (bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16;
  }
  return out;
}

/**
 * An open safetensors file (or buffer). The header is parsed and validated on open; tensor bytes
 * are read on demand. Call `close()` when done with a file-backed instance.
 */
export class SafetensorsFile {
  /** File path (or the label given to `fromBytes`), used in error messages. */
  readonly path: string;
  /** `__metadata__` of the header; null when absent. */
  readonly metadata: Readonly<Record<string, string>> | null;
  /** Every tensor by name, in header order. */
  readonly tensors: ReadonlyMap<string, SafetensorsTensorInfo>;
  readonly #source: ByteSource;

  private constructor(path: string, source: ByteSource) {
    this.path = path;
    this.#source = source;
    try {
      const header = SafetensorsFile.#readHeader(path, source);
      this.metadata = header.metadata;
      this.tensors = header.tensors;
    } catch (error) {
      source.close();
      throw error;
    }
  }

  /** Opens a file and validates its header; SAEGATE_ERR_SAFETENSORS when it is not a valid file. */
  static open(path: string): SafetensorsFile {
    return new SafetensorsFile(path, fileSource(path));
  }

  /** Parses safetensors bytes held in memory; `label` stands in for the path in error messages. */
  static fromBytes(bytes: Uint8Array, label = '<memory>'): SafetensorsFile {
    return new SafetensorsFile(label, bufferSource(bytes));
  }

  static #readHeader(path: string, source: ByteSource): ParsedHeader {
    if (source.size < 8) throw err('SAEGATE_ERR_SAFETENSORS', path, `file has ${source.size} bytes, fewer than the 8-byte header length`);
    const lengthBytes = new Uint8Array(8);
    source.read(0, lengthBytes);
    const headerLength = new DataView(lengthBytes.buffer).getBigUint64(0, true);
    if (headerLength > BigInt(source.size - 8)) {
      throw err('SAEGATE_ERR_SAFETENSORS', path, `header length ${headerLength} runs past the end of the ${source.size}-byte file`);
    }
    if (headerLength > BigInt(MAX_HEADER_BYTES)) {
      throw err('SAEGATE_ERR_SAFETENSORS', path, `header length ${headerLength} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
    }
    const headerBytes = new Uint8Array(Number(headerLength));
    source.read(8, headerBytes);
    let json: string;
    try {
      json = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
    } catch {
      throw err('SAEGATE_ERR_SAFETENSORS', path, 'header is not valid UTF-8');
    }
    const dataStart = 8 + headerBytes.length;
    return parseHeader(path, json, dataStart, source.size - dataStart);
  }

  /** True when the file holds a tensor of this name. */
  has(name: string): boolean {
    return this.tensors.has(name);
  }

  /** Where a tensor lives; SAEGATE_ERR_SAFETENSORS when it is absent. */
  info(name: string): SafetensorsTensorInfo {
    const info = this.tensors.get(name);
    if (!info) throw err('SAEGATE_ERR_SAFETENSORS', this.path, `no tensor named '${name}'`);
    return info;
  }

  /** Reads a tensor's raw bytes. */
  getTensor(name: string): SafetensorsTensor {
    const info = this.info(name);
    const data = new Uint8Array(info.byteLength);
    this.#source.read(info.byteOffset, data);
    return { dtype: info.dtype, shape: info.shape, data };
  }

  /**
   * Reads a floating-point tensor as f32: F32 as is, F16 exactly, BF16 by a shift, F64 rounded.
   * Other dtypes are SAEGATE_ERR_SAFETENSORS.
   */
  getFloat32(name: string): Float32Array {
    const info = this.info(name);
    if (!littleEndianHost) throw err('SAEGATE_ERR_SAFETENSORS', this.path, 'reading tensors needs a little-endian host');
    const { data } = this.getTensor(name);
    switch (info.dtype) {
      case 'F32':
        return new Float32Array(data.buffer, 0, data.length / 4);
      case 'F16':
        return float16ToFloat32(new Uint16Array(data.buffer, 0, data.length / 2));
      case 'BF16':
        return bfloat16ToFloat32(new Uint16Array(data.buffer, 0, data.length / 2));
      case 'F64':
        return Float32Array.from(new Float64Array(data.buffer, 0, data.length / 8));
      default:
        throw err('SAEGATE_ERR_SAFETENSORS', this.path, `tensor '${name}': dtype ${info.dtype} cannot be read as float32`);
    }
  }

  /** Releases the file descriptor. Reads after close fail. Idempotent. */
  close(): void {
    this.#source.close();
  }
}

/** One tensor to write: F32 takes a Float32Array; F16/BF16 take f32 values (rounded) or raw bits. */
export interface SafetensorsWriteTensor {
  /** Storage dtype in the file. */
  dtype: 'F32' | 'F16' | 'BF16';
  /** Dimensions, outermost first; their product must equal `data.length`. */
  shape: readonly number[];
  /** Row-major values: Float32Array for any dtype, or Uint16Array bit patterns for F16/BF16. */
  data: Float32Array | Uint16Array;
}

function encodeTensor(path: string, name: string, tensor: SafetensorsWriteTensor): Uint8Array {
  const elements = tensor.shape.reduce((a, b) => a * b, 1);
  if (!tensor.shape.every(isNonNegativeSafeInteger) || elements !== tensor.data.length) {
    throw err('SAEGATE_ERR_SAFETENSORS', path, `tensor '${name}': shape ${formatShape(tensor.shape)} does not match its ${tensor.data.length} values`);
  }
  let typed: Float32Array | Uint16Array;
  if (tensor.dtype === 'F32') {
    if (!(tensor.data instanceof Float32Array)) throw err('SAEGATE_ERR_SAFETENSORS', path, `tensor '${name}': F32 data must be a Float32Array`);
    typed = tensor.data;
  } else if (tensor.data instanceof Uint16Array) {
    typed = tensor.data;
  } else {
    typed = tensor.dtype === 'F16' ? float32ToFloat16(tensor.data) : float32ToBfloat16(tensor.data);
  }
  return new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength);
}

/**
 * Writes a safetensors file: tensors in the given order, the header padded with spaces to a
 * multiple of 8 bytes (the format allows it) so every tensor starts 8-byte aligned.
 */
export function writeSafetensors(path: string, tensors: Readonly<Record<string, SafetensorsWriteTensor>>, metadata?: Readonly<Record<string, string>>): void {
  if (!littleEndianHost) throw err('SAEGATE_ERR_SAFETENSORS', path, 'writing tensors needs a little-endian host');
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = { ...metadata };
  const payloads: Uint8Array[] = [];
  let offset = 0;
  for (const [name, tensor] of Object.entries(tensors)) {
    if (name === '__metadata__') throw err('SAEGATE_ERR_SAFETENSORS', path, "'__metadata__' is reserved and cannot name a tensor");
    const bytes = encodeTensor(path, name, tensor);
    header[name] = { dtype: tensor.dtype, shape: [...tensor.shape], data_offsets: [offset, offset + bytes.length] };
    payloads.push(bytes);
    offset += bytes.length;
  }
  let json = JSON.stringify(header);
  const jsonBytes = new TextEncoder().encode(json);
  json += ' '.repeat((8 - ((8 + jsonBytes.length) % 8)) % 8);
  const headerBytes = new TextEncoder().encode(json);
  const lengthBytes = new Uint8Array(8);
  new DataView(lengthBytes.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  const fd = fs.openSync(path, 'w');
  try {
    fs.writeSync(fd, lengthBytes);
    fs.writeSync(fd, headerBytes);
    for (const bytes of payloads) {
      let done = 0;
      while (done < bytes.length) done += fs.writeSync(fd, bytes, done, Math.min(READ_CHUNK_BYTES, bytes.length - done));
    }
  } finally {
    fs.closeSync(fd);
  }
}
