/**
 * One call that judges a window: its drift scores against the baseline, the calibrated thresholds
 * at its size, which scores exceed them, and the per-feature rate tests with BH. The metrics and
 * policy layers build on this; it does no I/O.
 */
import { err } from '../common/errors.js';
import type { DriftCalibrator, DriftThresholds } from './calibration.js';
import { driftScores, type DriftScores } from './divergence.js';
import { featureRateTests, type FeatureTestOptions, type FeatureTestResult } from './feature-tests.js';
import type { DistributionSums } from './reference.js';

export interface DriftAssessment {
  readonly scores: DriftScores;
  readonly thresholds: DriftThresholds;
  /** Per score, whether it is above its threshold (false for an empty window). */
  readonly exceeded: {
    readonly jsd: boolean;
    readonly l0Psi: boolean;
    readonly fvuPsi: boolean;
    readonly meanFvu: boolean;
    readonly projectionPsi: boolean;
    /** Whether the family-wise `any` score is above its threshold: P ≤ α over all scores together. */
    readonly any: boolean;
  };
  readonly features: FeatureTestResult;
}

/**
 * Scores `window` (e.g. a `WindowSnapshot`, on the baseline's bins) against the calibrator's
 * baseline. Throws SAEGATE_ERR_MONITOR_ARGUMENT when the window's width or histogram bins differ
 * from the baseline's (checkCompatible catches that at load time with a clearer message).
 */
export function assessWindow(window: DistributionSums, calibrator: DriftCalibrator, featureOptions: FeatureTestOptions = {}): DriftAssessment {
  const reference = calibrator.reference;
  const totals = reference.totals;
  if (window.firingCounts.length !== reference.dSae) {
    throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `window has ${window.firingCounts.length} features, baseline d_sae is ${reference.dSae}`);
  }
  if (window.l0Histogram.length !== totals.l0Histogram.length || window.fvuHistogram.length !== totals.fvuHistogram.length) {
    throw err('SAEGATE_ERR_MONITOR_ARGUMENT', 'window histograms have other bins than the baseline');
  }
  const pairwise = driftScores(window, totals);
  const familyScore = calibrator.anyScore(pairwise);
  const scores: DriftScores = { ...pairwise, any: familyScore };
  const thresholds = calibrator.thresholds(window.tokens);
  const live = window.tokens > 0;
  return {
    scores,
    thresholds,
    exceeded: {
      jsd: live && scores.jsd > thresholds.jsd,
      l0Psi: live && scores.l0Psi > thresholds.l0Psi,
      fvuPsi: live && scores.fvuPsi > thresholds.fvuPsi,
      meanFvu: live && scores.meanFvu > thresholds.meanFvu,
      projectionPsi: live && scores.projectionPsi !== null && thresholds.projectionPsi !== null && scores.projectionPsi > thresholds.projectionPsi,
      any: live && familyScore > thresholds.any,
    },
    features: featureRateTests(window, reference, featureOptions),
  };
}

