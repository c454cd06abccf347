/**
 * SAE engine throughput (issue 5): rows/s of the whole pipeline (encode an activations frame,
 * decode it as the tap does, micro-batch, encode in the worker pool, deliver results) against raw
 * onnxruntime running the same encoder graph on the same batches, measured in the same run; and the
 * main thread's event-loop lag while the pipeline is saturated. Synthetic seeded weights.
 *
 *   npx tsx test/bench/sae.ts [--sizes 64x1024,2304x16384,4096x32768] [--batches 1,64,256] [--seconds S]
 *
 * Prints a table; asserts nothing about time.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { seededUniform } from '../../src/common/random.js';
import { MicroBatcher } from '../../src/sae/batcher.js';
import { buildSaeEncoderGraph, SaeEncoderNames, saeEncoderOutputNames } from '../../src/sae/graph.js';
import { SaePool } from '../../src/sae/pool.js';
import type { SaeWeights } from '../../src/sae/types.js';
import { encodeActivationFrame } from '../../src/tap/builders.js';
import { decodeMessage } from '../../src/tap/codec.js';
import type { ActivationsMessage } from '../../src/tap/messages.js';

const { values } = parseArgs({ options: { sizes: { type: 'string' }, batches: { type: 'string' }, seconds: { type: 'string' } } });
const sizes = (values.sizes ?? '64x1024,2304x16384').split(',').map((s) => s.split('x').map(Number) as [number, number]);
const batchSizes = (values.batches ?? '1,64,256').split(',').map(Number);
const seconds = Number(values.seconds ?? 3);
const TOP_K = 32;

function syntheticSae(dIn: number, dSae: number): SaeWeights {
  const u = seededUniform(dIn * 7 + dSae);
  const scale = 1 / Math.sqrt(dIn);
  const arr = (n: number, s: number) => {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = (u() - 0.5) * s;
    return out;
  };
  return {
    config: { architecture: 'topk', format: 'saelens', dIn, dSae, hookName: 'blocks.0.hook_resid_post', modelName: null, applyBDecToInput: true, normalizeActivations: 'none', k: TOP_K, scalingFactor: null, dtype: 'f32', source: 'synthetic' },
    W_enc: arr(dIn * dSae, scale),
    b_enc: arr(dSae, 0.01),
    W_dec: arr(dSae * dIn, scale),
    b_dec: arr(dIn, 0.01),
    threshold: null,
    gated: null,
  };
}

/** Raw onnxruntime on this thread (the baseline the pipeline is compared with). */
async function rawRowsPerSecond(session: ort.InferenceSession, dIn: number, batch: number, input: Float32Array): Promise<number> {
  const x = new ort.Tensor('float32', input.subarray(0, batch * dIn), [batch, dIn]);
  await session.run({ [SaeEncoderNames.input]: x }, [...saeEncoderOutputNames]);
  let rows = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < seconds * 1000) {
    await session.run({ [SaeEncoderNames.input]: x }, [...saeEncoderOutputNames]);
    rows += batch;
  }
  return rows / ((performance.now() - t0) / 1000);
}

/** The pipeline: f16 frames of `batch` rows, decoded, pushed to the batcher, encoded by the pool. */
async function pipelineRowsPerSecond(pool: SaePool, dIn: number, batch: number, input: Float32Array): Promise<{ rps: number; lagP99: number; lagMax: number }> {
  const frame = encodeActivationFrame({
    hookIndex: 0,
    dtype: 'f16',
    dModel: dIn,
    requestIds: Array.from({ length: batch }, (_, i) => `req-${i % 8}`),
    positions: Int32Array.from({ length: batch }, (_, i) => i),
    data: input.subarray(0, batch * dIn),
  });
  const batcher = new MicroBatcher({ pool, dIn, maxBatchRows: batch, maxDelayMs: 2, maxQueuedRows: batch * 8, maxInFlight: 2 });
  let delivered = 0;
  let wake: (() => void) | null = null;
  batcher.onResult((r) => {
    delivered += r.rowCount;
    wake?.();
  });
  const lag = monitorEventLoopDelay({ resolution: 1 });
  lag.enable();
  const t0 = performance.now();
  let pushed = 0;
  // Offer frames as a saturated tap would, but only while the batcher has room: frames beyond that
  // would be dropped (and counted) and only burn the cores the workers need.
  while (performance.now() - t0 < seconds * 1000) {
    if (pushed - delivered - batcher.stats.rowsDropped.queue_full >= 4 * batch) {
      await new Promise<void>((r) => (wake = r));
      wake = null;
      continue;
    }
    const msg = decodeMessage(frame) as ActivationsMessage;
    const requestIds = Array.from(msg.rowRequestIndexes, (k) => msg.requestIds[k]);
    batcher.push(msg.data, batch, { requestIds, positions: msg.positions, hook: 'blocks.0.hook_resid_post' });
    pushed += batch;
  }
  await batcher.drain();
  const elapsed = (performance.now() - t0) / 1000;
  lag.disable();
  await batcher.close();
  return { rps: delivered / elapsed, lagP99: lag.percentile(99) / 1e6, lagMax: lag.max / 1e6 };
}

console.log(`SAE pipeline vs raw onnxruntime, top-k ${TOP_K} reported, ${seconds} s per cell, 1 pool worker (2-core machine)`);
console.log('| SAE d_in × d_sae | batch | raw onnxruntime rows/s | pipeline rows/s | ratio | main-thread lag p99 / max ms |');
console.log('|---|---|---|---|---|---|');
for (const [dIn, dSae] of sizes) {
  const sae = syntheticSae(dIn, dSae);
  const session = await ort.InferenceSession.create(buildSaeEncoderGraph(sae, { topK: TOP_K }), { logSeverityLevel: 3 });
  const pool = await SaePool.create({ sae, topK: TOP_K, workers: 1 });
  const u = seededUniform(3);
  const input = Float32Array.from({ length: Math.max(...batchSizes) * dIn }, () => u() - 0.5);
  for (const batch of batchSizes) {
    const raw = await rawRowsPerSecond(session, dIn, batch, input);
    const pipe = await pipelineRowsPerSecond(pool, dIn, batch, input);
    console.log(`| ${dIn} × ${dSae} | ${batch} | ${raw.toFixed(0)} | ${pipe.rps.toFixed(0)} | ${(pipe.rps / raw).toFixed(2)} | ${pipe.lagP99.toFixed(1)} / ${pipe.lagMax.toFixed(1)} |`);
  }
  await pool.close();
  await session.release();
}
