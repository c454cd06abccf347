/**
 * Projection monitors on synthetic residual rows with a known direction: the kernel against a
 * float64 reference (f32 and f16 rows), the flag syntax, quantile edges, and the monitor: traffic
 * shifted along the direction raises `projection_psi` above its calibrated threshold (in the
 * readings and in /metrics), traffic from the baseline's distribution does not, a baseline
 * without projection edges is refused, and a live recording writes a projection baseline.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { f16BitsToF32, f32ToF16 } from '../../../src/common/f16.js';
import { SeededRandom } from '../../../src/common/random.js';
import { BaselineRecorder } from '../../../src/monitor/baseline-recorder.js';
import { readBaseline, type Baseline } from '../../../src/monitor/baseline.js';
import { PROJECTION_D_SAE, ProjectionBaselineRecorder, parseProjectionFlag, projectRows, projectionRows, quantileEdges, unitDirection } from '../../../src/monitor/projection.js';
import { MonitorService } from '../../../src/monitor/service.js';
import { expectSaegateError } from '../../helpers/errors.js';

const dModel = 32;
const hook = 'blocks.1.hook_resid_post';
const windows = [{ name: '1m', durationMs: 60_000, buckets: 6 }];
const identity = { model: 'm', sae: { id: 'persona', hash: 'vector:abc' }, hook, saegateVersion: '0' };

function gaussian(random: SeededRandom): number {
  const u = Math.max(random.next(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random.next());
}

const direction = unitDirection(Float32Array.from({ length: dModel }, (_, i) => (i % 3) - 1 + 0.25), 'test');

/** `rows` rows of isotropic noise, with `shift`·v̂ added (per row, the same within a document). */
function residuals(random: SeededRandom, rows: number, shift = 0): Float32Array {
  const documentOffset = gaussian(random) * 0.5; // documents differ: rows within one are correlated
  const x = new Float32Array(rows * dModel);
  for (let r = 0; r < rows; r++) for (let i = 0; i < dModel; i++) x[r * dModel + i] = gaussian(random) + (shift + documentOffset) * direction[i];
  return x;
}

function recordBaseline(seed: number, documents: number): Baseline {
  const random = new SeededRandom(seed);
  const recorder = new ProjectionBaselineRecorder();
  for (let d = 0; d < documents; d++) {
    const rows = 20 + Math.floor(random.next() * 40);
    recorder.addRows(projectRows({ dtype: 'f32', data: residuals(random, rows) }, rows, direction));
    recorder.endDocument();
  }
  return recorder.toBaseline(identity);
}

function makeService(registry?: Registry): { service: MonitorService; clock: { t: number } } {
  const clock = { t: 1_000_000 };
  const service = new MonitorService({
    saes: [{ model: 'm', sae: 'persona', hook, dSae: PROJECTION_D_SAE, projection: true }],
    windows,
    calibration: { replicates: 200, seed: 5 },
    now: () => clock.t,
    ...(registry !== undefined && { registry }),
  });
  return { service, clock };
}

function feed(service: MonitorService, seed: number, documents: number, shift: number): void {
  const random = new SeededRandom(seed);
  for (let d = 0; d < documents; d++) {
    const rows = 20 + Math.floor(random.next() * 40);
    const projection = projectRows({ dtype: 'f32', data: residuals(random, rows, shift) }, rows, direction);
    service.offerProjection('persona', projectionRows(projection, new Uint32Array(rows), [`r${d}`]));
  }
}

describe('projectRows', () => {
  it('computes <x, v>/|v| for f32 and f16 rows as a float64 reference does', () => {
    const random = new SeededRandom(1);
    const rows = 7;
    const x = residuals(random, rows, 3);
    const raw = Float32Array.from(direction, (v) => v * 5); // a vector 5× the unit one projects the same
    const unit = unitDirection(raw, 'test');
    const f32 = projectRows({ dtype: 'f32', data: x }, rows, unit);
    const bits = new Uint16Array(x.length);
    f32ToF16(x, bits);
    const f16 = projectRows({ dtype: 'f16', data: bits }, rows, unit);
    const norm = Math.sqrt(raw.reduce((s, v) => s + v * v, 0));
    for (let r = 0; r < rows; r++) {
      let ref = 0;
      let ref16 = 0;
      for (let i = 0; i < dModel; i++) {
        ref += (x[r * dModel + i] * raw[i]) / norm;
        ref16 += (f16BitsToF32(bits[r * dModel + i]) * raw[i]) / norm;
      }
      expect(f32[r]).toBeCloseTo(ref, 4);
      expect(f16[r]).toBeCloseTo(ref16, 4);
    }
    expect(Math.abs(f32[0])).toBeGreaterThan(0.5);
  });

  it('refuses a zero direction and too few values', () => {
    expectSaegateError(() => unitDirection(new Float32Array(4), 'v.safetensors'), 'SAEGATE_ERR_VECTOR_FILE', 'v.safetensors', 'norm 0');
    expectSaegateError(() => projectRows({ dtype: 'f32', data: new Float32Array(10) }, 1, direction), 'SAEGATE_ERR_MONITOR_ARGUMENT', '32 values', 'got 10');
  });
});

