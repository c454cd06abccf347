/**
 * SAE training throughput: rows/s of `trainTopKSae` against the raw GEMM throughput of onnxruntime
 * on the same shapes, measured in the same run.
 *
 * - **train**: the real trainer (worker thread, one session.run per step, batches copied from the
 *   shared rows, dead-latent bookkeeping). Synthetic activations: sparse sums of random directions,
 *   so the TopK structure is realistic. Rows/s come from the trainer's own progress windows, after
 *   the first window (session warm-up) is dropped.
 * - **raw GEMM**: one `[batch, d_in] × [d_in, d_sae]` Gemm, the encoder product that any SAE step
 *   needs, run in a tight loop on this thread. There is no worker, no message passing and no
 *   bookkeeping, so it is an upper bound rather than a like-for-like baseline. A dense (non-sparse)
 *   trainer needs at least three such products per step (forward, dL/dW_enc, dL/dz); "÷ 3 GEMM"
 *   compares with that.
 *
 * The two are interleaved (raw, train, raw) and the raw figure is the mean of the runs before and
 * after, so background load affects both alike. Run: `npm run bench:sae-train [-- --steps N]`.
 */
import * as ort from 'onnxruntime-node';
import { DataType, GraphBuilder } from '../../src/common/onnx/builder.js';
import { SeededRandom } from '../../src/common/random.js';
import { defaultTrainConfig, trainTopKSae } from '../../src/lab/train/trainer.js';

interface Shape {
  dIn: number;
  dSae: number;
  k: number;
  batch: number;
  steps: number;
}

const args = process.argv.slice(2);
const flag = (name: string): string | undefined => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const stepsOverride = flag('steps') === undefined ? undefined : Number(flag('steps'));

const shapes: Shape[] = [
  { dIn: 64, dSae: 1024, k: 8, batch: 4096, steps: stepsOverride ?? 120 },
  { dIn: 512, dSae: 8192, k: 32, batch: 4096, steps: stepsOverride ?? 12 },
];

function syntheticRows(count: number, dIn: number, seed: number): Float32Array {
  const random = new SeededRandom(seed);
  const dirs = Array.from({ length: 4 * dIn }, () => Float32Array.from({ length: dIn }, () => random.next() - 0.5));
  const rows = new Float32Array(count * dIn);
  for (let r = 0; r < count; r++) {
    for (let a = 0; a < 6; a++) {
      const dir = dirs[Math.floor(random.next() * dirs.length)];
      const w = random.next() * 3;
      for (let i = 0; i < dIn; i++) rows[r * dIn + i] += w * dir[i];
    }
  }
  return rows;
}

async function rawGemm(shape: Shape, x: Float32Array, repeats: number): Promise<number> {
  const g = new GraphBuilder('gemm');
  const input = g.input('x', DataType.FLOAT, ['rows', shape.dIn]);
  const weight = g.input('w', DataType.FLOAT, [shape.dSae, shape.dIn]);
  g.output('y', g.op('Gemm', [input, weight], { transB: 1 }), DataType.FLOAT, ['rows', shape.dSae]);
  const session = await ort.InferenceSession.create(g.build(), { graphOptimizationLevel: 'all' });
  const random = new SeededRandom(1);
  const feeds = {
    x: new ort.Tensor('float32', x.subarray(0, shape.batch * shape.dIn), [shape.batch, shape.dIn]),
    w: new ort.Tensor('float32', Float32Array.from({ length: shape.dSae * shape.dIn }, () => random.next() - 0.5), [shape.dSae, shape.dIn]),
  };
  await session.run(feeds);
  const t0 = performance.now();
  for (let i = 0; i < repeats; i++) await session.run(feeds);
  const seconds = (performance.now() - t0) / 1000;
  await session.release();
  return (repeats * shape.batch) / seconds;
}

const rowsFmt = (x: number): string => (x >= 1e5 ? `${(x / 1000).toFixed(0)}k` : x >= 1e3 ? `${(x / 1000).toFixed(1)}k` : x.toFixed(0));

console.log(`SAE training throughput (rows/s), ${new Date().toISOString()}`);
const table: string[] = ['| d_in × d_sae | k | batch | steps | train rows/s | raw GEMM rows/s | train ÷ GEMM | train ÷ (GEMM / 3) |', '|---|---|---|---|---|---|---|---|'];
for (const shape of shapes) {
  const count = Math.max(4 * shape.batch, 16384);
  const rows = syntheticRows(count, shape.dIn, 7);
  const gemmRepeats = Math.max(3, Math.round(shape.steps / 4));
  const before = await rawGemm(shape, rows, gemmRepeats);
  const progressEvery = Math.max(1, Math.floor(shape.steps / 6));
  const config = defaultTrainConfig({ dIn: shape.dIn, dSae: shape.dSae, k: shape.k, batchRows: shape.batch, steps: shape.steps, lr: 1e-3, deadAfterRows: 4 * shape.batch });
  const result = await trainTopKSae({ rows, count, config, run: { progressEvery } });
  const after = await rawGemm(shape, rows, gemmRepeats);
  const windows = result.history.slice(1);
  const trainRate = windows.reduce((s, p) => s + p.rowsPerSecond, 0) / Math.max(windows.length, 1);
  const raw = (before + after) / 2;
  const dead = result.history[result.history.length - 1].deadFraction;
  console.log(`${shape.dIn}x${shape.dSae} k=${shape.k}: train ${rowsFmt(trainRate)} rows/s (dead at end ${(100 * dead).toFixed(1)}%), raw GEMM ${rowsFmt(before)} / ${rowsFmt(after)} rows/s`);
  table.push(`| ${shape.dIn} × ${shape.dSae} | ${shape.k} | ${shape.batch} | ${shape.steps} | ${rowsFmt(trainRate)} | ${rowsFmt(raw)} | ${(trainRate / raw).toFixed(2)} | ${((3 * trainRate) / raw).toFixed(2)} |`);
}
console.log(`\n${table.join('\n')}`);
