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
 *    each score is put on a common scale, z_s = (x_s − median_s)/(p90_s − median_s) (median and 90th
 *    percentile of its B replicates), the window's `any` is the largest, max_s z_s, and its
 *    threshold is step 3's rank of the B replicates' own max_s z_s. So P(any alarm) ≤ α over all
 *    scores together, whatever their correlation: less conservative than Bonferroni's α/m when
 *    they move together, as JSD, FVU PSI and mean FVU do; with one score it is step 3 exactly.
 *    - The scale uses inner quantiles on purpose: a replicate in the tail, where the alarm is
 *      decided, cannot move them, so the window and the replicates stay exchangeable. Scaling to
 *      each score's own α threshold (its 99th percentile) instead let the tail replicates set the
 *      scale they were then judged on: on the stories260K baseline, fresh null draws crossed that
 *      family threshold 1.34 % of the time at α = 1 % (the per-score ones 1.01–1.08 %).
 *    - A max of *ranks* instead of scaled scores ties at the top (a window beyond every replicate
 *      of one score ties with the replicates that top the others), which at B = 400 and five
 *      scores can never reach α = 1 %. The scale is continuous, so a far-off window stays far off.
 *    - A score with no spread up to its 90th percentile falls back to its α threshold as the
 *      upper point, and one with none up to that (L0 PSI of a TopK SAE, 0 in every replicate)
 *      counts +∞ above its threshold and −∞ at or below it.
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
   * The family-wise threshold on the `any` score (the largest of the window's scores, each scaled
   * to 0 at its replicates' median and 1 at their 90th percentile): above it, the window alarms
   * with probability ≤ α over all scores together (file comment, step 4).
   */
  readonly any: number;
}

/** How one score is put on the family's common scale: z = (x − median)/(upper − median). */
interface FamilyScale {
  readonly name: ScoreName;
  readonly median: number;
  /** The replicates' 90th percentile, or the score's α threshold where that equals the median. */
  readonly upper: number;
  /** The score's own α threshold. */
  readonly threshold: number;
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
  /** Per bucket, each scored statistic's scale on the family's common one (what `anyScore` uses). */
  private readonly familyScales = new Map<number, readonly FamilyScale[]>();

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
    const projection = this.reference.totals.projectionHistogram !== null;
    const rank = Math.ceil((1 - this.alpha) * (B + 1)); // 1-based, ≤ B by the constructor check
    const scales = SCORES.filter((name) => name !== 'projectionPsi' || projection).map((name): FamilyScale => {
      const sorted = Float64Array.from(nulls[name]).sort();
      const median = sorted[(B - 1) >> 1];
      const threshold = sorted[Math.min(rank, B) - 1];
      const p90 = sorted[Math.floor(0.9 * (B - 1))];
      return { name, median, upper: p90 > median ? p90 : threshold, threshold };
    });
    // The replicates' own family statistic, thresholded by the same rank rule.
    const family = new Float64Array(B);
    for (let b = 0; b < B; b++) family[b] = familyStatistic(scales, (name) => nulls[name][b]);
    family.sort();
    const threshold = (name: ScoreName): number => scales.find((scale) => scale.name === name)?.threshold ?? NaN;
    const thresholds: DriftThresholds = {
      tokens: bucketTokens,
      capped,
      jsd: threshold('jsd'),
      l0Psi: threshold('l0Psi'),
      fvuPsi: threshold('fvuPsi'),
      meanFvu: threshold('meanFvu'),
      projectionPsi: projection ? threshold('projectionPsi') : null,
      any: family[Math.min(rank, B) - 1],
    };
    this.cache.set(bucket, thresholds);
    this.familyScales.set(bucket, scales);
    return thresholds;
  }

  /**
   * The family-wise `any` score of a window scored `scores` (file comment, step 4): the largest of
   * its scores, each scaled to 0 at its replicates' median and 1 at their 90th percentile. Above
   * `thresholds(scores.tokens).any` is an alarm.
   */
  anyScore(scores: Readonly<Record<ScoreName, number | null>> & { readonly tokens: number }): number {
    this.thresholds(scores.tokens);
    const scales = this.familyScales.get(this.bucketOf(scores.tokens).bucket);
    if (scales === undefined) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `no calibration cached for a window of ${scores.tokens} tokens`);
    return familyStatistic(scales, (name) => scores[name] ?? 0);
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

/** max_s z_s over `scales`, z = (x − median)/(upper − median); a zero-width scale gives +∞ above the score's threshold, −∞ at or below. */
function familyStatistic(scales: readonly FamilyScale[], score: (name: ScoreName) => number): number {
  let most = -Infinity;
  for (const { name, median, upper, threshold } of scales) {
    const x = score(name);
    const width = upper - median;
    const z = width > 0 ? (x - median) / width : x > threshold ? Infinity : -Infinity;
    if (z > most) most = z;
  }
  return most;
}

function subtract(out: Float64Array, a: Float64Array, b: Float64Array): void {
  for (let i = 0; i < out.length; i++) out[i] = a[i] - b[i];
}
