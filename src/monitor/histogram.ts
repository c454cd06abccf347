/**
 * Fixed-edge histograms for per-row scalars (L0, FVU, projections). Edges are fixed when a monitor
 * or baseline is made, so a window's histogram and the baseline's line up bin for bin and a PSI
 * between them needs no re-binning.
 *
 * `k` strictly increasing edges e₀ < … < e_{k−1} make `k + 1` bins: (−∞, e₀), [e₀, e₁), …,
 * [e_{k−1}, +∞). A NaN value goes to the last bin (it is certainly not "in distribution").
 */
import { err } from '../common/errors.js';

/** Default L0 bin edges: powers of two from 1 to 4096 (bin 0 is L0 = 0). */
export const DEFAULT_L0_EDGES: readonly number[] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];

/** Default FVU bin edges: finer where healthy SAEs sit (FVU 0.05–0.4), one bin above 1. */
export const DEFAULT_FVU_EDGES: readonly number[] = [0.02, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1];

/** Checks that `edges` is non-empty, finite and strictly increasing; returns a Float64Array copy. */
export function histogramEdges(name: string, edges: readonly number[]): Float64Array {
  if (edges.length === 0) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `${name} edges must not be empty`);
  for (let i = 0; i < edges.length; i++) {
    if (!Number.isFinite(edges[i])) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `${name} edge ${i} is ${edges[i]}, expected a finite number`);
    if (i > 0 && edges[i] <= edges[i - 1]) {
      throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `${name} edges must be strictly increasing: edge ${i} (${edges[i]}) ≤ edge ${i - 1} (${edges[i - 1]})`);
    }
  }
  return Float64Array.from(edges);
}

/** Bin of `value` for `edges` (binary search; `edges.length + 1` bins). */
export function binIndex(edges: Float64Array, value: number): number {
  if (!(value === value)) return edges.length; // NaN
  let lo = 0;
  let hi = edges.length;
  // Invariant: every edge below lo is ≤ value, every edge at or above hi is > value.
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (edges[mid] <= value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Whether two edge lists are the same bins (same length, equal values). */
export function sameEdges(a: ArrayLike<number>, b: ArrayLike<number>): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
