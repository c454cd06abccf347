/**
 * Calibrated thresholds for the window-level drift scores. Every score's null distribution depends
 * strongly on the window's token count (a 200-token window's JSD against any baseline is large just
 * from sampling noise), so each threshold is derived for the window's size, from the baseline itself:
 *
 * 1. The token count n is rounded *down* to a log-spaced bucket, n_b = 2^(⌊log₂(n)·s⌋ / s) with
 *    s = `stepsPerDoubling` (default 4, so buckets are ≤ 19% apart). Null scores shrink as n grows,
 *    so calibrating at n_b ≤ n errs on the side of fewer false alarms. n_b is capped at
 *    `maxSampleFraction` (default ½) of the baseline's tokens, same direction.
 * 2. For each of `replicates` bootstrap replicates, baseline documents are drawn at random without
 *    replacement until their tokens reach n_b; the drawn documents play the window and the
 *    *remaining* documents the baseline, so the two are independent as a live window and the
 *    baseline are. Whole documents are drawn, so within-document correlation (a topic that fires
 *    the same features on every token) is in the null, as it is in real traffic.
 * 3. Each score's threshold is the ⌈(1 − α)(B + 1)⌉-th smallest of its B replicate scores: a
 *    window from the baseline's distribution exceeds it with probability ≤ α (up to the bucket
 *    rounding, which only lowers it). Like any Monte-Carlo test, that holds on average over the
 *    baseline and the replicates drawn: one baseline's thresholds give a rate scattered around α
 *    (docs/monitor.md, "How exact α is").
 * 4. The family-wise signal `any`, calibrated jointly from the same replicates (a max-statistic):
 *    a score x's rank is c(x) = #{replicates of that score < x}; a replicate's family statistic is
 *    the largest rank among its scores, M_b = max_s c_s(b). The family rank r* is one more than the
 *    (⌊α(B + 1)⌋)-th largest M_b, so at most α(B + 1) − 1 replicates reach it, and a window alarms on
 *    `any` when one of its scores reaches rank r*: P(any score alarms) ≤ α for the whole family,
 *    whatever the scores' correlation (less conservative than Bonferroni's α/m when they move
 *    together, as JSD, FVU PSI and mean FVU do). With one score this is exactly step 3. The `any`
 *    score is max_s c_s(x) / B, its threshold (r* − 1) / B.
 *
 * Thresholds are cached per bucket; the PRNG (src/common/random.ts) is seeded per bucket from
 * `seed`, so a bucket's thresholds do not depend on the order buckets were asked for. Cost per
 * bucket: B × (O(d_sae) for the JSD + the sampled documents' features).
 */
import { err } from '../common/errors.js';
import { SeededRandom } from '../common/random.js';
import { driftScores, type DriftScores } from './divergence.js';
import type { BaselineReference, DistributionSums } from './reference.js';

export interface CalibrationOptions {
  /** False-alarm rate per score for a window drawn from the baseline's distribution. Default 0.01. */
  readonly alpha?: number;
  /** Bootstrap replicates per token bucket; at least 1/α − 1. Default 400. */
  readonly replicates?: number;
  /** PRNG seed. Default 1. */
  readonly seed?: number;
  /** Token buckets per doubling of the window size. Default 4. */
  readonly stepsPerDoubling?: number;
  /** Largest share of the baseline's tokens a replicate window may take. Default 0.5. */
  readonly maxSampleFraction?: number;
}

/** Upper thresholds for each score at one token bucket; a score above its threshold is an alarm. */
export interface DriftThresholds {
  /** Token count the thresholds were calibrated at (the bucket, ≤ the window's tokens). */
  readonly tokens: number;
  /** True when the window was larger than `maxSampleFraction` of the baseline allows. */
  readonly capped: boolean;
  readonly jsd: number;
  readonly l0Psi: number;
  readonly fvuPsi: number;
  readonly meanFvu: number;
  readonly projectionPsi: number | null;
  /**
   * The family-wise threshold on the `any` score (max over scores of the share of replicates the
   * window's score exceeds): above it, the window alarms with probability ≤ α over all scores
   * together. See the file comment, step 4.
   */
  readonly any: number;
  /**
   * Per score, the value it must exceed to raise `any` (the r*-th smallest replicate, at or above
   * the score's own threshold); null for an absent projection.
   */
  readonly family: {
    readonly jsd: number;
    readonly l0Psi: number;
    readonly fvuPsi: number;
    readonly meanFvu: number;
    readonly projectionPsi: number | null;
  };
}

type ScoreName = 'jsd' | 'l0Psi' | 'fvuPsi' | 'meanFvu' | 'projectionPsi';
const SCORES: readonly ScoreName[] = ['jsd', 'l0Psi', 'fvuPsi', 'meanFvu', 'projectionPsi'];

export class DriftCalibrator {
  readonly alpha: number;
  readonly replicates: number;
  private readonly seed: number;
  private readonly stepsPerDoubling: number;
  private readonly maxTokens: number;
  private readonly cache = new Map<number, DriftThresholds>();
  /** Per bucket, each scored statistic's replicates sorted ascending (what `anyScore` ranks a window in). */
  private readonly sortedNulls = new Map<number, readonly (readonly [ScoreName, Float64Array])[]>();

