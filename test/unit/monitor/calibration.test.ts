/**
 * The monitor's statistical guarantees on synthetic traffic from a known distribution: windows
 * drawn from the baseline's distribution exceed each calibrated threshold at about α, shifted
 * windows nearly always, and BH flags few features in null windows but finds boosted ones.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { BaselineRecorder } from '../../../src/monitor/baseline-recorder.js';
import { DriftCalibrator } from '../../../src/monitor/calibration.js';
import { assessWindow, type DriftAssessment } from '../../../src/monitor/drift.js';
import { BaselineReference } from '../../../src/monitor/reference.js';
import { WindowedStats } from '../../../src/monitor/windows.js';
import { SyntheticTraffic, type SyntheticShift } from '../../helpers/monitor-synthetic.js';
import { expectSaegateError } from '../../helpers/errors.js';

const dSae = 256;
const projectionEdges = [-1, -0.5, -0.25, 0, 0.25, 0.5, 1];
const identity = { model: 'm', sae: { id: 's', hash: 'h' }, hook: 'blocks.0.hook_resid_post', saegateVersion: '0' };
let calibrator: DriftCalibrator;

beforeAll(() => {
  const traffic = new SyntheticTraffic({ dSae, seed: 1 });
  const recorder = new BaselineRecorder({ dSae, projectionEdges });
  for (let d = 0; d < 3000; d++) recorder.addDocument(traffic.document());
  calibrator = new DriftCalibrator(new BaselineReference(recorder.toBaseline(identity)), { alpha: 0.01, replicates: 400, seed: 5 });
});

/** `count` windows of 30 documents each, through a real WindowedStats, assessed. */
function windows(count: number, seed: number, shift?: SyntheticShift): DriftAssessment[] {
  const traffic = new SyntheticTraffic({ dSae, seed, shift });
  return Array.from({ length: count }, () => {
    const stats = new WindowedStats({ dSae, windows: [{ name: 'w', durationMs: 60_000, buckets: 6 }], projectionEdges, now: () => 0 });
    for (let d = 0; d < 30; d++) stats.ingest(traffic.document());
    return assessWindow(stats.snapshot('w'), calibrator, { q: 0.05 });
  });
}

const scores = ['jsd', 'l0Psi', 'fvuPsi', 'meanFvu', 'projectionPsi'] as const;

