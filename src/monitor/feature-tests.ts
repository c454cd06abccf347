/**
 * Per-feature firing-rate tests of a window against the baseline, with Benjamini–Hochberg control
 * of the false discovery rate across all d_sae features.
 *
 * Feature f fired k times in a window of n tokens; the baseline rate is r = (C + ½) / (N + 1) (C
 * firings in N baseline tokens; the half count keeps a feature never seen in the baseline testable).
 * Under the null, k ~ quasi-Poisson with mean λ = n·r and variance φ·λ, φ the feature's dispersion
 * across baseline documents (reference.ts). The test scales both by 1/φ and uses Poisson tails:
 * p = min(1, 2·min(P(X ≥ k/φ), P(X ≤ k/φ))), X ~ Poisson(λ/φ). Two-sided: a feature that stops
 * firing is drift too.
 */
import { err } from '../common/errors.js';
import { poissonLowerTail, poissonUpperTail } from './poisson.js';
import type { BaselineReference } from './reference.js';

/** Benjamini–Hochberg result over m p-values. */
export interface BhResult {
  /** Number of hypotheses rejected (discoveries). */
  readonly rejected: number;
  /** Largest p-value rejected; −1 when none is. Every p ≤ this is a discovery. */
  readonly pThreshold: number;
  /** BH-adjusted p-values (q-values), same order as the input. */
  readonly qValues: Float64Array;
}

/**
 * Benjamini–Hochberg at level `q` over `pValues` (m = its length): rejects the k smallest, k the
 * largest rank with p₍ₖ₎ ≤ k·q/m. Controls the FDR at q for independent or positively dependent
 * tests. p-values equal to 1 are not sorted (they can never be rejected and their q-value is 1).
 */
export function benjaminiHochberg(pValues: Float64Array, q: number): BhResult {
  if (!(q > 0 && q < 1)) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `q must be in (0, 1), got ${q}`);
  const m = pValues.length;
  const qValues = new Float64Array(m).fill(1);
  const candidates: number[] = [];
  for (let i = 0; i < m; i++) if (pValues[i] < 1) candidates.push(i);
  candidates.sort((a, b) => pValues[a] - pValues[b]);
  let rejected = 0;
  let pThreshold = -1;
  for (let rank = candidates.length; rank >= 1; rank--) {
    const p = pValues[candidates[rank - 1]];
    if (p <= (rank * q) / m) {
      rejected = rank;
      pThreshold = p;
      break;
    }
  }
  // q₍ₖ₎ = min over j ≥ k of p₍ⱼ₎·m/j, capped at 1 (ranks past the candidates contribute ≥ 1).
  let running = 1;
  for (let rank = candidates.length; rank >= 1; rank--) {
    const i = candidates[rank - 1];
    running = Math.min(running, (pValues[i] * m) / rank);
    qValues[i] = running;
  }
  return { rejected, pThreshold, qValues };
}

/** One feature's test result. */
export interface FeatureDrift {
  readonly feature: number;
  /** Firings in the window. */
  readonly windowFirings: number;
  /** Firings per token in the window. */
  readonly windowRate: number;
  /** Smoothed baseline firings per token, (C + ½)/(N + 1). */
  readonly baselineRate: number;
  /** windowRate / baselineRate. */
  readonly rateRatio: number;
  readonly pValue: number;
  /** BH-adjusted p-value. */
  readonly qValue: number;
  /** qValue ≤ q: a discovery. */
  readonly flagged: boolean;
}

export interface FeatureTestOptions {
  /** FDR level for Benjamini–Hochberg. Default 0.05. */
  readonly q?: number;
  /** Most drifting features reported (smallest p first). Default 20. */
  readonly top?: number;
}

export interface FeatureTestResult {
  /** Features tested (d_sae). */
  readonly tested: number;
  /** Features flagged by BH at q. */
  readonly flagged: number;
  /** The `top` features by p-value (ties: larger |log rate ratio| first); flagged ones first by construction. */
  readonly top: readonly FeatureDrift[];
  /** Every feature's p-value, by feature index. */
  readonly pValues: Float64Array;
}

/** Two-sided quasi-Poisson p-value of `k` firings in `tokens` tokens; see the file comment. */
export function firingRatePValue(k: number, tokens: number, baselineRate: number, dispersion: number): number {
  const lambda = (tokens * baselineRate) / dispersion;
  const scaled = k / dispersion;
  // P(X ≥ k) + P(X ≤ k) ≥ 1, so at most one tail is below ½: the one on k's side of λ is computed
  // first, and when it is below ½ it is the minimum and the other tail is not needed (half the
  // incomplete-gamma evaluations over d_sae features).
  const above = scaled >= lambda;
  const first = above ? poissonUpperTail(scaled, lambda) : poissonLowerTail(scaled, lambda);
  if (first < 0.5) return 2 * first;
  const second = above ? poissonLowerTail(scaled, lambda) : poissonUpperTail(scaled, lambda);
  return Math.min(1, 2 * Math.min(first, second));
}

/** Tests every feature's firing rate in `window` against `reference`; BH over all d_sae features. */
export function featureRateTests(
  window: { readonly tokens: number; readonly firingCounts: Float64Array },
  reference: BaselineReference,
  options: FeatureTestOptions = {},
): FeatureTestResult {
  const q = options.q ?? 0.05;
  const top = options.top ?? 20;
  const d = reference.dSae;
  if (window.firingCounts.length !== d) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `window has ${window.firingCounts.length} features, baseline d_sae is ${d}`);
  const n = window.tokens;
  const baselineTokens = reference.totals.tokens;
  const pValues = new Float64Array(d).fill(1);
  if (n > 0) {
    for (let f = 0; f < d; f++) {
      const rate = (reference.totals.firingCounts[f] + 0.5) / (baselineTokens + 1);
      pValues[f] = firingRatePValue(window.firingCounts[f], n, rate, reference.dispersion[f]);
    }
  }
  const bh = benjaminiHochberg(pValues, q);
  const describe = (f: number): FeatureDrift => {
    const baselineRate = (reference.totals.firingCounts[f] + 0.5) / (baselineTokens + 1);
    const windowRate = n === 0 ? 0 : window.firingCounts[f] / n;
    return {
      feature: f,
      windowFirings: window.firingCounts[f],
      windowRate,
      baselineRate,
      rateRatio: windowRate / baselineRate,
      pValue: pValues[f],
      qValue: bh.qValues[f],
      flagged: bh.qValues[f] <= q,
    };
  };
  // Partial selection: only features with p < 1 can rank, by (p, −|log ratio|, feature), a total
  // order; the best `top` are kept in order by insertion, and only they are described.
  const rateRatio = (f: number): number => (n === 0 ? 0 : window.firingCounts[f] / n) / ((reference.totals.firingCounts[f] + 0.5) / (baselineTokens + 1));
  const before = (a: number, b: number): boolean =>
    (pValues[a] - pValues[b] || Math.abs(Math.log(rateRatio(b))) - Math.abs(Math.log(rateRatio(a))) || a - b) < 0;
  const best: number[] = [];
  for (let f = 0; f < d; f++) {
    if (!(pValues[f] < 1) || top <= 0) continue;
    if (best.length === top && !before(f, best[top - 1])) continue;
    let at = Math.min(best.length, top - 1);
    if (best.length < top) best.push(f);
    while (at > 0 && before(f, best[at - 1])) {
      best[at] = best[at - 1];
      at--;
    }
    best[at] = f;
  }
  return { tested: d, flagged: bh.rejected, top: best.map(describe), pValues };
}
