/**
 * Synthetic SAE traffic from a known distribution, for the monitor's statistical tests. Documents
 * have a topic (one of `topics`) that boosts its own block of features, so rows within a document
 * are correlated the way real text makes them; tokens draw an L0 and that many features (without
 * repeats) from the document's feature distribution, an FVU and a projection. A `shift` changes the
 * distribution in one known way.
 */
import { SeededRandom } from '../../src/common/random.js';
import type { EncodedRows } from '../../src/monitor/rows.js';

export interface SyntheticShift {
  /** Features [0, boostFeatures) fire `boostFactor` times as often. */
  boostFeatures?: number;
  boostFactor?: number;
  /** Added to every token's L0 target. */
  l0Offset?: number;
  /** Added to every token's FVU. */
  fvuOffset?: number;
  /** Added to every token's projection. */
  projectionOffset?: number;
}

export interface SyntheticOptions {
  dSae: number;
  seed: number;
  topics?: number;
  shift?: SyntheticShift;
}

/** A generator of documents, each one `EncodedRows` batch with request id `doc<i>`. */
export class SyntheticTraffic {
  private readonly random: SeededRandom;
  private readonly cumulative: Float64Array[];
  private readonly stamp: Uint32Array;
  private stampValue = 0;
  private docs = 0;

  constructor(private readonly options: SyntheticOptions) {
    const { dSae, seed } = options;
    const topics = options.topics ?? 8;
    this.random = new SeededRandom(seed);
    this.stamp = new Uint32Array(dSae);
    const shift = options.shift ?? {};
    const block = Math.max(1, Math.floor(dSae / topics));
    // Per topic, a cumulative distribution over features: Zipf-like base × 4 on the topic's block.
    this.cumulative = Array.from({ length: topics }, (_, t) => {
      const c = new Float64Array(dSae);
      let total = 0;
      for (let f = 0; f < dSae; f++) {
        let w = 1 / (f + 1) ** 0.7;
        if (f >= t * block && f < (t + 1) * block) w *= 4;
        if (shift.boostFeatures !== undefined && f < shift.boostFeatures) w *= shift.boostFactor ?? 3;
        total += w;
        c[f] = total;
      }
      for (let f = 0; f < dSae; f++) c[f] /= total;
      return c;
    });
  }

  /** The next document: 20–99 tokens. */
  document(): EncodedRows {
    const r = this.random;
    const shift = this.options.shift ?? {};
    const tokens = 20 + Math.floor(r.next() * 80);
    const topic = Math.floor(r.next() * this.cumulative.length);
    const cdf = this.cumulative[topic];
    const docFvu = 0.06 + 0.06 * r.next();
    const offsets = new Uint32Array(tokens + 1);
    const indices: number[] = [];
    const values: number[] = [];
    const l0 = new Uint32Array(tokens);
    const fvu = new Float32Array(tokens);
    const projection = new Float32Array(tokens);
    for (let t = 0; t < tokens; t++) {
      const target = Math.min(this.options.dSae, 4 + Math.floor(r.next() * 24) + (shift.l0Offset ?? 0));
      this.stampValue++;
      let drawn = 0;
      for (let attempt = 0; drawn < target && attempt < target * 4; attempt++) {
        const f = upperBound(cdf, r.next());
        if (this.stamp[f] === this.stampValue) continue;
        this.stamp[f] = this.stampValue;
        indices.push(f);
        values.push(0.5 + r.next() * 2);
        drawn++;
      }
      offsets[t + 1] = indices.length;
      l0[t] = drawn;
      fvu[t] = docFvu + 0.08 * r.next() + (shift.fvuOffset ?? 0);
      projection[t] = r.next() + r.next() + r.next() - 1.5 + (shift.projectionOffset ?? 0);
    }
    return {
      rows: tokens,
      offsets,
      indices: Uint32Array.from(indices),
      values: Float32Array.from(values),
      l0,
      fvu,
      requestIndex: new Uint32Array(tokens),
      requestIds: [`doc${this.docs++}`],
      projection,
    };
  }
}

/** First index i with cdf[i] > u (cdf ends at 1). */
function upperBound(cdf: Float64Array, u: number): number {
  let lo = 0;
  let hi = cdf.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (cdf[mid] > u) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}