  constructor(
    readonly reference: BaselineReference,
    options: CalibrationOptions = {},
  ) {
    this.alpha = options.alpha ?? 0.01;
    this.replicates = options.replicates ?? 400;
    this.seed = options.seed ?? 1;
    this.stepsPerDoubling = options.stepsPerDoubling ?? 4;
    const fraction = options.maxSampleFraction ?? 0.5;
    if (!(this.alpha > 0 && this.alpha < 1)) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `alpha must be in (0, 1), got ${this.alpha}`);
    if (!Number.isInteger(this.replicates) || this.replicates < Math.ceil(1 / this.alpha - 1)) {
      throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `replicates must be an integer ≥ 1/alpha − 1 = ${Math.ceil(1 / this.alpha - 1)}, got ${this.replicates}`);
    }
    if (!(this.stepsPerDoubling >= 1)) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `stepsPerDoubling must be ≥ 1, got ${this.stepsPerDoubling}`);
    if (!(fraction > 0 && fraction < 1)) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `maxSampleFraction must be in (0, 1), got ${fraction}`);
    if (reference.documents < 2) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `calibration needs a baseline of at least 2 documents, got ${reference.documents}`);
    this.maxTokens = Math.floor(reference.totals.tokens * fraction);
  }

  /** The token bucket a window of `tokens` tokens is calibrated at (≥ 1). */
  bucketOf(tokens: number): { bucket: number; tokens: number; capped: boolean } {
    const n = Math.max(1, Math.min(tokens, this.maxTokens));
    const bucket = Math.floor(Math.log2(n) * this.stepsPerDoubling + 1e-9);
    return { bucket, tokens: Math.max(1, Math.floor(2 ** (bucket / this.stepsPerDoubling))), capped: tokens > this.maxTokens };
  }

  /** Thresholds for a window of `tokens` tokens (computed once per bucket, then cached). */
  thresholds(tokens: number): DriftThresholds {
    const { bucket, tokens: bucketTokens, capped } = this.bucketOf(tokens);
    const cached = this.cache.get(bucket);
    if (cached !== undefined) return capped === cached.capped ? cached : { ...cached, capped };
    const nulls = this.nullScores(bucketTokens, bucket);
    const B = this.replicates;
    const scored = SCORES.filter((name) => name !== 'projectionPsi' || this.reference.totals.projectionHistogram !== null);
    // Ranks need each replicate's scores together, so the family rank is taken before sorting.
    const sorted = Object.fromEntries(scored.map((name) => [name, Float64Array.from(nulls[name]).sort()])) as Record<ScoreName, Float64Array>;
    const familyRank = this.familyRank(scored.map((name) => [nulls[name], sorted[name]] as const));
    const rank = Math.ceil((1 - this.alpha) * (B + 1)); // 1-based, ≤ B by the constructor check
    const pick = (name: ScoreName, at: number): number => sorted[name][Math.min(at, B) - 1];
    const projection = this.reference.totals.projectionHistogram !== null;
    const thresholds: DriftThresholds = {
      tokens: bucketTokens,
      capped,
      jsd: pick('jsd', rank),
      l0Psi: pick('l0Psi', rank),
      fvuPsi: pick('fvuPsi', rank),
      meanFvu: pick('meanFvu', rank),
      projectionPsi: projection ? pick('projectionPsi', rank) : null,
      any: (familyRank - 1) / B,
      family: {
        jsd: pick('jsd', familyRank),
        l0Psi: pick('l0Psi', familyRank),
        fvuPsi: pick('fvuPsi', familyRank),
        meanFvu: pick('meanFvu', familyRank),
        projectionPsi: projection ? pick('projectionPsi', familyRank) : null,
      },
    };
    this.cache.set(bucket, thresholds);
    this.sortedNulls.set(bucket, scored.map((name) => [name, sorted[name]] as const));
    return thresholds;
  }

  /**
   * The family-wise `any` score of a window of `scores.tokens` tokens: the largest share of its
   * bucket's replicates that one of the window's scores exceeds, in [0, 1]. Above
   * `thresholds(tokens).any` ⟺ some score is above its `family` threshold.
   */
  anyScore(scores: Readonly<Record<ScoreName, number | null>> & { readonly tokens: number }): number {
    this.thresholds(scores.tokens);
    const sorted = this.sortedNulls.get(this.bucketOf(scores.tokens).bucket)!;
    let most = 0;
    for (const [name, replicates] of sorted) {
      const x = scores[name];
      if (x !== null) most = Math.max(most, countBelow(replicates, x));
    }
    return most / this.replicates;
  }

  /**
   * r* (step 4 of the file comment): one more than the (⌊α(B + 1)⌋)-th largest M_b, so that
   * #{b : M_b ≥ r*} ≤ α(B + 1) − 1. `scores` holds, per scored statistic, its replicates in
   * replicate order and sorted ascending.
   */
  private familyRank(scores: readonly (readonly [Float64Array, Float64Array])[]): number {
    const B = this.replicates;
    const most = new Float64Array(B);
    for (const [replicates, sorted] of scores) {
      for (let b = 0; b < B; b++) most[b] = Math.max(most[b], countBelow(sorted, replicates[b]));
    }
    most.sort();
    // The constructor's B ≥ 1/α − 1 makes ⌊α(B + 1)⌋ ≥ 1 (floating error aside, hence the max).
    const allowed = Math.max(0, Math.floor(this.alpha * (B + 1) + 1e-9) - 1);
    return most[B - 1 - allowed] + 1;
  }

  /** Token buckets calibrated so far. */
  get cachedBuckets(): number {
    return this.cache.size;
  }

  /** The B bootstrap replicate scores at `tokens` tokens; see the file comment. */
  nullScores(tokens: number, bucket = 0): Record<ScoreName, Float64Array> {
    const ref = this.reference;
    const d = ref.dSae;
    const docs = ref.documents;
    const random = new SeededRandom((this.seed ^ Math.imul(bucket + 1, 0x9e3779b1)) >>> 0);
    const order = new Uint32Array(docs);
    for (let i = 0; i < docs; i++) order[i] = i;
    const totals = ref.totals;
    const l0Bins = totals.l0Histogram.length;
    const fvuBins = totals.fvuHistogram.length;
    const projectionBins = totals.projectionHistogram?.length ?? 0;
    // Reused across replicates: the sample's sums and the complement's.
    const sample = {
      firingCounts: new Float64Array(d),
      l0Histogram: new Float64Array(l0Bins),
      fvuHistogram: new Float64Array(fvuBins),
      projectionHistogram: projectionBins > 0 ? new Float64Array(projectionBins) : null,
    };
    const rest = {
      firingCounts: new Float64Array(d),
      l0Histogram: new Float64Array(l0Bins),
      fvuHistogram: new Float64Array(fvuBins),
      projectionHistogram: projectionBins > 0 ? new Float64Array(projectionBins) : null,
    };
    const out = Object.fromEntries(SCORES.map((name) => [name, new Float64Array(this.replicates)])) as Record<ScoreName, Float64Array>;
    for (let b = 0; b < this.replicates; b++) {
      sample.firingCounts.fill(0);
      sample.l0Histogram.fill(0);
      sample.fvuHistogram.fill(0);
      sample.projectionHistogram?.fill(0);
      let sampleTokens = 0;
      let sampleFvu = 0;
      // Partial Fisher–Yates: order[0..taken) is a uniform random sample without replacement.
      let taken = 0;
      while (sampleTokens < tokens && taken < docs - 1) {
        const j = taken + Math.floor(random.next() * (docs - taken));
        const doc = order[j];
        order[j] = order[taken];
        order[taken] = doc;
        taken++;
        sampleTokens += ref.docTokens[doc];
        sampleFvu += ref.docFvuSum[doc];
        for (let k = ref.docOffsets[doc]; k < ref.docOffsets[doc + 1]; k++) sample.firingCounts[ref.docFeatures[k]] += ref.docCounts[k];
        for (let k = 0; k < l0Bins; k++) sample.l0Histogram[k] += ref.docL0[doc * l0Bins + k];
        for (let k = 0; k < fvuBins; k++) sample.fvuHistogram[k] += ref.docFvu[doc * fvuBins + k];
        if (sample.projectionHistogram !== null && ref.docProjection !== null) {
          for (let k = 0; k < projectionBins; k++) sample.projectionHistogram[k] += ref.docProjection[doc * projectionBins + k];
        }
      }
      subtract(rest.firingCounts, totals.firingCounts, sample.firingCounts);
      subtract(rest.l0Histogram, totals.l0Histogram, sample.l0Histogram);
      subtract(rest.fvuHistogram, totals.fvuHistogram, sample.fvuHistogram);
      if (rest.projectionHistogram !== null && totals.projectionHistogram !== null && sample.projectionHistogram !== null) {
        subtract(rest.projectionHistogram, totals.projectionHistogram, sample.projectionHistogram);
      }
      const window: DistributionSums = { ...sample, tokens: sampleTokens, fvuSum: sampleFvu };
      const complement: DistributionSums = { ...rest, tokens: totals.tokens - sampleTokens, fvuSum: totals.fvuSum - sampleFvu };
      const scores: DriftScores = driftScores(window, complement);
      out.jsd[b] = scores.jsd;
      out.l0Psi[b] = scores.l0Psi;
      out.fvuPsi[b] = scores.fvuPsi;
      out.meanFvu[b] = scores.meanFvu;
      out.projectionPsi[b] = scores.projectionPsi ?? 0;
    }
    return out;
  }
}

/** Number of entries of ascending `sorted` strictly below `x` (lower bound). */
function countBelow(sorted: Float64Array, x: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function subtract(out: Float64Array, a: Float64Array, b: Float64Array): void {
  for (let i = 0; i < out.length; i++) out[i] = a[i] - b[i];
}
