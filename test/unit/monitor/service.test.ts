/**
 * The monitor service on synthetic encoded rows and an injected clock: drift is flagged on shifted
 * traffic and not on traffic from the baseline's distribution, dropped rows are counted by reason,
 * an unusable baseline is a typed problem that leaves the SAE running without drift, a hot swap
 * keeps the last good baseline on error, alerts go pending → firing → resolved with the windows, and
 * a live recording writes a baseline that loads again.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAlertRules } from '../../../src/monitor/alert-rules.js';
import { BaselineRecorder } from '../../../src/monitor/baseline-recorder.js';
import { readBaseline, writeBaseline } from '../../../src/monitor/baseline.js';
import { MonitorService, type MonitorServiceOptions } from '../../../src/monitor/service.js';
import { expectSaegateError } from '../../helpers/errors.js';
import { SyntheticTraffic, type SyntheticShift } from '../../helpers/monitor-synthetic.js';

const dSae = 256;
const hook = 'blocks.0.hook_resid_post';
const identity = { model: 'm', sae: { id: 's', hash: 'h' }, hook, saegateVersion: '0' };
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'saegate-monitor-service-'));
const baselineFile = path.join(dir, 'baseline.json');
const windows = [{ name: '1m', durationMs: 60_000, buckets: 6 }];

beforeAll(() => {
  const traffic = new SyntheticTraffic({ dSae, seed: 1 });
  const recorder = new BaselineRecorder({ dSae });
  for (let d = 0; d < 1500; d++) recorder.addDocument(traffic.document());
  writeBaseline(baselineFile, recorder.toBaseline(identity));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function makeService(overrides: Partial<MonitorServiceOptions> = {}): { service: MonitorService; clock: { t: number } } {
  const clock = { t: 1_000_000 };
  const service = new MonitorService({
    saes: [{ model: 'm', sae: 's', hook, dSae, watched: [{ feature: 3, label: 'three' }] }],
    windows,
    calibration: { replicates: 200, seed: 3 },
    now: () => clock.t,
    ...overrides,
  });
  return { service, clock };
}

function feed(service: MonitorService, seed: number, documents: number, shift?: SyntheticShift): void {
  const traffic = new SyntheticTraffic({ dSae, seed, shift });
  for (let d = 0; d < documents; d++) service.offerRows(hook, traffic.document());
}

describe('MonitorService', () => {
  it('flags drift on shifted traffic and not on traffic from the baseline distribution', async () => {
    const same = makeService();
    same.service.loadBaselineFiles([baselineFile]);
    feed(same.service, 77, 40);
    same.service.assess();
    const shifted = makeService();
    shifted.service.loadBaselineFiles([baselineFile]);
    feed(shifted.service, 77, 40, { boostFeatures: 16, boostFactor: 2 });
    shifted.service.assess();

    const window = (s: MonitorService) => [...s.readings().values()][0].windows['1m'];
    expect(window(same.service).tokens).toBeGreaterThan(1000);
    const sameDrift = window(same.service).drift!;
    const shiftedDrift = window(shifted.service).drift!;
    expect(sameDrift.scores.jsd).toBeLessThan(sameDrift.thresholds.jsd);
    expect(shiftedDrift.scores.jsd).toBeGreaterThan(shiftedDrift.thresholds.jsd);
    expect(shiftedDrift.flaggedFeatures).toBeGreaterThan(sameDrift.flaggedFeatures);
    // The admin report names the drifting features: boosted ones are 0..15.
    const report = shifted.service.driftReport() as { saes: { windows: Record<string, { drift: { topFeatures: { feature: number }[] } }> }[] };
    const top = report.saes[0].windows['1m'].drift.topFeatures.slice(0, 5).map((f) => f.feature);
    expect(top.every((f) => f < 16)).toBe(true);
    await same.service.close();
    await shifted.service.close();
  });

  it('calibrates once per token bucket, not per assessment', () => {
    const { service } = makeService();
    service.loadBaselineFiles([baselineFile]);
    feed(service, 5, 20);
    service.assess();
    const first = service.driftReport() as { saes: { windows: Record<string, { drift: { thresholds: { jsd: number } } }> }[] };
    service.assess();
    service.assess();
    const again = service.driftReport() as typeof first;
    expect(again.saes[0].windows['1m'].drift.thresholds).toEqual(first.saes[0].windows['1m'].drift.thresholds);
  });

  it('counts rows dropped for backlog, invalid batches and after close', async () => {
    const { service } = makeService({ maxBacklogRows: 150 });
    const traffic = new SyntheticTraffic({ dSae, seed: 9 });
    const docs = Array.from({ length: 6 }, () => traffic.document()); // 20–99 rows each
    // Offered in one synchronous burst: the queue is drained only on a later turn, so it fills.
    for (const doc of docs) service.offerRows(hook, doc);
    const bad = { ...docs[0], indices: Uint32Array.from(docs[0].indices, () => dSae + 1) };
    service.offerRows(hook, bad);
    const reading = () => [...service.readings().values()][0];
    const offered = docs.reduce((n, d) => n + d.rows, 0) + bad.rows;
    expect(reading().rows).toBe(offered);
    expect(reading().rowsDropped.invalid_batch).toBe(bad.rows);
    expect(reading().rowsDropped.backlog).toBeGreaterThan(0);
    expect(service.backlogRows).toBeLessThanOrEqual(150);
    service.assess();
    expect(reading().windows['1m'].tokens + reading().rowsDropped.backlog + reading().rowsDropped.invalid_batch).toBe(offered);
    await service.close();
    service.offerRows(hook, docs[1]);
    expect(reading().rowsDropped.stopped).toBe(docs[1].rows);
  });

  it('keeps serving without drift when a baseline does not match, with a typed problem', async () => {
    const other = path.join(dir, 'other-hook.json');
    const recorder = new BaselineRecorder({ dSae: 128 });
    const traffic = new SyntheticTraffic({ dSae: 128, seed: 2 });
    for (let d = 0; d < 20; d++) recorder.addDocument(traffic.document());
    writeBaseline(other, recorder.toBaseline(identity));
    const corrupt = path.join(dir, 'corrupt.json');
    fs.writeFileSync(corrupt, '{"version": 1, "provenance": ');

    const { service } = makeService();
    expect(() => service.loadBaselineFiles([other, corrupt])).not.toThrow();
    const ready = service.readiness();
    expect(ready.ok).toBe(false);
    expect(ready.saes[0]).toMatchObject({ sae: 's', drift: false, problem: { code: 'SAEGATE_ERR_BASELINE_MISMATCH', source: other } });
    expect(ready.saes[0].problem?.message).toContain('dSae: expected 256, baseline has 128');
    expect(ready.unmatchedBaselines).toMatchObject([{ code: 'SAEGATE_ERR_BASELINE_FILE', source: corrupt }]);
    feed(service, 4, 5);
    service.assess();
    const window = [...service.readings().values()][0].windows['1m'];
    expect(window.tokens).toBeGreaterThan(0);
    expect(window.drift).toBeNull();
    await service.close();
  });

  it('hot-swaps a baseline and keeps the last good one when the new one is refused', async () => {
    const { service } = makeService();
    const loaded = service.replaceBaseline('s', { path: baselineFile });
    expect(loaded.tokens).toBeGreaterThan(0);
    expectSaegateError(() => service.replaceBaseline('s', { baseline: { version: 1 } }), 'SAEGATE_ERR_BASELINE_FILE', 'provenance');
    const body = readBaseline(baselineFile);
    expectSaegateError(() => service.replaceBaseline('s', { baseline: { ...body, provenance: { ...body.provenance, model: 'other' } } }), 'SAEGATE_ERR_BASELINE_MISMATCH', 'model: expected "m"');
    expectSaegateError(() => service.replaceBaseline('nope', { path: baselineFile }), 'SAEGATE_ERR_BASELINE_MISMATCH', "no monitored SAE 'nope'");
    feed(service, 6, 10);
    service.assess();
    expect([...service.readings().values()][0].baseline?.id).toBe(loaded.id);
    expect([...service.readings().values()][0].windows['1m'].drift).not.toBeNull();
    await service.close();
  });

  it('exports drift scores, watched features and firing alerts through MonitorMetrics', async () => {
    const registry = new Registry();
    const { rules } = parseAlertRules('rules:\n  - {name: Drift, sae: s, signal: jsd, window: 1m, for: 30s, severity: critical}\n', 'rules.yaml', {
      saes: [{ sae: 's', hook, watched: [3] }],
      windows: ['1m'],
    });
    const { service, clock } = makeService({ registry, alertRules: rules! });
    const logged: { message: string; object: object }[] = [];
    service.logger = { info: (object, message) => logged.push({ object, message }), warn: (object, message) => logged.push({ object, message }) };
    service.loadBaselineFiles([baselineFile]);
    feed(service, 8, 30, { boostFeatures: 16, boostFactor: 3 });
    service.assess();
    expect(service.firingAlerts().has('Drift')).toBe(false); // pending: for 30s
    clock.t += 30_000;
    service.assess();
    expect(service.firingAlerts().has('Drift')).toBe(true);
    const text = await registry.metrics();
    expect(text).toMatch(/saegate_drift_score\{model="m",sae="s",hook="blocks.0.hook_resid_post",statistic="jsd",window="1m"\} \d/);
    expect(text).toContain('saegate_alert_firing{alert="Drift",severity="critical"} 1');
    expect(text).toMatch(/saegate_feature_firing_rate\{[^}]*feature="3",label="three"[^}]*\} 0\.\d+/);
    expect(logged.some((l) => l.message.startsWith('alert Drift firing'))).toBe(true);
    // The window empties after its minute; an empty window cannot hold the condition: resolved.
    clock.t += 120_000;
    service.assess();
    expect(service.firingAlerts().size).toBe(0);
    expect(logged.some((l) => l.message === 'alert Drift resolved')).toBe(true);
    await service.close();
    expect(await registry.metrics()).not.toContain('saegate_drift_score');
  });

  it('records a baseline from live traffic, one document per request, that loads again', async () => {
    const { service, clock } = makeService({ saegateVersion: '0.0.0-test' });
    const file = path.join(dir, 'live.json');
    service.startRecording(file, 60_000);
    const traffic = new SyntheticTraffic({ dSae, seed: 12 });
    let tokens = 0;
    for (let d = 0; d < 10; d++) {
      const { projection: _projection, ...doc } = traffic.document();
      tokens += doc.rows;
      // Each request in two batches, as the engine may split it.
      const half = Math.floor(doc.rows / 2);
      const cut = doc.offsets[half];
      service.offerRows(hook, { ...doc, rows: half, offsets: doc.offsets.slice(0, half + 1), l0: doc.l0.slice(0, half), fvu: doc.fvu.slice(0, half), requestIndex: doc.requestIndex.slice(0, half) });
      service.offerRows(hook, {
        ...doc,
        rows: doc.rows - half,
        offsets: doc.offsets.slice(half).map((o) => o - cut),
        indices: doc.indices.slice(cut),
        values: doc.values.slice(cut),
        l0: doc.l0.slice(half),
        fvu: doc.fvu.slice(half),
        requestIndex: doc.requestIndex.slice(half),
      });
      service.requestEnded(doc.requestIds[0]);
    }
    service.assess();
    service.assess();
    expect(service.recordingStatus()).toMatchObject({ state: 'recording', documents: 10, tokens });
    clock.t += 60_000;
    service.assess(); // past the duration: written
    expect(service.recordingStatus()).toMatchObject({ state: 'written', documents: 10, tokens });
    const recorded = readBaseline(file);
    expect(recorded.provenance).toMatchObject({ model: 'm', sae: { id: 's' }, hook, dSae, documents: 10, tokens, saegateVersion: '0.0.0-test' });
    await service.close();
    // Loaded again, as after a restart; a second file for the same hook is refused, the first kept.
    const restarted = makeService();
    restarted.service.loadBaselineFiles([file, baselineFile]);
    expect(restarted.service.readiness().saes[0]).toMatchObject({ drift: true, baseline: file, problem: null });
    expect(restarted.service.readiness().unmatchedBaselines).toMatchObject([{ source: baselineFile, code: 'SAEGATE_ERR_BASELINE_MISMATCH', message: expect.stringContaining('a second baseline') }]);
    await restarted.service.close();
  });
});
