/**
 * The window-level drift scores, each a function of two `DistributionSums` (a window and the
 * baseline). Formulas and smoothing are in docs/monitor.md; thresholds come from calibration.ts.
 */
import type { DistributionSums } from './reference.js';

/**
 * Pseudo-count added to every feature's firing count before normalising, in both distributions.
 * JSD is finite without it (the mixture is positive wherever either side is); it keeps every log
 * argument positive and makes a feature neither side saw contribute exactly nothing.
 */
export const JSD_PSEUDO_COUNT = 0.01;

/** Pseudo-count added to every histogram bin before a PSI, so an empty bin gives a finite log. */
export const PSI_PSEUDO_COUNT = 0.5;

/**
 * Jensen–Shannon divergence (bits, in [0, 1]) between the feature-firing distributions
 * pᵢ = (aᵢ + ε) / (Σa + ε·d) and qᵢ = (bᵢ + ε) / (Σb + ε·d), ε = `JSD_PSEUDO_COUNT`:
 * JSD = ½ Σ pᵢ log₂(pᵢ/mᵢ) + ½ Σ qᵢ log₂(qᵢ/mᵢ), m = (p + q)/2. O(d); 0 when either side is empty.
 */
export function firingJsd(a: Float64Array, b: Float64Array): number {
  const d = a.length;
  let totalA = 0;
  let totalB = 0;
  for (let i = 0; i < d; i++) {
    totalA += a[i];
    totalB += b[i];
  }
  if (totalA === 0 || totalB === 0) return 0;
  const eps = JSD_PSEUDO_COUNT;
  const za = 1 / (totalA + eps * d);
  const zb = 1 / (totalB + eps * d);
  let sum = 0;
  for (let i = 0; i < d; i++) {
    const p = (a[i] + eps) * za;
    const q = (b[i] + eps) * zb;
    const m = 0.5 * (p + q);
    sum += p * Math.log(p / m) + q * Math.log(q / m);
  }
  // Rounding can leave a tiny negative sum for identical distributions.
  return Math.max(0, (0.5 * sum) / Math.LN2);
}

/**
 * Population stability index between two histograms on the same bins:
 * PSI = Σ (aᵢ − bᵢ) ln(aᵢ / bᵢ) over proportions aᵢ = (countᵢ + ½) / (N + ½·k) (likewise b), the
 * sum and k over the bins that are non-empty on at least one side. A bin empty on both sides
 * carries no evidence; smoothing it anyway would make the score a function of the two totals alone
 * (with every row in one bin, as a TopK SAE's L0 histogram has, PSI fell by ~6·10⁻⁴ per window
 * token at 256 tokens, so its calibrated threshold measured window sizes, not drift).
 * 0 when either side is empty. Rule of thumb (uncalibrated): < 0.1 stable, > 0.25 shifted.
 */
export function psi(a: Float64Array, b: Float64Array): number {
  const bins = a.length;
  let totalA = 0;
  let totalB = 0;
  let used = 0;
  for (let i = 0; i < bins; i++) {
    totalA += a[i];
    totalB += b[i];
    if (a[i] > 0 || b[i] > 0) used++;
  }
  // One bin in use: both proportions are 1 (computed, they can differ by rounding, which would
  // score ~1e-32 and exceed a calibrated threshold of 0).
  if (totalA === 0 || totalB === 0 || used < 2) return 0;
  const eps = PSI_PSEUDO_COUNT;
  const za = 1 / (totalA + eps * used);
  const zb = 1 / (totalB + eps * used);
  let sum = 0;
  for (let i = 0; i < bins; i++) {
    if (a[i] === 0 && b[i] === 0) continue;
    const p = (a[i] + eps) * za;
    const q = (b[i] + eps) * zb;
    sum += (p - q) * Math.log(p / q);
  }
  // Rounding can leave a tiny negative sum for identical distributions.
  return Math.max(0, sum);
}

/** The window-level scores; all 0 for an empty window. */
export interface DriftScores {
  /** Tokens in the window. */
  readonly tokens: number;
  /** JSD (bits) of feature firing distributions, window vs baseline. */
  readonly jsd: number;
  /** PSI of the L0 histogram. */
  readonly l0Psi: number;
  /** PSI of the FVU histogram. */
  readonly fvuPsi: number;
  /** Mean FVU of the window (an out-of-distribution signal: the SAE reconstructs unfamiliar input worse). */
  readonly meanFvu: number;
  /** PSI of the projection histogram; null when either side has none. */
  readonly projectionPsi: number | null;
  /**
   * The family-wise score over all of the above (calibration.ts, `anyScore`): it needs the
   * calibration's replicates, so `driftScores` leaves it null and `assessWindow` fills it in.
   */
  readonly any: number | null;
}

/** Scores `window` against `reference` (both on the same bins). */
export function driftScores(window: DistributionSums, reference: DistributionSums): DriftScores {
  return {
    tokens: window.tokens,
    jsd: firingJsd(window.firingCounts, reference.firingCounts),
    l0Psi: psi(window.l0Histogram, reference.l0Histogram),
    fvuPsi: psi(window.fvuHistogram, reference.fvuHistogram),
    meanFvu: window.tokens === 0 ? 0 : window.fvuSum / window.tokens,
    projectionPsi:
      window.projectionHistogram === null || reference.projectionHistogram === null ? null : psi(window.projectionHistogram, reference.projectionHistogram),
    any: null,
  };
}
