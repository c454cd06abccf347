/**
 * SAE engine benchmark (issue 5). For each SAE size and batch size, on synthetic seeded weights:
 *
 * 1. Throughput: rows/s of the whole pipeline (an f16 activations frame of `batch` rows is decoded
 *    as the tap does, pushed to the micro-batcher, encoded by a one-worker pool, and the results are
 *    delivered to a listener) against raw onnxruntime on the same batches, measured in the same run.
 *    The two alternate in segments, A-B-B-A twice, so that the machine's load (other jobs share it)
 *    falls on both alike; each side runs for at least `--seconds` and at least `--min-batches`
 *    batches in all, and reports the median of its four segments' rows/s. The pipeline is fed
 *    closed-loop: frames are pushed while fewer than 4 batches' rows are in the system, so the worker
 *    always has its next batch queued and nothing is dropped.
 * 2. Main-thread event-loop lag (perf_hooks monitorEventLoopDelay, 1 ms resolution) during the
 *    pipeline's throughput segments: what the proxy's request path would feel under full SAE load.
 *    p99 per segment; the median segment's and the worst segment's are reported.
 *    Its baseline, in the same run: the lag of the same (idle) main thread during the raw segments,
 *    when only the raw worker's session competes for the cores. The difference is the pipeline's own
 *    main-thread work; what both share is scheduling on a busy machine.
 * 3. Latency at half capacity: frames arrive open-loop at a fixed rate, 50% of the pipeline rows/s
 *    just measured for that cell, and latency runs from each frame's scheduled arrival to the
 *    delivery of its results (p50/p99 over at least `--seconds` and `--latency-frames` frames). A
 *    feeder thread sleeps to each arrival time (Atomics.wait, so it costs no CPU) and posts the frame
 *    bytes to the main thread, which meets them as it would a socket's data: a frame that waits for
 *    a busy main thread counts that wait.
 *
 * The micro-batcher's `maxBatchRows` is the cell's batch size, so every frame is exactly one batch;
 * at batch 1 every row is its own batch and travels to the worker alone. `maxInFlight` is 2.
 *
 * Baseline. "Raw onnxruntime" is `session.run` called back to back, awaited, in a worker thread of
 * this process that does nothing else, while the main thread waits: the same encoder graph bytes,
 * a session made by the same function with the same options as the pool's (`createSession`, cpu,
 * the same intra-op thread count), the same batch of rows (the frame's f16 values widened to f32)
 * and the same five outputs. A worker rather than the main thread because that is where the pool
 * runs its session: the same kind of thread, started the same way (`spawnWorker`), so the ratio
 * holds only what the pipeline adds (frame decode, the batcher's copy, f16 widening in the worker,
 * a message each way, output conversion, and the main thread's share of the cores), not a difference between
 * two threads' scheduling.
 *
 * Threads. Both sessions get `--threads` intra-op threads: 1 by default, 0 for onnxruntime's choice,
 * `pool` for what `SaePool` picks by itself (1 for an SAE of at most 2^20 weights, else
 * onnxruntime's choice). onnxruntime's choice on this 2-core machine is a second, spin-waiting thread
 * pinned to core 1; with other jobs on the machine a back-to-back raw loop on it ran 1.2–2.6× slower
 * than the same loop with 1 thread, and slower than the very same session.run inside the pipeline
 * (whose gaps between runs let the spinning thread get scheduled), so ratios above 1 came out that
 * said nothing about the pipeline. One thread keeps both sides comparable.
 *
 *   npx tsx test/bench/sae.ts [--sizes 64x1024,2304x16384,4096x32768] [--batches 1,64,256]
 *                             [--seconds 2] [--min-batches 6] [--latency-frames 10] [--threads 1|0|pool]
 *
 * e.g. `--sizes 64x1024 --batches 1,64 --seconds 2` for a quick look. Prints a line per cell as it
 * finishes and a summary table at the end; asserts nothing about time.
 */
