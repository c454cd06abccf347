/**
 * Projection monitor benchmark (issue 10): the event-loop cost of a projection monitor per tapped
 * row, d_model multiply-adds, at d_model 64 (stories260K), 2304 and 4096.
 *
 * - Projection: ns per row of `projectRows` on f16 frames (as serve taps them) and on f32 frames.
 * - Baseline, measured in the same run: the f16 → f32 decode of the same rows (`f16ToF32` into a
 *   preallocated array), the least work any consumer of an f16 row does; the ratio is the
 *   projection's cost in decodes.
 * - Monitor side: ns per row of `offerProjection` + `drain` (shape check, queue, three windows).
 *
 * Seeded random frames of 256 rows. Prints only.
 *
 *   npx tsx test/bench/projection.ts [--seconds 1]
 */
import { performance } from 'node:perf_hooks';
import { f16ToF32, f32ToF16 } from '../../src/common/f16.js';
import { SeededRandom } from '../../src/common/random.js';
import { PROJECTION_D_SAE, ProjectionBaselineRecorder, projectRows, projectionRows, unitDirection } from '../../src/monitor/projection.js';
import { MonitorService } from '../../src/monitor/service.js';

const secondsArg = process.argv.indexOf('--seconds');
const seconds = secondsArg > 0 ? Number(process.argv[secondsArg + 1]) : 1;
const ROWS = 256;

/** ns per row of `run` (which handles ROWS rows), repeated for about `seconds`. */
function nsPerRow(run: () => void): number {
  for (let i = 0; i < 20; i++) run();
  let calls = 0;
  const start = performance.now();
  let elapsed = 0;
  while (elapsed < seconds * 1000) {
    for (let i = 0; i < 10; i++) run();
    calls += 10;
    elapsed = performance.now() - start;
  }
  return (elapsed * 1e6) / (calls * ROWS);
}

for (const dModel of [64, 2304, 4096]) {
  const random = new SeededRandom(dModel);
  const x = Float32Array.from({ length: ROWS * dModel }, () => random.next() * 2 - 1);
  const bits = new Uint16Array(x.length);
  f32ToF16(x, bits);
  const direction = unitDirection(Float32Array.from({ length: dModel }, () => random.next() - 0.5), 'bench');
  const out = new Float32Array(ROWS);
  const decoded = new Float32Array(x.length);
  let sink = 0;
  const decode = nsPerRow(() => {
    f16ToF32(bits, decoded);
    sink += decoded[0];
  });
  const f16 = nsPerRow(() => {
    projectRows({ dtype: 'f16', data: bits }, ROWS, direction, out);
    sink += out[0];
  });
  const f32 = nsPerRow(() => {
    projectRows({ dtype: 'f32', data: x }, ROWS, direction, out);
    sink += out[0];
  });
  const monitor = new MonitorService({ saes: [{ model: 'm', sae: 'p', hook: 'h', dSae: PROJECTION_D_SAE, projection: true }] });
  const recorder = new ProjectionBaselineRecorder();
  for (let d = 0; d < 4; d++) {
    recorder.addRows(projectRows({ dtype: 'f32', data: x.subarray(d * 64 * dModel, (d + 1) * 64 * dModel) }, 64, direction));
    recorder.endDocument();
  }
  monitor.replaceBaseline('p', { baseline: recorder.toBaseline({ model: 'm', sae: { id: 'p', hash: 'h' }, hook: 'h', saegateVersion: '0' }) });
  const projection = projectRows({ dtype: 'f16', data: bits }, ROWS, direction);
  const requestIndex = new Uint32Array(ROWS);
  const offer = nsPerRow(() => {
    monitor.offerProjection('p', projectionRows(projection, requestIndex, ['a']));
    monitor.drain();
  });
  await monitor.close();
  process.stdout.write(
    `d_model ${String(dModel).padStart(4)}: projection f16 ${f16.toFixed(1)} ns/row, f32 ${f32.toFixed(1)} ns/row; ` +
      `f16 decode alone ${decode.toFixed(1)} ns/row (projection f16 = ×${(f16 / decode).toFixed(2)} a decode); ` +
      `monitor offer+drain ${offer.toFixed(1)} ns/row${sink === 0.5 ? ' ' : ''}\n`,
  );
}
