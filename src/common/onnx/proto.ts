/**
 * A minimal protobuf writer for the subset of onnx.proto that saegate emits (ModelProto, GraphProto,
 * NodeProto, AttributeProto, TensorProto, ValueInfoProto). Graphs are built in code (no Python, no
 * exported files), so we only ever write protobuf, never read it.
 *
 * Messages are kept as lists of byte chunks; embedding a sub-message appends its chunks instead of
 * copying them, so multi-hundred-megabyte initializers are copied exactly once, into the final buffer.
 */

const textEncoder = new TextEncoder();

export class ProtoWriter {
  private readonly chunks: Uint8Array[] = [];
  private scratch = new Uint8Array(256);
  private scratchUsed = 0;
  /** Total bytes written so far. */
  length = 0;

  private flushScratch(): void {
    if (this.scratchUsed > 0) {
      this.chunks.push(this.scratch.subarray(0, this.scratchUsed));
      this.scratch = new Uint8Array(256);
      this.scratchUsed = 0;
    }
  }

  private byte(b: number): void {
    if (this.scratchUsed === this.scratch.length) this.flushScratch();
    this.scratch[this.scratchUsed++] = b;
    this.length++;
  }

  /** Unsigned varint; `value` may be a bigint for int64 fields with negative values. */
  varint(value: number | bigint): void {
    let v = typeof value === 'bigint' ? BigInt.asUintN(64, value) : value < 0 ? BigInt.asUintN(64, BigInt(value)) : value;
    if (typeof v === 'bigint') {
      while (v > 0x7fn) {
        this.byte(Number(v & 0x7fn) | 0x80);
        v >>= 7n;
      }
      this.byte(Number(v));
      return;
    }
    while (v > 0x7f) {
      this.byte((v % 128) | 0x80);
      v = Math.floor(v / 128);
    }
    this.byte(v);
  }

  private tag(field: number, wireType: 0 | 1 | 2 | 5): void {
    this.varint((field << 3) | wireType);
  }

  int(field: number, value: number | bigint): void {
    this.tag(field, 0);
    this.varint(value);
  }

  float(field: number, value: number): void {
    this.tag(field, 5);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, value, true);
    for (const x of b) this.byte(x);
  }

  bytes(field: number, data: Uint8Array): void {
    this.tag(field, 2);
    this.varint(data.byteLength);
    this.flushScratch();
    this.chunks.push(data);
    this.length += data.byteLength;
  }

  string(field: number, value: string): void {
    this.bytes(field, textEncoder.encode(value));
  }

  message(field: number, sub: ProtoWriter): void {
    this.tag(field, 2);
    this.varint(sub.length);
    this.flushScratch();
    sub.flushScratch();
    for (const c of sub.chunks) this.chunks.push(c);
    this.length += sub.length;
  }

  /** Packed repeated int64: on the wire, a length-delimited run of varints, like a sub-message. */
  packedInts(field: number, values: readonly (number | bigint)[]): void {
    const sub = new ProtoWriter();
    for (const v of values) sub.varint(v);
    this.message(field, sub);
  }

  finish(): Uint8Array {
    this.flushScratch();
    const out = new Uint8Array(this.length);
    let offset = 0;
    for (const c of this.chunks) {
      out.set(c, offset);
      offset += c.byteLength;
    }
    return out;
  }
}

/** onnx.TensorProto.DataType values. */
export const DataType = {
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  INT32: 6,
  INT64: 7,
  BOOL: 9,
  FLOAT16: 10,
  DOUBLE: 11,
  BFLOAT16: 16,
} as const;
export type DataTypeCode = (typeof DataType)[keyof typeof DataType];

export type AttributeValue = number | string | readonly number[] | { floats: readonly number[] } | TensorValue | GraphValue;

/** A subgraph attribute (the branches of `If`); it may use names of the enclosing graph. */
export interface GraphValue {
  graph: GraphSpec;
}

/** A graph's contents: the model's main graph, or a subgraph. */
export interface GraphSpec {
  graphName: string;
  nodes: readonly NodeSpec[];
  initializers: readonly InitializerSpec[];
  inputs: readonly ValueInfoSpec[];
  outputs: readonly ValueInfoSpec[];
}

export interface TensorValue {
  dataType: DataTypeCode;
  dims: readonly number[];
  /** Little-endian raw bytes. */
  raw: Uint8Array;
}

export interface NodeSpec {
  opType: string;
  inputs: readonly string[];
  outputs: readonly string[];
  name: string;
  attributes: Readonly<Record<string, AttributeValue>>;
  domain?: string;
}