import os from 'node:os';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { isMainThread, parentPort, Worker } from 'node:worker_threads';
import type { InferenceSession } from 'onnxruntime-node';
import { f16ToF32 } from '../../src/common/f16.js';
import { createSession, loadOrt } from '../../src/common/ort.js';
import { spawnWorker } from '../../src/common/worker.js';
import { MicroBatcher, type SaeResultBatch } from '../../src/sae/batcher.js';
import { buildSaeEncoderGraph, SaeEncoderNames, saeEncoderOutputNames } from '../../src/sae/graph.js';
import { SaePool } from '../../src/sae/pool.js';
import type { SaeWeights } from '../../src/sae/types.js';
import { encodeActivationFrame } from '../../src/tap/builders.js';
import { decodeMessage } from '../../src/tap/codec.js';
import type { ActivationsMessage } from '../../src/tap/messages.js';

/** k of the synthetic TopK SAE; with no list cap (serve's default) every row lists its ≤ k active features. */
const TOP_K = 32;
const HOOK = 'blocks.0.hook_resid_post';

// --- The raw-onnxruntime worker: this same module, started by `RawRunner`. ---

type ToRawWorker =
  | { type: 'init'; model: Uint8Array; intraOpThreads: number | undefined }
  | { type: 'run'; rows: Float32Array; batch: number; dIn: number; ms: number; count: number };
type FromRawWorker = { type: 'ready' } | { type: 'ran'; runs: number; ms: number };

/** Holds one session; answers each `run` with how many back-to-back runs fit in `ms` (at least `count`). */
function rawWorkerMain(): void {
  const port = parentPort!;
  let session: InferenceSession;
  const outputNames = [...saeEncoderOutputNames];
  port.on('message', (msg: ToRawWorker) => {
    void (async () => {
      if (msg.type === 'init') {
        session = await createSession(msg.model, { device: 'cpu', intraOpThreads: msg.intraOpThreads, spinning: false });
        port.postMessage({ type: 'ready' } satisfies FromRawWorker);
        return;
      }
      const ort = await loadOrt();
      const feeds = { [SaeEncoderNames.input]: new ort.Tensor('float32', msg.rows, [msg.batch, msg.dIn]) };
      const t0 = performance.now();
      let runs = 0;
      while (runs < msg.count || performance.now() - t0 < msg.ms) {
        await session.run(feeds, outputNames);
        runs++;
      }
      port.postMessage({ type: 'ran', runs, ms: performance.now() - t0 } satisfies FromRawWorker);
    })();
  });
}

/** The main thread's handle on the raw worker. */
class RawRunner {
  private constructor(private readonly worker: Worker) {}

  static async start(model: Uint8Array, intraOpThreads: number | undefined): Promise<RawRunner> {
    const worker = spawnWorker(new URL(import.meta.url));
    const runner = new RawRunner(worker);
    await runner.request({ type: 'init', model, intraOpThreads }, [model.buffer as ArrayBuffer]);
    return runner;
  }

  private request(msg: ToRawWorker, transfer: ArrayBuffer[] = []): Promise<FromRawWorker> {
    return new Promise((resolve, reject) => {
      const onError = (error: Error): void => reject(error);
      this.worker.once('error', onError);
      this.worker.once('message', (reply: FromRawWorker) => {
        this.worker.off('error', onError);
        resolve(reply);
      });
      this.worker.postMessage(msg, transfer);
    });
  }

  /** Back-to-back runs on `rows` for at least `ms` and `count` runs; returns [rows encoded, ms]. */
  async run(rows: Float32Array, batch: number, dIn: number, ms: number, count: number): Promise<[number, number]> {
    const reply = await this.request({ type: 'run', rows, batch, dIn, ms, count });
    if (reply.type !== 'ran') throw new Error(`raw worker answered ${reply.type}`);
    return [reply.runs * batch, reply.ms];
  }

  async close(): Promise<void> {
    await this.worker.terminate();
  }
}

// --- The benchmark, on the main thread. ---

function positiveNumbers(flag: string, text: string): number[] {
  const out = text.split(',').map(Number);
  if (out.some((n) => !(n > 0))) throw new Error(`--${flag}: expected positive numbers separated by commas, got '${text}'`);
  return out;
}

/** Wall-clock milliseconds, comparable across threads (each thread has its own timeOrigin). */
const epochMs = (): number => performance.timeOrigin + performance.now();

