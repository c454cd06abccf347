/**
 * Monitor benchmark (issue 10): ns per row of `WindowedStats.add` (three default windows) and of
 * `RequestSummaries.add`, at L0 16/64/256 and d_sae 16384/131072, on seeded random batches of 256
 * rows; the windows' memory. Prints only; the clock advances 50 ms per batch, so buckets rotate.
 *
 *   npx tsx test/bench/monitor.ts [--seconds 1]
 */
import { SeededRandom } from '../../src/common/random.js';
import { RequestSummaries } from '../../src/monitor/request-summaries.js';
import type { EncodedRows } from '../../src/monitor/rows.js';
import { WindowedStats } from '../../src/monitor/windows.js';

const secondsArg = process.argv.indexOf('--seconds');
const seconds = secondsArg > 0 ? Number(process.argv[secondsArg + 1]) : 1;

function batch(rows: number, l0: number, dSae: number, random: SeededRandom): EncodedRows {
  const offsets = new Uint32Array(rows + 1);
  const indices = new Uint32Array(rows * l0);
  const values = new Float32Array(rows * l0);
  for (let r = 0; r < rows; r++) {
    for (let k = 0; k < l0; k++) values[r * l0 + k] = random.next() * 3;
    // Distinct per row: a random start and an odd stride (coprime with the power-of-two d_sae).
    const start = Math.floor(random.next() * dSae);
    for (let k = 0; k < l0; k++) indices[r * l0 + k] = (start + k * 977) % dSae;
    offsets[r + 1] = (r + 1) * l0;
  }
  const fvu = new Float32Array(rows).map(() => random.next() * 0.3);
  const requestIndex = new Uint32Array(rows).map((_, r) => r % 8);
  return { rows, offsets, indices, values, l0: new Uint32Array(rows).fill(l0), fvu, requestIndex, requestIds: ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'] };
}

function nsPerRow(run: () => void, rows: number): number {
  run(); // warm-up
  let batches = 0;
  const start = process.hrtime.bigint();
  const deadline = start + BigInt(Math.round(seconds * 1e9));
  let now = start;
  while (now < deadline) {
    run();
    batches++;
    now = process.hrtime.bigint();
  }
  return Number(now - start) / (batches * rows);
}

const rows = 256;
for (const dSae of [16384, 131072]) {
  for (const l0 of [16, 64, 256]) {
    const random = new SeededRandom(dSae + l0);
    const input = batch(rows, l0, dSae, random);
    let t = 0;
    const stats = new WindowedStats({ dSae, now: () => (t += 50) });
    const windowsNs = nsPerRow(() => stats.add(input), rows);
    const summaries = new RequestSummaries({ dSae, watchedFeatures: [1, 2, 3, 4] });
    const summariesNs = nsPerRow(() => summaries.add(input), rows);
    const line = `d_sae ${String(dSae).padStart(6)}  L0 ${String(l0).padStart(3)}  windows ${windowsNs.toFixed(0).padStart(6)} ns/row  request summaries ${summariesNs.toFixed(0).padStart(6)} ns/row  (windows memory ${(stats.memoryBytes() / 2 ** 20).toFixed(1)} MiB)`;
    process.stdout.write(`${line}\n`);
  }
}
