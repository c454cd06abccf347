/**
 * MonitorMetrics on its own registry, fed by a real windowed monitor (test/helpers/monitor-source.ts):
 * every series from start, scores and thresholds equal to the monitor's own assessment, watched
 * features computed from the window, histograms per row, the watched-feature cap, and the names
 * against docs/metrics.md.
 */
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { assessWindow } from '../../../src/monitor/drift.js';
import { MONITOR_DROP_REASONS, MONITOR_METRIC_NAMES, MonitorMetrics, type MonitoredSae, type MonitorMetricsSource } from '../../../src/monitor/metrics.js';
import { expectSaegateError } from '../../helpers/errors.js';
import { documentedMetrics } from '../../helpers/metrics-doc.js';
import { InMemoryMonitorSource } from '../../helpers/monitor-source.js';
import { SyntheticTraffic } from '../../helpers/monitor-synthetic.js';

const dSae = 128;
const HOOK = 'blocks.0.hook_resid_post';
const monitored: MonitoredSae = {
  model: 'stories260K',
  sae: 'res-0',
  hook: HOOK,
  windows: ['1m', '5m'],
  watched: [
    { feature: 0, label: 'most common' },
    { feature: 127, label: 'rare' },
  ],
};
const windows = [
  { name: '1m', durationMs: 60_000, buckets: 6 },
  { name: '5m', durationMs: 300_000, buckets: 5 },
];
const labels = `model="stories260K",sae="res-0",hook="${HOOK}"`;
const empty: MonitorMetricsSource = { readings: () => new Map(), firingAlerts: () => new Set() };