/** Seeded uniform weights; an inline mulberry32 keeps 268M values (the largest SAE) to about a second. */
function syntheticSae(dIn: number, dSae: number): SaeWeights {
  let state = (dIn * 7 + dSae) >>> 0;
  const fill = (n: number, scale: number): Float32Array => {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      state = (state + 0x6d2b79f5) >>> 0;
      let t = Math.imul(state ^ (state >>> 15), state | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      out[i] = (((t ^ (t >>> 14)) >>> 0) / 4294967296 - 0.5) * scale;
    }
    return out;
  };
  const scale = 1 / Math.sqrt(dIn);
  return {
    config: { architecture: 'topk', format: 'saelens', dIn, dSae, hookName: HOOK, modelName: null, applyBDecToInput: true, normalizeActivations: 'none', k: TOP_K, scalingFactor: null, dtype: 'f32', source: 'synthetic' },
    W_enc: fill(dIn * dSae, scale),
    b_enc: fill(dSae, 0.01),
    W_dec: fill(dSae * dIn, scale),
    b_dec: fill(dIn, 0.01),
    threshold: null,
    gated: null,
  };
}

/** One f16 activations frame of `batch` rows from 8 requests, as the model server would send it. */
function makeFrame(dIn: number, batch: number): Uint8Array {
  let state = 3;
  const data = Float32Array.from({ length: batch * dIn }, () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 4294967296 - 0.5;
  });
  return encodeActivationFrame({
    hookIndex: 0,
    dtype: 'f16',
    dModel: dIn,
    requestIds: Array.from({ length: batch }, (_, i) => `req-${i % 8}`),
    positions: Int32Array.from({ length: batch }, (_, i) => i),
    data,
  });
}

/** What SaeSink.write does with a frame: decode, push it as it is (request table + index column). */
function pushFrame(batcher: MicroBatcher, frame: Uint8Array): number {
  const msg = decodeMessage(frame) as ActivationsMessage;
  const rowCount = msg.positions.length;
  batcher.push(msg.data, rowCount, { hook: HOOK, requestIds: msg.requestIds, rowRequestIndexes: msg.rowRequestIndexes, positions: msg.positions });
  return rowCount;
}

function droppedRows(batcher: MicroBatcher): number {
  let sum = 0;
  for (const n of Object.values(batcher.stats.rowsDropped)) sum += n;
  return sum;
}

/** A micro-batcher on the pool, with a listener that counts delivered rows and wakes a waiter. */
class Harness {
  readonly batcher: MicroBatcher;
  delivered = 0;
  onBatch: ((batch: SaeResultBatch) => void) | null = null;
  private wake: (() => void) | null = null;

  constructor(pool: SaePool, dIn: number, batch: number) {
    this.batcher = new MicroBatcher({ pool, dIn, maxBatchRows: batch, maxDelayMs: 2, maxQueuedRows: Math.max(8192, 64 * batch), maxInFlight: 2 });
    this.batcher.onResult((result) => {
      this.delivered += result.rowCount;
      this.onBatch?.(result);
      const wake = this.wake;
      this.wake = null;
      wake?.();
    });
  }

  nextDelivery(): Promise<void> {
    return new Promise((resolve) => (this.wake = resolve));
  }
}

/**
 * Closed-loop pipeline segment: pushes frames while fewer than 4 batches' rows are in the system,
 * until `ms` and `batches` are both reached, then drains. Returns [rows delivered, ms].
 */
async function pipelineSegment(h: Harness, frame: Uint8Array, batch: number, ms: number, batches: number): Promise<[number, number]> {
  const delivered0 = h.delivered;
  const dropped0 = droppedRows(h.batcher);
  let pushed = 0;
  const t0 = performance.now();
  while (pushed < batches * batch || performance.now() - t0 < ms) {
    if (pushed - (h.delivered - delivered0) - (droppedRows(h.batcher) - dropped0) >= 4 * batch) {
      await h.nextDelivery();
      continue;
    }
    pushed += pushFrame(h.batcher, frame);
  }
  await h.batcher.drain();
  return [h.delivered - delivered0, performance.now() - t0];
}

