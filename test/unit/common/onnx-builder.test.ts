import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { DataType, GraphBuilder } from '../../../src/common/onnx/builder.js';
import { ProtoWriter } from '../../../src/common/onnx/proto.js';

describe('ONNX graph builder', () => {
  it('writes varints the way protobuf does, including negative int64 as ten bytes', () => {
    const cases: [number, number[]][] = [
      [0, [0]],
      [1, [1]],
      [300, [0xac, 0x02]],
      [2 ** 40, [0x80, 0x80, 0x80, 0x80, 0x80, 0x20]],
      [-1, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]],
    ];
    for (const [value, bytes] of cases) {
      const w = new ProtoWriter();
      w.varint(value);
      expect([...w.finish()]).toEqual(bytes);
    }
  });

  it('builds a graph onnxruntime loads and computes, with int, float, ints and tensor attributes', async () => {
    const g = new GraphBuilder('test');
    const x = g.input('x', DataType.FLOAT, ['n', 3]);
    const w = g.weightF32('w', Float32Array.from([1, 2, 3, 4, 5, 6]), [3, 2]);
    const bias = g.input('bias', DataType.FLOAT, [2]);
    const y = g.op('Add', [g.op('MatMul', [x, w]), bias]);
    g.output('y', y, DataType.FLOAT, ['n', 2]);
    g.output('soft', g.op('Softmax', [y], { axis: -1 }), DataType.FLOAT, ['n', 2]);
    g.output('leaky', g.op('LeakyRelu', [g.op('Neg', [y])], { alpha: 0.25 }), DataType.FLOAT, ['n', 2]);
    g.output('t', g.op('Transpose', [y], { perm: [1, 0] }), DataType.FLOAT, [2, 'n']);
    g.output('c', g.op('ConstantOfShape', [g.constI64([2])], { value: { dataType: DataType.FLOAT, dims: [1], raw: new Uint8Array(Float32Array.from([7]).buffer) } }), DataType.FLOAT, [2]);
    const session = await ort.InferenceSession.create(g.build(), { logSeverityLevel: 3 });
    const feeds = {
      x: new ort.Tensor('float32', Float32Array.from([1, 0, 0, 0, 1, 1]), [2, 3]),
      bias: new ort.Tensor('float32', Float32Array.from([0.5, -0.5]), [2]),
    };
    const out = await session.run(feeds);
    expect([...(out.y.data as Float32Array)]).toEqual([1.5, 1.5, 8.5, 9.5]);
    expect([...(out.t.data as Float32Array)]).toEqual([1.5, 8.5, 1.5, 9.5]);
    expect([...(out.leaky.data as Float32Array)]).toEqual([-1.5 * 0.25, -1.5 * 0.25, -8.5 * 0.25, -9.5 * 0.25]);
    expect(out.soft.data[0]).toBeCloseTo(0.5, 6);
    expect([...(out.c.data as Float32Array)]).toEqual([7, 7]);
    const unbiased = await session.run({ ...feeds, bias: new ort.Tensor('float32', Float32Array.from([0, 0]), [2]) });
    expect([...(unbiased.y.data as Float32Array)]).toEqual([1, 2, 8, 10]);
  });

  it('builds If branches as subgraphs that use the enclosing graph\'s tensors, and runs the branch the condition picks', async () => {
    const g = new GraphBuilder('if-test');
    const x = g.input('x', DataType.FLOAT, ['n']);
    const limit = g.constF32([2], [1]);
    const scale = g.constF32([10], []);
    // then: x · 10 (an outer constant), else: x + 1 (a constant of the branch's own).
    const y = g.op('If', [g.op('Greater', [g.op('ReduceMax', [x], { keepdims: 1 }), limit])], {
      then_branch: g.subgraph('times_ten', (b) => [{ value: b.op('Mul', [x, scale]), dataType: DataType.FLOAT, shape: ['n'] }]),
      else_branch: g.subgraph('plus_one', (b) => [{ value: b.op('Add', [x, b.constF32([1], [])]), dataType: DataType.FLOAT, shape: ['n'] }]),
    });
    g.output('y', y, DataType.FLOAT, ['n']);
    const session = await ort.InferenceSession.create(g.build(), { logSeverityLevel: 3 });
    try {
      const run = async (values: number[]): Promise<number[]> => [...((await session.run({ x: new ort.Tensor('float32', Float32Array.from(values), [values.length]) })).y.data as Float32Array)];
      expect(await run([1, 3])).toEqual([10, 30]);
      expect(await run([1, 2])).toEqual([2, 3]);
    } finally {
      await session.release();
    }
  });
});
