/**
 * What a batch deadline costs per row: the SAE pipeline (a real `MicroBatcher` on a real one-worker
 * `SaePool`, onnxruntime in a worker thread) fed tap frames at a steady rate, as saegate receives
 * them from a model server, with each batch deadline in turn. This is the measurement behind
 * `--sae-monitor-delay-ms` (docs/sae-engine.md, "Batch deadlines").
 *
 * Frames of `--frame-rows` f16 rows from 8 requests arrive every `--every-ms` ms (default 17 rows
 * every 2 ms: stories260K at 8 streams, about 8.5 rows per ms with its prompts, flushed by the
 * model server every 2 ms). Each round runs every deadline for `--seconds`, in rotated order, and
 * an idle arm that decodes the same frames without pushing them; the pipeline's cost is the
 * process's CPU per row (every thread: process.cpuUsage) over the idle arm's in the
 * same round. Also printed: rows per batch, and the wall time inside onnxruntime's run per row
 * (the pool's own counter), which shows how much of the cost is the SAE's arithmetic with its
 * weights out of cache.
 *
 *   taskset -c 1 npx tsx test/bench/sae-deadline.ts [--deadlines 2,5,10,20,50] [--rounds 3] [--seconds 3]
 *                            [--d-in 64 --d-sae 1024 --k 32] [--frame-rows 17] [--every-ms 2]
 *
 * Medians over rounds; asserts nothing about time.
 */
import { parseArgs } from 'node:util';
import { setInterval as every } from 'node:timers/promises';
import { seededUniform } from '../../src/common/random.js';
import { MicroBatcher } from '../../src/sae/batcher.js';
import { SaePool } from '../../src/sae/pool.js';
import { encodeActivationFrame } from '../../src/tap/builders.js';
import { decodeMessage } from '../../src/tap/codec.js';
import type { ActivationsMessage } from '../../src/tap/messages.js';
import { median } from '../helpers/bench-stats.js';
import { seededTopKSae } from '../helpers/sae.js';

const { values } = parseArgs({
  options: {
    deadlines: { type: 'string' },
    rounds: { type: 'string' },
    seconds: { type: 'string' },
    'd-in': { type: 'string' },
    'd-sae': { type: 'string' },
    k: { type: 'string' },
    'frame-rows': { type: 'string' },
    'every-ms': { type: 'string' },
  },
});
const deadlines = (values.deadlines ?? '2,5,10,20,50').split(',').map(Number);
const rounds = Number(values.rounds ?? 3);
const seconds = Number(values.seconds ?? 3);
const dIn = Number(values['d-in'] ?? 64);
const dSae = Number(values['d-sae'] ?? 1024);
const k = Number(values.k ?? 32);
const frameRows = Number(values['frame-rows'] ?? 17);
const everyMs = Number(values['every-ms'] ?? 2);
const HOOK = 'blocks.3.hook_resid_post';

/** CPU time of every thread of this process so far (user + system), µs. */
function processCpuUs(): number {
  const { user, system } = process.cpuUsage();
  return user + system;
}

const u = seededUniform(3);
const frame = encodeActivationFrame({
  hookIndex: 0,
  dtype: 'f16',
  dModel: dIn,
  requestIds: Array.from({ length: frameRows }, (_, i) => `cmpl-${'0123456789abcdef'.repeat(2)}-${i % 8}`),
  positions: Int32Array.from({ length: frameRows }, (_, i) => 100 + i),
  data: Float32Array.from({ length: frameRows * dIn }, () => (u() - 0.5) * 4),
});

interface Measured {
  cpuUsPerRow: number;
  rowsPerBatch: number;
  runUsPerRow: number;
}

/** Feeds frames for `seconds` (pushing them into `batcher` unless null), then waits for every result. */
async function arm(batcher: MicroBatcher | null, pool: SaePool | null): Promise<Measured> {
  const cpu0 = processCpuUs();
  const batches0 = batcher?.stats.batches ?? 0;
  const run0 = pool?.stats.runMs ?? 0;
  const t0 = performance.now();
  let rows = 0;
  for await (const _ of every(everyMs)) {
    const msg = decodeMessage(frame) as ActivationsMessage;
    batcher?.push(msg.data, msg.positions.length, { hook: HOOK, requestIds: msg.requestIds, rowRequestIndexes: msg.rowRequestIndexes, positions: msg.positions });
    rows += msg.positions.length;
    if (performance.now() - t0 >= seconds * 1000) break;
  }
  await batcher?.drain();
  const batches = (batcher?.stats.batches ?? 0) - batches0;
  return { cpuUsPerRow: (processCpuUs() - cpu0) / rows, rowsPerBatch: batches > 0 ? rows / batches : NaN, runUsPerRow: pool ? ((pool.stats.runMs - run0) * 1e3) / rows : NaN };
}

async function main(): Promise<void> {
  process.stdout.write(`sae-deadline: ${dIn} → ${dSae} TopK k ${k}; ${frameRows} f16 rows every ${everyMs} ms (${((frameRows / everyMs) * 1000).toFixed(0)} rows/s); ${rounds} round(s) × ${seconds} s per arm\n`);
  const scale = 1 / Math.sqrt(dIn);
  const pool = await SaePool.create({ sae: seededTopKSae({ dIn, dSae, k, hook: HOOK, seed: 7, scales: { W_enc: scale, b_enc: 0.01, W_dec: scale, b_dec: 0.01 } }) });
  try {
    // One batcher per deadline, all on the one pool; an arm's batcher is idle in the others.
    const batchers = new Map(deadlines.map((d) => [d, new MicroBatcher({ pool, dIn, maxDelayMs: d })]));
    const idle: number[] = [];
    const results = new Map<number, Measured[]>(deadlines.map((d) => [d, []]));
    await arm(batchers.get(deadlines[0])!, pool); // warm-up: onnxruntime, the JIT
    for (let round = 0; round < rounds; round++) {
      const order = [null, ...deadlines];
      const start = round % order.length;
      for (const d of [...order.slice(start), ...order.slice(0, start)]) {
        if (d === null) idle.push((await arm(null, null)).cpuUsPerRow);
        else results.get(d)!.push(await arm(batchers.get(d)!, pool));
        process.stderr.write(`round ${round + 1}/${rounds}: ${d === null ? 'idle' : `${d} ms`} done\n`);
      }
    }
    const idleMedian = median(idle);
    const lines = ['', '| deadline ms | rows/batch | pipeline CPU-µs/row (over idle) | onnxruntime run µs/row (wall) | × the 2 ms deadline |', '|---|---|---|---|---|'];
    const cost = (d: number): number[] => results.get(d)!.map((m, i) => m.cpuUsPerRow - idle[i]);
    const reference = deadlines.includes(2) ? cost(2) : null;
    for (const d of deadlines) {
      const ms = results.get(d)!;
      const c = cost(d);
      const ratio = reference === null ? '–' : median(c.map((x, i) => x / reference[i])).toFixed(2);
      lines.push(`| ${d} | ${median(ms.map((m) => m.rowsPerBatch)).toFixed(1)} | ${median(c).toFixed(1)} | ${median(ms.map((m) => m.runUsPerRow)).toFixed(1)} | ${ratio} |`);
    }
    lines.push('', `Idle arm (frames decoded, not pushed): ${idleMedian.toFixed(1)} CPU-µs per row. Medians over ${rounds} rounds; ratios paired within a round.`);
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    await pool.close();
  }
}

await main();