/** The feeder thread: posts `count` copies of `frame`, the i-th at `start + i · intervalMs` (epoch ms). */
const FEEDER = `
const { parentPort, workerData } = require('node:worker_threads');
const { frame, start, intervalMs, count } = workerData;
const sleeper = new Int32Array(new SharedArrayBuffer(4));
for (let i = 0; i < count; i++) {
  const due = start + i * intervalMs;
  const wait = due - (performance.timeOrigin + performance.now());
  if (wait > 0) Atomics.wait(sleeper, 0, 0, wait);
  const copy = frame.slice();
  parentPort.postMessage({ due, frame: copy }, [copy.buffer]);
}
`;

interface Options {
  /** Intra-op threads for the pool's and the raw session: a count, 0 for onnxruntime's default, or SaePool's default. */
  threads: number | 'pool';
  seconds: number;
  minBatches: number;
  latencyFrames: number;
}

/**
 * Open-loop latency: frames of `batch` rows at `rowsPerSecond`, from a feeder thread. Returns
 * per-frame latencies (scheduled arrival → results delivered), in ms, sorted, and rows dropped.
 */
async function latencyRun(h: Harness, frame: Uint8Array, batch: number, rowsPerSecond: number, options: Options): Promise<{ latencies: number[]; dropped: number }> {
  const intervalMs = (1000 * batch) / rowsPerSecond;
  const count = Math.max(options.latencyFrames, Math.ceil((options.seconds * 1000) / intervalMs));
  // Scheduled arrival of each frame not yet fully delivered, oldest first, and the rows still owed
  // on the oldest. Results come back in push order, so rows pay off frames in order.
  const due: number[] = [];
  let owed = 0;
  const latencies: number[] = [];
  const dropped0 = droppedRows(h.batcher);
  h.onBatch = (result) => {
    let rows = result.rowCount;
    while (rows > 0 && due.length > 0) {
      const take = Math.min(rows, owed);
      rows -= take;
      owed -= take;
      if (owed === 0) {
        latencies.push(epochMs() - due.shift()!);
        owed = due.length > 0 ? batch : 0;
      }
    }
  };
  const feeder = new Worker(FEEDER, { eval: true, workerData: { frame, start: epochMs() + 50, intervalMs, count } });
  let received = 0;
  await new Promise<void>((resolve, reject) => {
    feeder.on('message', (msg: { due: number; frame: Uint8Array }) => {
      if (due.length === 0) owed = batch;
      due.push(msg.due);
      pushFrame(h.batcher, msg.frame);
      if (++received === count) resolve();
    });
    feeder.on('error', reject);
  });
  await h.batcher.drain();
  h.onBatch = null;
  await feeder.terminate();
  return { latencies: latencies.sort((a, b) => a - b), dropped: droppedRows(h.batcher) - dropped0 };
}

/** Nearest-rank percentile of sorted values. */
function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

interface CellResult {
  size: string;
  batch: number;
  raw: number;
  pipeline: number;
  latencyP50: number;
  latencyP99: number;
  latencyFrames: number;
  feedRowsPerSecond: number;
  /** Event-loop lag p99 of the pipeline segments, ms: the median segment's and the worst segment's. */
  lagP99: number;
  lagP99Worst: number;
  lagMax: number;
  /** Lag p99 of the idle main thread during the raw segments, ms: median and worst segment. */
  idleLagP99: number;
  idleLagP99Worst: number;
}

const fmtRate = (v: number): string => (v >= 100 ? v.toFixed(0) : v.toPrecision(3));
const fmtMs = (v: number): string => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));

/** A-B-B-A twice: raw and pipeline segments alternate so that drifting load falls on both. */
const SEGMENTS = ['raw', 'pipeline', 'pipeline', 'raw', 'raw', 'pipeline', 'pipeline', 'raw'] as const;

