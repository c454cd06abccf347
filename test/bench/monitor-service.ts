/**
 * Monitor service benchmark (issue 10): what the service adds on top of the statistics it runs.
 *
 * - Row path: ns per row of `offerRows` + `drain` (shape check, queue, three windows, request
 *   summaries, L0/FVU histograms) against the same batch through `WindowedStats.add` +
 *   `RequestSummaries.add` alone, measured in the same run; the ratio is the service's overhead.
 * - Assessment: ms per `assess()` (three windows scored against a baseline, feature tests, alert
 *   rules) with the calibration cached, against three bare `snapshot` calls; and the first
 *   `assess()`, which calibrates the token bucket (400 bootstrap replicates).
 *
 * Seeded random batches of 256 rows at L0 64, d_sae 16384 and 131072. Prints only.
 *
 *   npx tsx test/bench/monitor-service.ts [--seconds 1]
 */
import { performance } from 'node:perf_hooks';
import { Registry } from 'prom-client';
import { SeededRandom } from '../../src/common/random.js';
import { BaselineRecorder } from '../../src/monitor/baseline-recorder.js';
import { RequestSummaries } from '../../src/monitor/request-summaries.js';
import type { EncodedRows } from '../../src/monitor/rows.js';
import { MonitorService } from '../../src/monitor/service.js';
import { WindowedStats } from '../../src/monitor/windows.js';

const secondsArg = process.argv.indexOf('--seconds');
const seconds = secondsArg > 0 ? Number(process.argv[secondsArg + 1]) : 1;
const hook = 'blocks.0.hook_resid_post';

function batch(rows: number, l0: number, dSae: number, random: SeededRandom, request = 'a'): EncodedRows {
  const offsets = new Uint32Array(rows + 1);
  const indices = new Uint32Array(rows * l0);
  const values = new Float32Array(rows * l0);
  for (let r = 0; r < rows; r++) {
    for (let k = 0; k < l0; k++) values[r * l0 + k] = random.next() * 3;
    const start = Math.floor(random.next() * dSae);
    for (let k = 0; k < l0; k++) indices[r * l0 + k] = (start + k * 977) % dSae;
    offsets[r + 1] = (r + 1) * l0;
  }
  const fvu = new Float32Array(rows).map(() => random.next() * 0.3);
  return { rows, offsets, indices, values, l0: new Uint32Array(rows).fill(l0), fvu, requestIndex: new Uint32Array(rows).map((_, r) => r % 8), requestIds: ['a', 'b', 'c', 'd', 'e', 'f', 'g', request] };
}

/** Mean ns per call of `run` over about `seconds`. */
function nsPerCall(run: () => void): number {
  run();
  let calls = 0;
  const start = process.hrtime.bigint();
  const deadline = start + BigInt(Math.round(seconds * 1e9));
  let now = start;
  while (now < deadline) {
    run();
    calls++;
    now = process.hrtime.bigint();
  }
  return Number(now - start) / calls;
}

const rows = 256;
const l0 = 64;
for (const dSae of [16384, 131072]) {
  const random = new SeededRandom(dSae);
  const input = batch(rows, l0, dSae, random);
  let t = 0;
  const clock = (): number => (t += 50);

  const stats = new WindowedStats({ dSae, now: clock });
  const summaries = new RequestSummaries({ dSae, watchedFeatures: [1, 2, 3, 4] });
  const bareNs = nsPerCall(() => {
    stats.add(input);
    summaries.add(input);
  }) / rows;

  const service = new MonitorService({
    saes: [{ model: 'm', sae: 's', hook, dSae, watched: [1, 2, 3, 4].map((feature) => ({ feature, label: `f${feature}` })) }],
    registry: new Registry(),
    now: clock,
  });
  const serviceNs = nsPerCall(() => {
    service.offerRows(hook, input);
    service.drain();
  }) / rows;

  // A baseline of 400 documents of 64 rows, recorded from the same generator.
  const recorder = new BaselineRecorder({ dSae });
  for (let d = 0; d < 400; d++) recorder.addDocument(batch(64, l0, dSae, random, `doc${d}`));
  service.replaceBaseline('s', { baseline: recorder.toBaseline({ model: 'm', sae: { id: 's', hash: 'h' }, hook, saegateVersion: 'bench' }) });
  // Windows hold a steady token count, so the cached bucket is reused.
  const first = performance.now();
  service.assess();
  const firstMs = performance.now() - first;
  const assessMs = nsPerCall(() => service.assess()) / 1e6;
  const snapshotMs = nsPerCall(() => {
    for (const w of stats.windows) stats.snapshot(w.name);
  }) / 1e6;
  await service.close();
  process.stdout.write(
    `d_sae ${String(dSae).padStart(6)}  L0 ${l0}  row path: service ${serviceNs.toFixed(0).padStart(5)} ns/row vs windows+summaries ${bareNs.toFixed(0).padStart(5)} ns/row (×${(serviceNs / bareNs).toFixed(2)})` +
      `  assess: ${assessMs.toFixed(1)} ms vs 3 snapshots ${snapshotMs.toFixed(1)} ms (×${(assessMs / snapshotMs).toFixed(2)}); first assess (calibrates) ${firstMs.toFixed(0)} ms\n`,
  );
}
