import { describe, expect, it } from 'vitest';
import { monitorKey, type MonitorMetricsSource, type MonitoredSaeReading } from '../../../../src/monitor/metrics.js';
import { monitorDriftSource } from '../../../../src/proxy/live/drift.js';

function reading(windows: MonitoredSaeReading['windows']): MonitoredSaeReading {
  return { baseline: null, rows: 0, rowsDropped: {} as MonitoredSaeReading['rowsDropped'], windows };
}

const scores = (jsd: number) => ({ tokens: 100, jsd, l0Psi: 9, fvuPsi: 9, meanFvu: 9, projectionPsi: null, any: 1 });
const thresholds = (jsd: number) => ({ tokens: 100, capped: false, jsd, l0Psi: 1, fvuPsi: 1, meanFvu: 1, projectionPsi: 1, any: 0.99, family: { jsd, l0Psi: 1, fvuPsi: 1, meanFvu: 1, projectionPsi: 1 } });

describe('monitorDriftSource', () => {
  it('charts each SAE window\'s JSD with its threshold, skips windows without a baseline, and lists firing alerts', () => {
    const source: MonitorMetricsSource = {
      readings: () =>
        new Map([
          ['stories:blocks.2.hook_resid_post', reading({
            '1m': { tokens: 100, watchedFirings: [], watchedActivationSums: [], drift: { scores: scores(0.2), thresholds: thresholds(0.05), flaggedFeatures: 0 } },
            '10m': { tokens: 100, watchedFirings: [], watchedActivationSums: [], drift: null },
          })],
        ]),
      firingAlerts: () => new Set(['drift-b', 'drift-a']),
    };
    expect(monitorDriftSource(source, () => 7).snapshot()).toEqual({
      atMs: 7,
      series: [{ name: 'stories:blocks.2.hook_resid_post 1m JSD', value: 0.2, threshold: 0.05 }],
      alerts: ['drift-a', 'drift-b'],
    });
  });

  it('names a series by SAE and hook with a space between them, not the key\'s NUL separator', () => {
    const window = { tokens: 100, watchedFirings: [], watchedActivationSums: [], drift: { scores: scores(0.2), thresholds: thresholds(0.05), flaggedFeatures: 0 } };
    const source: MonitorMetricsSource = { readings: () => new Map([[monitorKey('demo', 'blocks.2.hook_resid_post'), reading({ '1m': window })]]), firingAlerts: () => new Set() };
    expect(monitorDriftSource(source, () => 7).snapshot().series.map((s) => s.name)).toEqual(['demo blocks.2.hook_resid_post 1m JSD']);
  });
});