async function runCell(pool: SaePool, raw: RawRunner, dIn: number, dSae: number, batch: number, options: Options): Promise<CellResult> {
  const frame = makeFrame(dIn, batch);
  // Raw runs on the same rows the pipeline sees: the frame's f16 values, widened.
  const rows = new Float32Array(batch * dIn);
  f16ToF32((decodeMessage(frame) as ActivationsMessage).data as Uint16Array, rows);
  const h = new Harness(pool, dIn, batch);
  // Warm-up: the first runs at a new shape size onnxruntime's arenas; the batcher allocates buffers.
  await raw.run(rows, batch, dIn, 0, 1);
  await pipelineSegment(h, frame, batch, 0, 1);

  const perSegment = SEGMENTS.length / 2;
  const segmentMs = (options.seconds * 1000) / perSegment;
  const segmentBatches = Math.ceil(options.minBatches / perSegment);
  // A fresh monitor per segment: one that is disabled and enabled again reports the time it was off
  // as a delay (and Node cannot merge these histograms). Each segment's p99 is kept; the cell
  // reports the median segment's, as for throughput, and the worst segment's.
  const lagP99s: number[] = [];
  const idleLagP99s: number[] = [];
  let lagMax = 0;
  const rates = { raw: [] as number[], pipeline: [] as number[] };
  for (const side of SEGMENTS) {
    if (side === 'raw') {
      const idle = monitorEventLoopDelay({ resolution: 1 });
      idle.enable();
      const [n, ms] = await raw.run(rows, batch, dIn, segmentMs, segmentBatches);
      idle.disable();
      rates.raw.push(n / (ms / 1000));
      idleLagP99s.push(idle.percentile(99) / 1e6);
    } else {
      const lag = monitorEventLoopDelay({ resolution: 1 });
      lag.enable();
      const [n, ms] = await pipelineSegment(h, frame, batch, segmentMs, segmentBatches);
      lag.disable();
      rates.pipeline.push(n / (ms / 1000));
      lagP99s.push(lag.percentile(99) / 1e6);
      lagMax = Math.max(lagMax, lag.max / 1e6);
    }
  }
  const pipeline = median(rates.pipeline);
  const feedRowsPerSecond = pipeline / 2;
  const { latencies, dropped } = await latencyRun(h, frame, batch, feedRowsPerSecond, options);
  await h.batcher.close();
  if (dropped > 0) console.log(`  (latency run dropped ${dropped} rows)`);
  return {
    size: `${dIn}×${dSae}`,
    batch,
    raw: median(rates.raw),
    pipeline,
    latencyP50: percentile(latencies, 50),
    latencyP99: percentile(latencies, 99),
    latencyFrames: latencies.length,
    feedRowsPerSecond,
    lagP99: median(lagP99s),
    lagP99Worst: Math.max(...lagP99s),
    lagMax,
    idleLagP99: median(idleLagP99s),
    idleLagP99Worst: Math.max(...idleLagP99s),
  };
}

