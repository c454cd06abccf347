/**
 * A small graph-construction DSL over `encodeModel`: every `op()` returns the name of its output
 * tensor, so a graph reads like the math it computes. Shared by the model runtime and the SAE engine.
 */
import { DataType, encodeModel, type AttributeValue, type DataTypeCode, type GraphValue, type InitializerSpec, type NodeSpec, type ValueInfoSpec } from './proto.js';

function bytesOf(view: ArrayBufferView): Uint8Array {
  // Zero-copy: ONNX raw_data is little-endian, as is every platform onnxruntime-node ships for.
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

export class GraphBuilder {
  private readonly nodes: NodeSpec[] = [];
  private readonly initializers: InitializerSpec[] = [];
  private readonly inputs: ValueInfoSpec[] = [];
  private readonly outputs: ValueInfoSpec[] = [];
  /** Shared with subgraph builders, so that names stay unique across the whole model. */
  private readonly names: { next: number };

  constructor(
    private readonly graphName: string,
    names: { next: number } = { next: 0 },
  ) {
    this.names = names;
  }

  private fresh(prefix: string): string {
    return `${prefix}_${this.names.next++}`;
  }

  /**
   * A subgraph for an `If` branch: `body` adds its nodes on a builder of its own (which may use
   * any tensor of this graph by name) and returns the values to output, in order. Output names
   * are made unique.
   */
  subgraph(name: string, body: (sub: GraphBuilder) => readonly { value: string; dataType: DataTypeCode; shape: readonly (number | string)[] }[]): GraphValue {
    const sub = new GraphBuilder(name, this.names);
    for (const out of body(sub)) sub.output(sub.fresh(`${name}_out`), out.value, out.dataType, out.shape);
    return { graph: { graphName: name, nodes: sub.nodes, initializers: sub.initializers, inputs: [], outputs: sub.outputs } };
  }

  /** Declares a graph input. */
  input(name: string, dataType: DataTypeCode, shape: readonly (number | string)[]): string {
    this.inputs.push({ name, dataType, shape });
    return name;
  }

  /** Declares `value` as a graph output named `name` (adds an Identity when names differ). */
  output(name: string, value: string, dataType: DataTypeCode, shape: readonly (number | string)[]): string {
    if (value !== name) this.op('Identity', [value], {}, name);
    this.outputs.push({ name, dataType, shape });
    return name;
  }

  /** A float32 weight. The array is referenced, not copied, until `build()`. */
  weightF32(name: string, data: Float32Array, dims: readonly number[]): string {
    this.initializers.push({ name, tensor: { dataType: DataType.FLOAT, dims, raw: bytesOf(data) } });
    return name;
  }

  /** A float16 weight given as raw IEEE half bits. */
  weightF16(name: string, data: Uint16Array, dims: readonly number[]): string {
    this.initializers.push({ name, tensor: { dataType: DataType.FLOAT16, dims, raw: bytesOf(data) } });
    return name;
  }

  constF32(values: readonly number[] | Float32Array, dims: readonly number[] = [values.length]): string {
    const name = this.fresh('const_f');
    return this.weightF32(name, Float32Array.from(values), dims);
  }

  constI64(values: readonly number[], dims: readonly number[] = [values.length]): string {
    const name = this.fresh('const_i');
    const data = BigInt64Array.from(values.map((v) => BigInt(v)));
    this.initializers.push({ name, tensor: { dataType: DataType.INT64, dims, raw: bytesOf(data) } });
    return name;
  }

  /** Adds a node with one output and returns the output's name. */
  op(opType: string, inputs: readonly string[], attributes: Readonly<Record<string, AttributeValue>> = {}, outputName?: string): string {
    const out = outputName ?? this.fresh(opType.toLowerCase());
    this.nodes.push({ opType, inputs, outputs: [out], name: this.fresh(`n_${opType}`), attributes });
    return out;
  }

  /** Adds a node with several outputs. */
  opMulti(opType: string, inputs: readonly string[], outputCount: number, attributes: Readonly<Record<string, AttributeValue>> = {}): string[] {
    const outs = Array.from({ length: outputCount }, () => this.fresh(opType.toLowerCase()));
    this.nodes.push({ opType, inputs, outputs: outs, name: this.fresh(`n_${opType}`), attributes });
    return outs;
  }

  /** Serialises the graph (opset 17 by default). */
  build(opset = 17): Uint8Array {
    return encodeModel({
      graphName: this.graphName,
      nodes: this.nodes,
      initializers: this.initializers,
      inputs: this.inputs,
      outputs: this.outputs,
      opset,
    });
  }
}

export { DataType };
