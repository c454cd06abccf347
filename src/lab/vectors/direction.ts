/**
 * The math of `vectors build`: one summary row per prompt (the position rule), a direction from
 * two sets of rows (difference of centroids, or the first principal component of paired
 * differences), and how well a direction separates two sets (projection statistics, Cohen's d,
 * AUROC). Everything accumulates in float64; rows come in as float32 from the tap.
 *
 * Directions are raw, not normalised: `mean-diff` is exactly `mean(positive) − mean(negative)`,
 * so adding it at scale 1 moves the negative centroid onto the positive one. `pca` pairs prompt i of
 * the positive set with prompt i of the negative set (contrastive pairs, written line by line; the
 * first min(counts) of each), takes the unit first component u of their differences (uncentred,
 * so it is the direction along which the pairs differ most, mean difference included), and gives
 * it the length of the centroid difference projected on it, `u · (u · (mean(positive) −
 * mean(negative)))`: scale 1 moves the negative centroid's projection onto the positive one's.
 */
import { SeededRandom, shuffledIndices } from '../../common/random.js';

/** Which positions of a prompt feed its summary row. */
export type PositionRule = 'last' | 'mean';
export type DirectionMethod = 'mean-diff' | 'pca';

/** `count` rows of width `dModel`, row-major, float64. */
export interface RowSet {
  rows: Float64Array;
  count: number;
  dModel: number;
}

/**
 * One prompt's summary row from its prompt rows (`tokenCount × dModel`, position 0 first): the
 * last position, or the mean over positions 1…T−1. Position 0 is left out of the mean when there
 * are others because it is the BOS token on models that use one: the same row in every prompt,
 * which only pulls both centroids towards it.
 */
export function summaryRow(rows: Float32Array, tokenCount: number, dModel: number, rule: PositionRule, out: Float64Array): void {
  if (rule === 'last' || tokenCount === 1) {
    const base = (tokenCount - 1) * dModel;
    for (let d = 0; d < dModel; d++) out[d] = rows[base + d];
    return;
  }
  out.fill(0);
  for (let t = 1; t < tokenCount; t++) {
    const base = t * dModel;
    for (let d = 0; d < dModel; d++) out[d] += rows[base + d];
  }
  for (let d = 0; d < dModel; d++) out[d] /= tokenCount - 1;
}

/** The rows of `set` at `indices`, as a new set. */
export function pick(set: RowSet, indices: ArrayLike<number>): RowSet {
  const { dModel } = set;
  const rows = new Float64Array(indices.length * dModel);
  for (let i = 0; i < indices.length; i++) rows.set(set.rows.subarray(indices[i] * dModel, (indices[i] + 1) * dModel), i * dModel);
  return { rows, count: indices.length, dModel };
}

export function centroid(set: RowSet): Float64Array {
  const out = new Float64Array(set.dModel);
  for (let r = 0; r < set.count; r++) {
    const base = r * set.dModel;
    for (let d = 0; d < set.dModel; d++) out[d] += set.rows[base + d];
  }
  for (let d = 0; d < set.dModel; d++) out[d] /= set.count;
  return out;
}

function dot(a: Float64Array, b: Float64Array, bOffset = 0): number {
  let sum = 0;
  for (let d = 0; d < a.length; d++) sum += a[d] * b[bOffset + d];
  return sum;
}

function norm(a: Float64Array): number {
  return Math.sqrt(dot(a, a));
}

/** Most power iterations for the first component; it converges long before on real data. */
const MAX_POWER_ITERATIONS = 2000;
const POWER_TOLERANCE = 1e-12;

/**
 * Unit first right-singular vector of the `m × d` matrix of paired differences (positive prompt i
 * minus negative prompt i, m = min(counts)), by power iteration on DᵀD from a seeded start. Sign:
 * positive along the centroid difference.
 */
