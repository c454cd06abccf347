/**
 * The monitor's drift worker: an assessment at a large d_sae (a fresh token bucket, so the worker
 * runs a bootstrap calibration) leaves the event loop free, so many event-loop turns pass while it
 * is in flight (the in-thread assessment it replaced ran each window in one turn); a worker that
 * dies during an assessment leaves that round without drift scores, logged and counted, while the
 * next round is scored by its replacement, and closing the service stops it; a baseline reaches the
 * worker as transferred arrays.
 */
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { BaselineRecorder } from '../../../src/monitor/baseline-recorder.js';
import { monitorKey } from '../../../src/monitor/metrics.js';
import { BaselineReference } from '../../../src/monitor/reference.js';
import type { Baseline } from '../../../src/monitor/baseline.js';
import { MonitorService } from '../../../src/monitor/service.js';
import { SyntheticTraffic } from '../../helpers/monitor-synthetic.js';
import { waitFor } from '../../helpers/wait.js';

const dSae = 65_536;
const hook = 'blocks.0.hook_resid_post';
const windows = [{ name: '1m', durationMs: 60_000, buckets: 6 }];

function baseline(): Baseline {
  const traffic = new SyntheticTraffic({ dSae, seed: 1, topics: 4 });
  const recorder = new BaselineRecorder({ dSae });
  for (let d = 0; d < 200; d++) recorder.addDocument(traffic.document());
  return recorder.toBaseline({ model: 'm', sae: { id: 's', hash: 'h' }, hook, saegateVersion: '0' });
}

function makeService(registry?: Registry): { service: MonitorService; warnings: string[] } {
  const warnings: string[] = [];
  const service = new MonitorService({
    saes: [{ model: 'm', sae: 's', hook, dSae }],
    windows,
    calibration: { replicates: 400, seed: 3 },
    registry,
    logger: { info: () => undefined, warn: (_o, message) => warnings.push(message) },
  });
  service.replaceBaseline('s', { baseline: baseline() });
  const traffic = new SyntheticTraffic({ dSae, seed: 5, topics: 4 });
  for (let d = 0; d < 40; d++) service.offerRows(hook, traffic.document());
  return { service, warnings };
}

interface Report {
  saes: { windows: Record<string, { drift: { scores: { jsd: number } } | null }> }[];
}

describe('MonitorService drift worker', () => {
  it("sends a baseline reference's data by transfer, rebuilt equal on the other side, the original intact", () => {
    const reference = new BaselineReference(baseline());
    const { parts, transfer } = reference.copyParts();
    const received = structuredClone(parts, { transfer });
    expect(transfer.every((buffer) => buffer.byteLength === 0)).toBe(true);
    expect(new BaselineReference(received)).toEqual(reference);
    expect(reference.totals.firingCounts.length).toBe(dSae);
  });

  it('keeps the event loop turning while a large window is scored and calibrated', async () => {
    const { service } = makeService();
    let settled = false;
    const assessed = service.assess().then(() => (settled = true));
    // Event-loop turns that run while the assessment is in flight. In-thread, the window's scoring
    // and its bucket's 400-replicate bootstrap ran in one turn, so the assessment settled within 2.
    let turns = 0;
    while (!settled) {
      await new Promise((resolve) => setImmediate(resolve));
      turns++;
    }
    await assessed;
    expect(turns).toBeGreaterThan(20);
    const report = service.driftReport() as Report;
    expect(report.saes[0].windows['1m'].drift?.scores.jsd).toBeGreaterThan(0);
    await service.close();
  });

  it('gives no scores for a round whose worker died, counts it, and scores the next round', async () => {
    const registry = new Registry();
    const { service, warnings } = makeService(registry);
    const host = await service.driftHost();
    if (host === null) throw new Error('the drift worker starts with the first baseline');
    const round = service.assess();
    // The window (a fresh bucket: a bootstrap) is with the worker; end the worker as a crash would.
    await waitFor('assessment in flight on the drift worker', () => host.inFlight > 0);
    await host.terminate();
    await round;
    expect((service.driftReport() as Report).saes[0].windows['1m'].drift).toBeNull();
    expect(service.readings().get(monitorKey('s', hook))?.assessmentErrors).toBe(1);
    expect(await registry.metrics()).toMatch(/^saegate_monitor_assessment_errors_total\{model="m",sae="s",hook="blocks\.0\.hook_resid_post"\} 1$/m);
    expect(warnings.some((w) => w.includes('worker thread exited') && w.includes('no drift scores for window 1m this round'))).toBe(true);
    expect(host.restarts).toBe(1);

    // The replacement got the baseline with its init: the next round is scored.
    await service.assess();
    expect((service.driftReport() as Report).saes[0].windows['1m'].drift?.scores.jsd).toBeGreaterThan(0);
    expect(await registry.metrics()).toMatch(/^saegate_monitor_assessment_errors_total\{[^}]*\} 1$/m);
    await service.close();
    // Closing the service stopped the worker: the host refuses work.
    const window = { tokens: 0, firingCounts: new Float64Array(dSae), fvuSum: 0, l0Histogram: new Float64Array(1), fvuHistogram: new Float64Array(1), projectionHistogram: null };
    await expect(host.request({ kind: 'assess', key: 'k', window, alpha: 0.01, extraAlphas: [], featureTests: { top: 1 } })).rejects.toThrow(/drift worker closed/);
  });
});
