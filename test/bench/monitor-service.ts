/**
 * Monitor service benchmark (issue 10): what the service adds on top of the statistics it runs.
 *
 * - Row path: ns per row of `offerRows` + `drain` (shape check, queue, three windows, request
 *   summaries, L0/FVU histograms) against the same batch through `WindowedStats.add` +
 *   `RequestSummaries.add` alone, measured in the same run; the ratio is the service's overhead.
 * - Assessment: wall ms per `await assess()` (three windows scored against a baseline in the drift
 *   worker, feature tests, alert rules) with the calibration cached, against three bare `snapshot`
 *   calls; and the first `assess()`, which calibrates the token bucket (400 bootstrap replicates).
 * - Event-loop blocking, before and after the drift worker, in the same run: the in-thread path
 *   (snapshot + `assessWindow` per window on this thread, as the service ran it before) against the
 *   service's main-thread busy time and the event loop's longest stall while it assesses, with the
 *   thresholds cached and while calibrating.
 *
 * Seeded random batches of 256 rows at L0 64, d_sae 16384 and 131072. Prints only.
 *
 *   npx tsx test/bench/monitor-service.ts [--seconds 1]
 */
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { Registry } from 'prom-client';
import { SeededRandom } from '../../src/common/random.js';
import { BaselineRecorder } from '../../src/monitor/baseline-recorder.js';
import { DriftCalibrator } from '../../src/monitor/calibration.js';
import { assessWindow } from '../../src/monitor/drift.js';
import { BaselineReference } from '../../src/monitor/reference.js';
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

/** Mean wall ms per `await service.assess()` over about `seconds`. */
async function msPerAssess(service: MonitorService): Promise<number> {
  let calls = 0;
  const start = performance.now();
  do {
    await service.assess();
    calls++;
  } while (performance.now() - start < seconds * 1000);
  return (performance.now() - start) / calls;
}

/**
 * Awaits `service.assess()` for about `forSeconds` (at least once) and reports the main thread's
 * side: its busy time per assessment (event-loop utilization's active time: snapshots, messages,
 * the alert rules) and the event loop's longest stall (`monitorEventLoopDelay`, 1 ms resolution).
 */
async function blocking(service: MonitorService, forSeconds: number): Promise<{ calls: number; busyMs: number; wallMs: number; maxStallMs: number; p99StallMs: number }> {
  const delay = monitorEventLoopDelay({ resolution: 1 });
  delay.enable();
  const elu = performance.eventLoopUtilization();
  const start = performance.now();
  let calls = 0;
  do {
    await service.assess();
    calls++;
  } while (performance.now() - start < forSeconds * 1000);
  const wallMs = (performance.now() - start) / calls;
  const used = performance.eventLoopUtilization(elu);
  delay.disable();
  return { calls, busyMs: used.active / calls, wallMs, maxStallMs: delay.max / 1e6, p99StallMs: delay.percentile(99) / 1e6 };
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
  const baseline = recorder.toBaseline({ model: 'm', sae: { id: 's', hash: 'h' }, hook, saegateVersion: 'bench' });
  service.replaceBaseline('s', { baseline });
  // Windows hold a steady token count, so the cached bucket is reused.
  const first = performance.now();
  await service.assess();
  const firstMs = performance.now() - first;
  const assessMs = (await msPerAssess(service)) / 1;
  const snapshotMs = nsPerCall(() => {
    for (const w of stats.windows) stats.snapshot(w.name);
  }) / 1e6;

  // Event-loop blocking. Before: the in-thread path this service ran until issue 10 (snapshot +
  // assessWindow per window on the event loop, one window per turn), on the bare windows (same
  // traffic, same clock) with a calibrator on this thread. After: the service's assess(), the
  // scoring in the drift worker.
  const reference = new BaselineReference(baseline);
  const before = (calibrator: DriftCalibrator): { totalMs: number; longestMs: number } => {
    let longestMs = 0;
    const t0 = performance.now();
    for (const w of stats.windows) {
      const start = performance.now();
      assessWindow(stats.snapshot(w.name), calibrator, { top: 10 });
      longestMs = Math.max(longestMs, performance.now() - start);
    }
    return { totalMs: performance.now() - t0, longestMs };
  };
  const cold = before(new DriftCalibrator(reference));
  const warmCalibrator = new DriftCalibrator(reference);
  before(warmCalibrator);
  let warm = { totalMs: 0, longestMs: 0 };
  const warmNs = nsPerCall(() => {
    const run = before(warmCalibrator);
    warm = { totalMs: run.totalMs, longestMs: Math.max(warm.longestMs, run.longestMs) };
  });
  const afterWarm = await blocking(service, seconds);
  // A replaced baseline starts with empty calibrators in the worker: the next assessment calibrates.
  service.replaceBaseline('s', { baseline });
  const afterCold = await blocking(service, 0);
  await service.close();
  process.stdout.write(
    `d_sae ${String(dSae).padStart(6)}  L0 ${l0}  row path: service ${serviceNs.toFixed(0).padStart(5)} ns/row vs windows+summaries ${bareNs.toFixed(0).padStart(5)} ns/row (×${(serviceNs / bareNs).toFixed(2)})` +
      `  assess: ${assessMs.toFixed(1)} ms wall vs 3 snapshots ${snapshotMs.toFixed(1)} ms (×${(assessMs / snapshotMs).toFixed(2)}); first assess (calibrates) ${firstMs.toFixed(0)} ms\n` +
      `  event loop, cached thresholds: in-thread ${(warmNs / 1e6).toFixed(1)} ms per assessment, longest window ${warm.longestMs.toFixed(1)} ms;` +
      ` drift worker: main thread busy ${afterWarm.busyMs.toFixed(1)} ms per assessment (×${(afterWarm.busyMs / (warmNs / 1e6)).toFixed(3)}), longest stall ${afterWarm.maxStallMs.toFixed(1)} ms (p99 ${afterWarm.p99StallMs.toFixed(1)} ms) over ${afterWarm.calls} assessments of ${afterWarm.wallMs.toFixed(1)} ms wall\n` +
      `  event loop, calibrating:        in-thread ${cold.totalMs.toFixed(0)} ms per assessment, longest window ${cold.longestMs.toFixed(0)} ms;` +
      ` drift worker: main thread busy ${afterCold.busyMs.toFixed(1)} ms (×${(afterCold.busyMs / cold.totalMs).toFixed(4)}), longest stall ${afterCold.maxStallMs.toFixed(1)} ms, ${afterCold.wallMs.toFixed(0)} ms wall\n`,
  );
}