/** The value of the sample line `series`, or undefined when absent. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('MonitorMetrics', () => {
  it('exports window tokens, row counters, histograms and alerts at 0 from start, and no scores without a baseline', async () => {
    const registry = new Registry();
    new MonitorMetrics({ registry, monitored: [monitored], alerts: [{ alert: 'FeatureDrift', severity: 'warning' }], source: empty });
    const text = await registry.metrics();
    for (const window of monitored.windows) expect(sample(text, `saegate_drift_window_tokens{${labels},window="${window}"}`)).toBe(0);
    expect(sample(text, `saegate_monitor_rows_total{${labels}}`)).toBe(0);
    for (const reason of MONITOR_DROP_REASONS) expect(sample(text, `saegate_monitor_rows_dropped_total{${labels},reason="${reason}"}`)).toBe(0);
    expect(sample(text, `saegate_sae_l0_count{${labels}}`)).toBe(0);
    expect(sample(text, `saegate_sae_fvu_count{${labels}}`)).toBe(0);
    expect(sample(text, 'saegate_alert_firing{alert="FeatureDrift",severity="warning"}')).toBe(0);
    expect(sample(text, `saegate_baseline_loaded{${labels}}`)).toBe(0);
    expect(text).not.toMatch(/^saegate_drift_score\{/m);
    expect(text).not.toMatch(/^saegate_drift_threshold\{/m);
    expect(text).not.toMatch(/^saegate_baseline_info\{/m);
  });

  it('exports the monitor’s scores, thresholds, flagged features and watched-feature rates for each window', async () => {
    let now = 1_000_000;
    const source = new InMemoryMonitorSource({ monitored, dSae, baselineDocuments: 600, windows, alertWindows: { DriftHigh: '1m' }, now: () => now });
    const registry = new Registry();
    const metrics = new MonitorMetrics({ registry, monitored: [monitored], alerts: [{ alert: 'DriftHigh', severity: 'critical' }], source });
    source.observeWith(metrics.rowObserver('res-0', HOOK));
    source.feed(40, 77);
    // A minute later the 1m window holds only shifted traffic; the 5m window holds both.
    now += 60_000;
    source.feed(40, 78, { boostFeatures: 8, boostFactor: 6, fvuOffset: 0.2 });
    const dropped = new SyntheticTraffic({ dSae, seed: 79 }).document();
    const droppedRows = dropped.rows;
    source.drop(dropped, 'backlog');
    source.assess();
    const text = await registry.metrics();
    const calibrator = source.calibrator;
    if (calibrator === null) throw new Error('baseline expected');
    for (const window of monitored.windows) {
      const snapshot = source.stats.snapshot(window);
      const expected = assessWindow(snapshot, calibrator);
      const on = `${labels},window="${window}"`;
      expect(sample(text, `saegate_drift_window_tokens{${on}}`)).toBe(snapshot.tokens);
      expect(sample(text, `saegate_drift_score{model="stories260K",sae="res-0",hook="${HOOK}",statistic="jsd",window="${window}"}`)).toBeCloseTo(expected.scores.jsd, 12);
      expect(sample(text, `saegate_drift_score{model="stories260K",sae="res-0",hook="${HOOK}",statistic="mean_fvu",window="${window}"}`)).toBeCloseTo(expected.scores.meanFvu, 12);
      expect(sample(text, `saegate_drift_threshold{model="stories260K",sae="res-0",hook="${HOOK}",statistic="fvu_psi",window="${window}"}`)).toBeCloseTo(expected.thresholds.fvuPsi, 12);
      expect(sample(text, `saegate_drift_flagged_features{${on}}`)).toBe(expected.features.flagged);
      // Feature 0 is boosted: it fires, so its rate and mean are the window's own ratios.
      const rate = sample(text, `saegate_feature_firing_rate{model="stories260K",sae="res-0",hook="${HOOK}",feature="0",label="most common",window="${window}"}`);
      expect(rate).toBeCloseTo(snapshot.firingCounts[0] / snapshot.tokens, 12);
      const mean = sample(text, `saegate_feature_mean_activation{model="stories260K",sae="res-0",hook="${HOOK}",feature="0",label="most common",window="${window}"}`);
      expect(mean).toBeCloseTo(snapshot.activationSums[0] / snapshot.firingCounts[0], 6);
    }
    // No projection configured: no projection statistic.
    expect(text).not.toContain('statistic="projection_psi"');
    // The shifted minute is far above every threshold; the alert follows the source.
    expect(sample(text, `saegate_drift_score{model="stories260K",sae="res-0",hook="${HOOK}",statistic="fvu_psi",window="1m"}`)).toBeGreaterThan(
      sample(text, `saegate_drift_threshold{model="stories260K",sae="res-0",hook="${HOOK}",statistic="fvu_psi",window="1m"}`) ?? Infinity,
    );
    expect(sample(text, 'saegate_alert_firing{alert="DriftHigh",severity="critical"}')).toBe(1);
    expect(sample(text, `saegate_baseline_loaded{${labels}}`)).toBe(1);
    expect(sample(text, `saegate_baseline_info{${labels},baseline_id="synthetic-baseline",tokens="${calibrator.reference.totals.tokens}"}`)).toBe(1);
    // Rows: every counted row observed once in each histogram; the dropped batch only in the counters.
    const counted = source.stats.snapshot('5m').tokens;
    expect(sample(text, `saegate_sae_l0_count{${labels}}`)).toBe(counted);
    expect(sample(text, `saegate_sae_fvu_count{${labels}}`)).toBe(counted);
    expect(sample(text, `saegate_monitor_rows_total{${labels}}`)).toBe(counted + droppedRows);
    expect(sample(text, `saegate_monitor_rows_dropped_total{${labels},reason="backlog"}`)).toBe(droppedRows);
  });

  it('refuses more watched features than the cap at start, naming the count and the cap', () => {
    const many: MonitoredSae = { ...monitored, watched: Array.from({ length: 5 }, (_, feature) => ({ feature, label: `f${feature}` })) };
    expectSaegateError(
      () => new MonitorMetrics({ registry: new Registry(), monitored: [many], source: empty, maxWatchedFeatures: 4 }),
      'SAEGATE_ERR_MONITOR_ARGUMENT',
      '5 watched features exceed maxWatchedFeatures (4)',
    );
    // At the cap it starts.
    expect(() => new MonitorMetrics({ registry: new Registry(), monitored: [many], source: empty, maxWatchedFeatures: 5 })).not.toThrow();
    expectSaegateError(
      () => new MonitorMetrics({ registry: new Registry(), monitored: [monitored, monitored], source: empty }),
      'SAEGATE_ERR_MONITOR_ARGUMENT',
      `SAE 'res-0' at hook '${HOOK}' is monitored twice`,
    );
    expectSaegateError(() => new MonitorMetrics({ registry: new Registry(), monitored: [monitored], source: empty }).rowObserver('res-1', HOOK), 'SAEGATE_ERR_MONITOR_ARGUMENT', "SAE 'res-1'");
  });

  it('registers exactly the metrics docs/metrics.md lists under "Drift monitor", and unregisters them all', async () => {
    const registry = new Registry();
    const metrics = new MonitorMetrics({ registry, monitored: [monitored], source: empty });
    const exported = registry.getMetricsAsArray().map((m) => m.name);
    const documented = documentedMetrics('Drift monitor');
    expect(documented.size).toBe(14);
    expect([...exported].sort()).toEqual([...documented].sort());
    expect([...exported].sort()).toEqual([...MONITOR_METRIC_NAMES].sort());
    metrics.unregister();
    expect(registry.getMetricsAsArray()).toHaveLength(0);
  });
});