describe('calibrated drift thresholds', () => {
  it('are exceeded by at most ~α of windows drawn from the baseline distribution (≤ 3% of 300 at α = 1%)', () => {
    const null300 = windows(300, 1001);
    for (const score of scores) {
      const alarms = null300.filter((a) => a.exceeded[score]).length;
      expect(alarms, score).toBeLessThanOrEqual(9);
    }
    // And the thresholds are not vacuous: they sit inside the null scores' range.
    const maxJsd = Math.max(...null300.map((a) => a.scores.jsd));
    expect(null300[0].thresholds.jsd).toBeLessThan(maxJsd * 2);
    expect(null300[0].thresholds.jsd).toBeGreaterThan(0);
  });

  it.each([
    ['jsd', { boostFeatures: 16, boostFactor: 2 }],
    ['l0Psi', { l0Offset: 6 }],
    ['fvuPsi', { fvuOffset: 0.03 }],
    ['meanFvu', { fvuOffset: 0.03 }],
    ['projectionPsi', { projectionOffset: 0.2 }],
  ] as const)('flag %s in nearly every shifted window', (score, shift) => {
    const shifted = windows(50, 2002, shift);
    expect(shifted.filter((a) => a.exceeded[score]).length).toBeGreaterThanOrEqual(48);
  });

  it('are cached per log-spaced token bucket, rounded down, and conservative beyond half the baseline', () => {
    const a = calibrator.thresholds(1800);
    expect(a.tokens).toBeLessThanOrEqual(1800);
    expect(a.tokens).toBeGreaterThan(1800 / 2 ** 0.25);
    expect(calibrator.thresholds(a.tokens + 1)).toEqual(a); // same bucket, from the cache
    const huge = calibrator.thresholds(10_000_000);
    expect(huge.capped).toBe(true);
    expect(huge.tokens).toBeLessThanOrEqual(calibrator.reference.totals.tokens / 2);
    // Null scores shrink with window size, so a bigger bucket has a lower JSD threshold.
    expect(huge.jsd).toBeLessThan(a.jsd);
  });

  it('give a family-wise any signal that null windows raise in at most ~α of windows, fewer than the scores each at α together', () => {
    const null300 = windows(300, 1001);
    const anyAlarms = null300.filter((a) => a.exceeded.any).length;
    const unionAlarms = null300.filter((a) => scores.some((s) => a.exceeded[s])).length;
    expect(anyAlarms).toBeLessThanOrEqual(9);
    expect(anyAlarms).toBeLessThanOrEqual(unionAlarms);
    // Scores are scaled to 1 at their replicates' 90th percentile, so the family threshold lies
    // beyond 1 (a 99th percentile of the largest of them).
    expect(null300[0].thresholds.any).toBeGreaterThan(1);
    // One threshold for all scores sits further out than each score's own, so a shift that JSD
    // alone catches in ≥ 48 of 50 windows (above) costs any a little power.
    const shifted = windows(50, 2002, { boostFeatures: 16, boostFactor: 2 });
    expect(shifted.filter((a) => a.exceeded.any).length).toBeGreaterThanOrEqual(45);
  });

  it('hold the family-wise α on fresh replicates of the null, where the five per-score thresholds together do not', () => {
    // Fresh bootstrap windows (another seed) are exact draws from the null the thresholds were
    // calibrated on, so their rates test the rank arithmetic itself at a tight binomial margin.
    const fine = new DriftCalibrator(calibrator.reference, { alpha: 0.01, replicates: 2000, seed: 9 });
    const tokens = 2048;
    const t = fine.thresholds(tokens);
    const fresh = fine.nullScores(t.tokens, 12345);
    const n = fresh.jsd.length;
    let family = 0;
    let union = 0;
    for (let b = 0; b < n; b++) {
      const window = { tokens, jsd: fresh.jsd[b], l0Psi: fresh.l0Psi[b], fvuPsi: fresh.fvuPsi[b], meanFvu: fresh.meanFvu[b], projectionPsi: fresh.projectionPsi[b] };
      if (fine.anyScore(window) > t.any) family++;
      if (scores.some((s) => window[s] > (t[s] ?? Infinity))) union++;
    }
    // α = 1 % of 2000: expected 20 (sd ≈ 4.5 from the fresh draws, ≈ 4.5 more from the thresholds' own replicates).
    expect(family).toBeLessThanOrEqual(40);
    expect(family).toBeGreaterThanOrEqual(6);
    // Five scores at α each: well above α together (they are correlated, so below 5α).
    expect(union).toBeGreaterThan(family);
  });

  it('refuses an α its replicates cannot resolve', () => {
    expectSaegateError(() => new DriftCalibrator(calibrator.reference, { alpha: 0.001, replicates: 400 }), 'SAEGATE_ERR_MONITOR_ARGUMENT', 'replicates must be an integer ≥ 1/alpha − 1 = 999');
  });
});

describe('per-feature rate tests with Benjamini–Hochberg', () => {
  it('flag a feature in few null windows and find boosted features in shifted ones', () => {
    const null300 = windows(300, 3003);
    const windowsWithFalseFlags = null300.filter((a) => a.features.flagged > 0).length;
    // BH at q = 0.05 under the global null: P(any flag) ≤ 0.05, i.e. ≤ 15 of 300 plus slack.
    expect(windowsWithFalseFlags).toBeLessThanOrEqual(24);
    const shifted = windows(20, 4004, { boostFeatures: 16, boostFactor: 3 });
    let truePositives = 0;
    let falsePositives = 0;
    for (const a of shifted) {
      for (const f of a.features.top) {
        if (!f.flagged) continue;
        if (f.feature < 16) truePositives++;
        else falsePositives++;
      }
      expect(a.features.top[0].feature).toBeLessThan(16);
      expect(a.features.top[0].rateRatio).toBeGreaterThan(1.2); // L0 draws without repeats damp a 3× boost
    }
    expect(truePositives / (16 * 20)).toBeGreaterThan(0.8);
    // Boosting 16 features lowers every other feature's share a little; those are real changes,
    // yet BH keeps them a small part of the discoveries.
    expect(falsePositives / Math.max(1, truePositives + falsePositives)).toBeLessThan(0.5);
  });
});