async function main(): Promise<void> {
  const { values: flags } = parseArgs({
    options: {
      sizes: { type: 'string', default: '64x1024,2304x16384,4096x32768' },
      batches: { type: 'string', default: '1,64,256' },
      seconds: { type: 'string', default: '2' },
      'min-batches': { type: 'string', default: '6' },
      'latency-frames': { type: 'string', default: '10' },
      threads: { type: 'string', default: '1' },
    },
  });
  // 'pool': whatever SaePool picks by default (raw then gets the same); 0: onnxruntime's choice.
  const threads = flags.threads === 'pool' ? 'pool' : Number(flags.threads);
  if (threads !== 'pool' && (!Number.isInteger(threads) || threads < 0)) {
    throw new Error(`--threads: expected a positive integer, 0 (onnxruntime's default) or 'pool' (SaePool's default), got '${flags.threads}'`);
  }
  const sizes = flags.sizes.split(',').map((s) => {
    const dims = positiveNumbers('sizes', s.replace('x', ','));
    if (dims.length !== 2) throw new Error(`--sizes: expected D_INxD_SAE, got '${s}'`);
    return { dIn: dims[0], dSae: dims[1] };
  });
  const batchSizes = positiveNumbers('batches', flags.batches);
  const options: Options = {
    threads,
    seconds: positiveNumbers('seconds', flags.seconds)[0],
    minBatches: positiveNumbers('min-batches', flags['min-batches'])[0],
    latencyFrames: positiveNumbers('latency-frames', flags['latency-frames'])[0],
  };

  const loadAverage = (): string => os.loadavg().map((l) => l.toFixed(1)).join(' ');
  const benchStart = performance.now();
  console.log(
    `SAE pipeline vs raw onnxruntime: TopK SAE with k = ${TOP_K}, every active feature listed (no cap), 1 pool worker, intra-op threads --threads ${options.threads} for both sessions; ` +
      `maxBatchRows = batch (batch 1: every row is its own batch); each side ≥ ${options.seconds} s and ≥ ${options.minBatches} batches ` +
      `in 4 segments (A-B-B-A twice, median segment reported); latency over ≥ ${options.latencyFrames} frames at 50% of pipeline rows/s`,
  );
  console.log(`${os.availableParallelism()} CPUs, load average ${loadAverage()} (other jobs on the machine move every number; read the ratios)`);
  const results: CellResult[] = [];
  for (const { dIn, dSae } of sizes) {
    const t0 = performance.now();
    const sae = syntheticSae(dIn, dSae);
    const { threads } = options;
    const pool = await SaePool.create({ sae, workers: 1, intraOpThreads: threads === 'pool' ? undefined : threads });
    // Raw gets exactly what the pool's workers got (0: onnxruntime's choice).
    const intraOpThreads = pool.intraOpThreads === 0 ? undefined : pool.intraOpThreads;
    const raw = await RawRunner.start(buildSaeEncoderGraph(sae), intraOpThreads);
    const threadWords = intraOpThreads === undefined ? "onnxruntime's default intra-op threads" : `${intraOpThreads} intra-op thread${intraOpThreads === 1 ? '' : 's'}`;
    console.log(`${dIn}×${dSae}: weights, graph and two sessions (${threadWords} each) ready in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    for (const batch of batchSizes) {
      const r = await runCell(pool, raw, dIn, dSae, batch, options);
      results.push(r);
      console.log(
        `  batch ${batch}: raw ${fmtRate(r.raw)} rows/s, pipeline ${fmtRate(r.pipeline)} rows/s (${(r.pipeline / r.raw).toFixed(2)}×), ` +
          `latency p50 ${fmtMs(r.latencyP50)} / p99 ${fmtMs(r.latencyP99)} ms over ${r.latencyFrames} frames at ${fmtRate(r.feedRowsPerSecond)} rows/s, ` +
          `event-loop lag p99 ${fmtMs(r.lagP99)} (worst segment ${fmtMs(r.lagP99Worst)}) / max ${fmtMs(r.lagMax)} ms ` +
          `(idle loop during raw: p99 ${fmtMs(r.idleLagP99)}, worst segment ${fmtMs(r.idleLagP99Worst)} ms)`,
      );
    }
    await pool.close();
    await raw.close();
  }

  console.log(`\ndone in ${((performance.now() - benchStart) / 1000).toFixed(0)} s, load average ${loadAverage()}; targets: ratio ≥ 0.8 at batch ≥ 64, lag p99 ≤ 5 ms`);
  console.log('| SAE d_in × d_sae | batch | raw onnxruntime rows/s | pipeline rows/s | ratio | latency p50 / p99 ms at 50% (frames) | event-loop lag p99 median segment (worst) / max ms | idle-loop lag p99 during raw, median segment (worst) ms |');
  console.log('|---|---|---|---|---|---|---|---|');
  for (const r of results) {
    console.log(
      `| ${r.size} | ${r.batch} | ${fmtRate(r.raw)} | ${fmtRate(r.pipeline)} | ${(r.pipeline / r.raw).toFixed(2)} | ` +
        `${fmtMs(r.latencyP50)} / ${fmtMs(r.latencyP99)} (${r.latencyFrames}) | ${fmtMs(r.lagP99)} (${fmtMs(r.lagP99Worst)}) / ${fmtMs(r.lagMax)} | ${fmtMs(r.idleLagP99)} (${fmtMs(r.idleLagP99Worst)}) |`,
    );
  }
}

if (isMainThread) await main();
else rawWorkerMain();