function firstComponent(positive: RowSet, negative: RowSet, seed: number, meanDiff: Float64Array): Float64Array {
  const D = positive.dModel;
  const random = new SeededRandom(seed);
  const m = Math.min(positive.count, negative.count);
  const diffs = new Float64Array(m * D);
  for (let i = 0; i < m * D; i++) diffs[i] = positive.rows[i] - negative.rows[i];
  let v = new Float64Array(D);
  for (let d = 0; d < D; d++) v[d] = random.next() - 0.5;
  v = v.map((x) => x / norm(v));
  const projections = new Float64Array(m);
  for (let iteration = 0; iteration < MAX_POWER_ITERATIONS; iteration++) {
    for (let i = 0; i < m; i++) projections[i] = dot(v, diffs, i * D);
    const next = new Float64Array(D);
    for (let i = 0; i < m; i++) {
      const p = projections[i];
      for (let d = 0; d < D; d++) next[d] += p * diffs[i * D + d];
    }
    const length = norm(next);
    // All differences zero: no direction to find; the caller's zero projection gives a zero vector.
    if (length === 0) return v;
    let change = 0;
    for (let d = 0; d < D; d++) {
      next[d] /= length;
      change += (next[d] - v[d]) ** 2;
    }
    v = next;
    if (change < POWER_TOLERANCE) break;
  }
  if (dot(v, meanDiff) < 0) v = v.map((x) => -x);
  return v;
}

/** The raw direction from positive and negative rows (see the file comment). */
export function buildDirection(positive: RowSet, negative: RowSet, method: DirectionMethod, seed: number): Float64Array {
  const negativeCentroid = centroid(negative);
  const meanDiff = centroid(positive).map((x, d) => x - negativeCentroid[d]);
  if (method === 'mean-diff') return meanDiff;
  const u = firstComponent(positive, negative, seed, meanDiff);
  const length = dot(u, meanDiff);
  return u.map((x) => x * length);
}

/** How well a direction separates two sets: projections on the unit direction. */
export interface Separation {
  positive: { count: number; mean: number; std: number };
  negative: { count: number; mean: number; std: number };
  /** (mean₊ − mean₋) / pooled standard deviation; null when both sets have no spread. */
  cohensD: number | null;
  /** P(projection of a positive > projection of a negative), ties counting one half. */
  auroc: number;
}

function projections(set: RowSet, unit: Float64Array): Float64Array {
  const out = new Float64Array(set.count);
  for (let r = 0; r < set.count; r++) out[r] = dot(unit, set.rows, r * set.dModel);
  return out;
}

function meanStd(values: Float64Array): { mean: number; std: number } {
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  // Sample standard deviation (n − 1), 0 for a single value.
  const variance = values.length > 1 ? values.reduce((a, b) => a + (b - mean) ** 2, 0) / (values.length - 1) : 0;
  return { mean, std: Math.sqrt(variance) };
}

/** AUROC as the Mann–Whitney U statistic over all pairs (sets here are small: prompts, not rows). */
export function auroc(positive: ArrayLike<number>, negative: ArrayLike<number>): number {
  let wins = 0;
  for (let i = 0; i < positive.length; i++) {
    for (let j = 0; j < negative.length; j++) {
      if (positive[i] > negative[j]) wins += 1;
      else if (positive[i] === negative[j]) wins += 0.5;
    }
  }
  return wins / (positive.length * negative.length);
}

/** Projects both sets on `direction` (normalised here) and summarises the separation. */
export function separation(positive: RowSet, negative: RowSet, direction: Float64Array): Separation {
  const length = norm(direction);
  const unit = length === 0 ? direction : direction.map((x) => x / length);
  const p = projections(positive, unit);
  const n = projections(negative, unit);
  const ps = meanStd(p);
  const ns = meanStd(n);
  const dof = p.length + n.length - 2;
  const pooled = dof > 0 ? Math.sqrt(((p.length - 1) * ps.std ** 2 + (n.length - 1) * ns.std ** 2) / dof) : 0;
  return {
    positive: { count: p.length, ...ps },
    negative: { count: n.length, ...ns },
    cohensD: pooled > 0 ? (ps.mean - ns.mean) / pooled : null,
    auroc: auroc(p, n),
  };
}

/**
 * A seeded split of `count` prompts: ⌊count × fraction⌋ prompts of a seeded order are held out
 * (at least one when count ≥ 2 and fraction > 0). Both parts are in ascending order, so two sets
 * of the same size split with the same draw keep their pairs aligned.
 */
export function holdOut(count: number, fraction: number, random: SeededRandom): { train: Uint32Array; heldOut: Uint32Array } {
  const order = shuffledIndices(count, random);
  const held = fraction > 0 && count >= 2 ? Math.min(count - 1, Math.max(1, Math.floor(count * fraction))) : 0;
  return { heldOut: order.slice(0, held).sort(), train: order.slice(held).sort() };
}
