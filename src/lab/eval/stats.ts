/**
 * The statistics of `eval steer`: Wilson score intervals for rates, and a seeded paired bootstrap
 * for the mean of per-item differences (control cross-entropy with and without steering).
 *
 * Wilson rather than the normal ("Wald") interval because the rates here are often near 0 or 1
 * and n is tens to hundreds: Wald collapses to a zero-width interval at 0/n, Wilson does not.
 */
import { SeededRandom } from '../../common/random.js';

/** A point estimate with a two-sided 95% interval. */
export interface Interval {
  value: number;
  low: number;
  high: number;
}

/** A rate: `hits` of `n`, with its 95% Wilson interval (all 0 when n = 0). */
export interface Rate extends Interval {
  hits: number;
  n: number;
}

/** z of a two-sided 95% interval. */
const Z95 = 1.959963984540054;

/** The 95% Wilson score interval of `hits` successes in `n` trials. */
export function wilson(hits: number, n: number): Rate {
  if (n === 0) return { hits, n, value: 0, low: 0, high: 0 };
  const p = hits / n;
  const z2 = Z95 * Z95;
  const denominator = 1 + z2 / n;
  const centre = (p + z2 / (2 * n)) / denominator;
  const half = (Z95 * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n))) / denominator;
  // Clamped: rounding can put the bounds a few ulps outside [0, 1] at p = 0 or 1.
  return { hits, n, value: p, low: Math.max(0, centre - half), high: Math.min(1, centre + half) };
}

/**
 * The mean of `differences` with a 95% percentile-bootstrap interval: `replicates` resamples of the
 * items with replacement, drawn from `seed`, so the same differences and seed give the same bounds.
 * The items are the pairing unit (one control text scored with and without steering), which is
 * what makes the interval paired.
 */
export function pairedBootstrapMean(differences: readonly number[], seed: number, replicates = 2000): Interval {
  const n = differences.length;
  if (n === 0) return { value: 0, low: 0, high: 0 };
  let sum = 0;
  for (const d of differences) sum += d;
  const means = new Float64Array(replicates);
  const random = new SeededRandom(seed);
  for (let r = 0; r < replicates; r++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += differences[Math.floor(random.next() * n)];
    means[r] = s / n;
  }
  means.sort();
  const at = (q: number): number => means[Math.min(replicates - 1, Math.max(0, Math.round(q * (replicates - 1))))];
  return { value: sum / n, low: at(0.025), high: at(0.975) };
}
