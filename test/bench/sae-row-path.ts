/**
 * Main-thread cost per activation row of the SAE path, without onnxruntime: a decoded tap frame
 * handed to the micro-batcher the way `SaeSink.write` hands it, batched, "encoded" by an encoder
 * that answers at once (fresh output arrays per batch, as a worker's transferred outputs are),
 * tokens attached from a `RequestTokens` table at delivery, and a listener that reads every row's
 * request id, position and token (what a monitor does). `--d-in 8 --top-k 1` leaves little but the
 * per-row bookkeeping. What is left is the event loop's own work
 * per row: the part the compact activation path (request table + index column) is about.
 *
 *   npx tsx test/bench/sae-row-path.ts [--d-in 64,2304] [--rows 256] [--requests 8] [--frames 4000] [--runs 5] [--top-k 32]
 *
 * Prints, per row (medians of `--runs` runs, after one warm-up run), the process CPU time of the
 * whole path and the wall time spent inside the sink's write calls alone (decoded frame → batcher),
 * plus the GC pauses seen during the measured runs. Asserts nothing about time.
 */
import { PerformanceObserver } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { MicroBatcher, type SaeResultBatch } from '../../src/sae/batcher.js';
import type { EncodeResult, SaeEncoder } from '../../src/sae/pool.js';
import { RequestTokens } from '../../src/sae/tokens.js';
import { encodeActivationFrame, encodeTokensFrame } from '../../src/tap/builders.js';
import { decodeMessage } from '../../src/tap/codec.js';
import type { ActivationsFrame } from '../../src/tap/server.js';

/** Feature slots per row of the stand-in encoder's outputs (`--top-k`). */
let TOP_K = 32;
const HOOK = 'blocks.0.hook_resid_post';

/** Answers every encode on the next microtask with zeroed outputs and the rows buffer handed back. */
class InstantEncoder implements SaeEncoder {
  readonly workers = 2;
  encode(rows: Float32Array | Uint16Array, rowCount: number): Promise<EncodeResult> {
    return Promise.resolve({
      rowCount,
      topK: TOP_K,
      indices: new Int32Array(rowCount * TOP_K),
      values: new Float32Array(rowCount * TOP_K),
      l0: new Int32Array(rowCount),
      sqError: new Float32Array(rowCount),
      fvu: new Float32Array(rowCount),
      rows,
      runMs: 0,
    });
  }
}

/** A decoded f16 frame of `rows` rows spread round-robin over `requests` requests, as the tap emits it. */
function decodedFrame(dIn: number, rows: number, requests: number): ActivationsFrame {
  const data = Float32Array.from({ length: rows * dIn }, (_, i) => ((i * 2654435761) % 1000) / 1000 - 0.5);
  const message = decodeMessage(
    encodeActivationFrame({
      hookIndex: 0,
      dtype: 'f16',
      dModel: dIn,
      requestIds: Array.from({ length: rows }, (_, i) => `req-${i % requests}`),
      positions: Int32Array.from({ length: rows }, (_, i) => Math.floor(i / requests)),
      data,
    }),
  );
  if (message.type !== 'activations') throw new Error(`decoded a ${message.type} message`);
  return { ...message, hook: HOOK, rowCount: rows };
}

/** What SaeSink.write does with a frame of a hook that has an SAE. */
function write(batcher: MicroBatcher, frame: ActivationsFrame): void {
  batcher.push(frame.data, frame.rowCount, frame);
}

/** Reads every row's request id, position and token, as a per-request consumer would. */
function consume(batch: SaeResultBatch, seen: Map<string, number>): void {
  const { requestIds, rowRequestIndexes, positions, tokenIds } = batch;
  for (let r = 0; r < batch.rowCount; r++) {
    const id = requestIds[rowRequestIndexes[r]];
    seen.set(id, (seen.get(id) ?? 0) + positions[r] + tokenIds[r]);
  }
}

/** Per row, ns: process CPU time of the whole run, and wall time inside the write calls alone. */
interface RowCost {
  cpuNs: number;
  writeNs: number;
}

async function run(dIn: number, rows: number, requests: number, frames: number): Promise<RowCost> {
  const tokens = new RequestTokens();
  const positionsPerRequest = Math.ceil(rows / requests);
  for (let k = 0; k < requests; k++) {
    const positions = Array.from({ length: positionsPerRequest }, (_, p) => p);
    const message = decodeMessage(encodeTokensFrame({ requestIds: positions.map(() => `req-${k}`), positions, tokenIds: positions, texts: positions.map((p) => `t${p}`) }));
    if (message.type !== 'tokens') throw new Error(`decoded a ${message.type} message`);
    tokens.add(message);
  }
  const batcher = new MicroBatcher({ pool: new InstantEncoder(), dIn, maxBatchRows: rows, maxDelayMs: 60_000, tokens });
  const seen = new Map<string, number>();
  batcher.onResult((batch) => consume(batch, seen));
  const frame = decodedFrame(dIn, rows, requests);
  const cpu0 = process.cpuUsage();
  let writeMs = 0;
  for (let f = 0; f < frames; f++) {
    const w0 = performance.now();
    write(batcher, frame);
    writeMs += performance.now() - w0;
    // Each frame fills one batch exactly; draining every 8 frames keeps the queue short.
    if (f % 8 === 7) await batcher.drain();
  }
  await batcher.drain();
  const cpu = process.cpuUsage(cpu0);
  if (batcher.stats.rowsEncoded !== frames * rows) throw new Error(`encoded ${batcher.stats.rowsEncoded} of ${frames * rows} rows`);
  return { cpuNs: ((cpu.user + cpu.system) * 1e3) / (frames * rows), writeNs: (writeMs * 1e6) / (frames * rows) };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'd-in': { type: 'string', default: '64,2304' },
      rows: { type: 'string', default: '256' },
      requests: { type: 'string', default: '8' },
      frames: { type: 'string', default: '4000' },
      runs: { type: 'string', default: '5' },
      'top-k': { type: 'string', default: '32' },
    },
  });
  TOP_K = Number(values['top-k']);
  const rows = Number(values.rows);
  const requests = Number(values.requests);
  const frames = Number(values.frames);
  const runs = Number(values.runs);
  for (const dIn of values['d-in'].split(',').map(Number)) {
    await run(dIn, rows, requests, Math.ceil(frames / 4));
    let gcMs = 0;
    let gcCount = 0;
    const count = (entries: PerformanceEntry[]): void => {
      for (const entry of entries) {
        gcMs += entry.duration;
        gcCount++;
      }
    };
    const observer = new PerformanceObserver((list) => count(list.getEntries()));
    observer.observe({ entryTypes: ['gc'] });
    const samples: RowCost[] = [];
    for (let i = 0; i < runs; i++) samples.push(await run(dIn, rows, requests, frames));
    // Entries not yet delivered to the callback are still buffered: take them instead of waiting.
    count(observer.takeRecords());
    observer.disconnect();
    const median = (values: number[]): number => values.sort((a, b) => a - b)[Math.floor(values.length / 2)];
    const cpuNs = median(samples.map((s) => s.cpuNs));
    const writeNs = median(samples.map((s) => s.writeNs));
    process.stdout.write(
      `d_in ${dIn}, ${rows} rows/frame over ${requests} requests: CPU ${cpuNs.toFixed(1)} ns/row, in write() ${writeNs.toFixed(1)} ns/row (medians of ${runs}); GC ${gcCount} pauses, ${gcMs.toFixed(1)} ms over ${runs * frames * rows} rows\n`,
    );
  }
}

await main();