describe('parseProjectionFlag and quantileEdges', () => {
  it('parses NAME=FILE[@HOOK] and refuses a missing name', () => {
    expect(parseProjectionFlag('persona=vectors/p.safetensors')).toEqual({ name: 'persona', file: 'vectors/p.safetensors' });
    expect(parseProjectionFlag('p=v.safetensors@blocks.2.hook_resid_post')).toEqual({ name: 'p', file: 'v.safetensors', hook: 'blocks.2.hook_resid_post' });
    expectSaegateError(() => parseProjectionFlag('v.safetensors'), 'SAEGATE_ERR_CONFIG', '--projection', 'NAME=FILE');
  });

  it('puts equal mass in each bin and drops repeated edges', () => {
    const values = Float32Array.from({ length: 1000 }, (_, i) => i);
    const edges = quantileEdges(values, 4);
    expect(edges).toEqual([249.5, 499.5, 749.5]);
    // Never on a recorded value: a run of equal values stays in one bin.
    expect(quantileEdges(Float32Array.from([0, 0, 0, 1]), 4)).toEqual([0.5]);
    expect(quantileEdges(Float32Array.from([0, 1, 1, 1, 1, 1, 2, 3]), 4)).toEqual([1.5]);
    expectSaegateError(() => quantileEdges(Float32Array.from([2, 2]), 4), 'SAEGATE_ERR_MONITOR_ARGUMENT', 'equal 2');
  });
});

describe('MonitorService with a projection monitor', () => {
  const baseline = recordBaseline(11, 600);

  it('records a baseline with projection edges and no features', () => {
    expect(baseline.provenance.dSae).toBe(1);
    expect(baseline.bins.projection).toHaveLength(19);
    expect(baseline.documents.every((d) => d.features.length === 0 && d.projection!.reduce((a, b) => a + b, 0) === d.tokens)).toBe(true);
  });

  it('raises projection_psi above its threshold on traffic shifted along the direction, and not on the same distribution', async () => {
    const registry = new Registry();
    const same = makeService();
    const shifted = makeService(registry);
    same.service.replaceBaseline('persona', { baseline });
    shifted.service.replaceBaseline('persona', { baseline });
    feed(same.service, 99, 40, 0);
    feed(shifted.service, 99, 40, 0.6);
    await same.service.assess();
    await shifted.service.assess();
    const window = (s: MonitorService) => [...s.readings().values()][0].windows['1m'];
    expect(window(same.service).tokens).toBeGreaterThan(800);
    const sameDrift = window(same.service).drift!;
    const shiftedDrift = window(shifted.service).drift!;
    expect(sameDrift.scores.projectionPsi).toBeLessThan(sameDrift.thresholds.projectionPsi!);
    expect(shiftedDrift.scores.projectionPsi).toBeGreaterThan(shiftedDrift.thresholds.projectionPsi!);

    // /metrics: only projection_psi for a projection monitor, named by the monitor's name.
    const text = await registry.metrics();
    const score = /saegate_drift_score\{model="m",sae="persona",hook="blocks\.1\.hook_resid_post",statistic="projection_psi",window="1m"\} ([\d.e-]+)/.exec(text);
    const threshold = /saegate_drift_threshold\{model="m",sae="persona",hook="blocks\.1\.hook_resid_post",statistic="projection_psi",window="1m"\} ([\d.e-]+)/.exec(text);
    expect(Number(score![1])).toBeGreaterThan(Number(threshold![1]));
    expect(text).not.toMatch(/saegate_drift_score\{[^}]*statistic="jsd"/);
    await same.service.close();
    await shifted.service.close();
  });

  it('refuses a baseline without projection edges and keeps running without drift', async () => {
    const { service } = makeService();
    const recorder = new BaselineRecorder({ dSae: 1 });
    for (let d = 0; d < 3; d++) recorder.addDocument(projectionRows(new Float32Array(4), new Uint32Array(4), ['']));
    expectSaegateError(() => service.replaceBaseline('persona', { baseline: recorder.toBaseline(identity) }), 'SAEGATE_ERR_BASELINE_MISMATCH', 'bins.projection');
    feed(service, 1, 2, 0);
    await service.assess();
    expect([...service.readings().values()][0].windows['1m'].drift).toBeNull();
    await service.close();
  });

  it('records a projection baseline from live traffic (one document per request) that loads again', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'saegate-projection-live-'));
    try {
      const file = path.join(dir, 'live.json');
      const { service } = makeService();
      expect(service.startRecording(file, null).state).toBe('recording');
      feed(service, 5, 30, 0);
      for (let d = 0; d < 30; d++) service.requestEnded(`r${d}`);
      await service.assess();
      await service.assess();
      expect(service.recordingStatus()).toMatchObject({ state: 'recording', documents: 30 });
      expect(service.stopRecording()).toMatchObject({ state: 'written', documents: 30 });
      const recorded = readBaseline(file);
      expect(recorded.provenance).toMatchObject({ model: 'm', sae: { id: 'persona' }, hook, dSae: 1, documents: 30 });
      expect(recorded.bins.projection).toHaveLength(19);
      const again = makeService();
      expect(again.service.replaceBaseline('persona', { path: file })).toMatchObject({ documents: 30 });
      await service.close();
      await again.service.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('shares a hook with an SAE: SAE rows and projection rows go to their own entries', async () => {
    const service = new MonitorService({
      saes: [
        { model: 'm', sae: 'sae', hook, dSae: 8 },
        { model: 'm', sae: 'persona', hook, dSae: PROJECTION_D_SAE, projection: true },
      ],
      windows,
    });
    feed(service, 3, 2, 0);
    service.drain();
    await service.assess();
    const readings = service.readings();
    expect(readings.get([...readings.keys()].find((k) => k.startsWith('persona'))!)!.windows['1m'].tokens).toBeGreaterThan(0);
    expect(readings.get([...readings.keys()].find((k) => k.startsWith('sae'))!)!.windows['1m'].tokens).toBe(0);
    await service.close();
  });
});