export interface ValueInfoSpec {
  name: string;
  dataType: DataTypeCode;
  /** A number is a fixed size, a string a symbolic (dynamic) dimension. */
  shape: readonly (number | string)[];
}

export interface InitializerSpec {
  name: string;
  tensor: TensorValue;
}

export interface ModelSpec extends GraphSpec {
  opset: number;
  /** Extra opset imports, e.g. `{ 'com.microsoft': 1 }`. */
  extraOpsets?: Readonly<Record<string, number>>;
}

function writeTensor(t: TensorValue, name?: string): ProtoWriter {
  const w = new ProtoWriter();
  if (t.dims.length > 0) w.packedInts(1, t.dims);
  w.int(2, t.dataType);
  if (name !== undefined) w.string(8, name);
  w.bytes(9, t.raw);
  return w;
}

function isTensorValue(v: AttributeValue): v is TensorValue {
  return typeof v === 'object' && 'raw' in v;
}

function isGraphValue(v: AttributeValue): v is GraphValue {
  return typeof v === 'object' && 'graph' in v;
}

function writeAttribute(name: string, value: AttributeValue): ProtoWriter {
  const w = new ProtoWriter();
  w.string(1, name);
  if (typeof value === 'number') {
    // Integers go as INT, everything else as FLOAT: ONNX attributes are typed, and every
    // attribute saegate uses with a fractional value (epsilon, alpha) is a float.
    if (Number.isInteger(value)) {
      w.int(3, value);
      w.int(20, 2);
    } else {
      w.float(2, value);
      w.int(20, 1);
    }
  } else if (typeof value === 'string') {
    w.string(4, value);
    w.int(20, 3);
  } else if (Array.isArray(value)) {
    w.packedInts(8, value as readonly number[]);
    w.int(20, 7);
  } else if (isTensorValue(value as AttributeValue)) {
    w.message(5, writeTensor(value as TensorValue));
    w.int(20, 4);
  } else if (isGraphValue(value as AttributeValue)) {
    w.message(6, writeGraph((value as GraphValue).graph));
    w.int(20, 5);
  } else {
    const floats = (value as { floats: readonly number[] }).floats;
    // Packed repeated float: one length-delimited field of little-endian fixed32 values.
    const b = new Uint8Array(floats.length * 4);
    const dv = new DataView(b.buffer);
    floats.forEach((f, i) => dv.setFloat32(i * 4, f, true));
    w.bytes(7, b);
    w.int(20, 6);
  }
  return w;
}

function writeValueInfo(v: ValueInfoSpec): ProtoWriter {
  const shape = new ProtoWriter();
  for (const d of v.shape) {
    const dim = new ProtoWriter();
    if (typeof d === 'number') dim.int(1, d);
    else dim.string(2, d);
    shape.message(1, dim);
  }
  const tensorType = new ProtoWriter();
  tensorType.int(1, v.dataType);
  tensorType.message(2, shape);
  const type = new ProtoWriter();
  type.message(1, tensorType);
  const w = new ProtoWriter();
  w.string(1, v.name);
  w.message(2, type);
  return w;
}

function writeGraph(spec: GraphSpec): ProtoWriter {
  const graph = new ProtoWriter();
  for (const n of spec.nodes) {
    const node = new ProtoWriter();
    for (const i of n.inputs) node.string(1, i);
    for (const o of n.outputs) node.string(2, o);
    node.string(3, n.name);
    node.string(4, n.opType);
    for (const [k, v] of Object.entries(n.attributes)) node.message(5, writeAttribute(k, v));
    if (n.domain !== undefined) node.string(7, n.domain);
    graph.message(1, node);
  }
  graph.string(2, spec.graphName);
  for (const init of spec.initializers) graph.message(5, writeTensor(init.tensor, init.name));
  for (const i of spec.inputs) graph.message(11, writeValueInfo(i));
  for (const o of spec.outputs) graph.message(12, writeValueInfo(o));
  return graph;
}

/** Serialises a whole model to ONNX protobuf bytes, ready for `InferenceSession.create`. */
export function encodeModel(spec: ModelSpec): Uint8Array {
  const graph = writeGraph(spec);
  const model = new ProtoWriter();
  model.int(1, 8); // ir_version 8 (ONNX 1.10+), understood by every onnxruntime we support
  model.string(2, 'saegate');
  const opset = new ProtoWriter();
  opset.string(1, '');
  opset.int(2, spec.opset);
  model.message(8, opset);
  for (const [domain, version] of Object.entries(spec.extraOpsets ?? {})) {
    const o = new ProtoWriter();
    o.string(1, domain);
    o.int(2, version);
    model.message(8, o);
  }
  model.message(7, graph);
  return model.finish();
}
