/**
 * Initial parameters of a TopK SAE (Gao et al. 2024): decoder rows drawn at random and scaled to
 * unit norm, the encoder set to the decoder's transpose (in the graph's `[dSae, dIn]` orientation
 * that is the same matrix), `b_enc = 0`, and `b_dec` at the geometric median of the data, so the
 * encoder starts from centred inputs.
 */
import { SeededRandom } from '../../common/random.js';
import type { TrainedParams } from './protocol.js';

/** Standard normal draws (Box–Muller) from a seeded uniform source. */
function gaussian(random: SeededRandom): number {
  const u = 1 - random.next();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random.next());
}

/**
 * Geometric median of `rows` (`count × dIn`) by Weiszfeld's iteration, in float64, starting from
 * the mean. At most `sampleRows` rows, spread evenly over the data, take part.
 */
export function geometricMedian(rows: Float32Array, count: number, dIn: number, options: { sampleRows?: number; iterations?: number } = {}): Float32Array {
  const sample = Math.min(count, options.sampleRows ?? 8192);
  const stride = count / sample;
  const picks = Array.from({ length: sample }, (_, i) => Math.floor(i * stride));
  const median = new Float64Array(dIn);
  for (const r of picks) for (let i = 0; i < dIn; i++) median[i] += rows[r * dIn + i] / sample;
  const next = new Float64Array(dIn);
  for (let iter = 0; iter < (options.iterations ?? 50); iter++) {
    next.fill(0);
    let weightSum = 0;
    for (const r of picks) {
      let dist = 0;
      for (let i = 0; i < dIn; i++) dist += (rows[r * dIn + i] - median[i]) ** 2;
      const w = 1 / Math.max(Math.sqrt(dist), 1e-8);
      weightSum += w;
      for (let i = 0; i < dIn; i++) next[i] += w * rows[r * dIn + i];
    }
    let shift = 0;
    for (let i = 0; i < dIn; i++) {
      const v = next[i] / weightSum;
      shift += (v - median[i]) ** 2;
      median[i] = v;
    }
    if (shift < 1e-12) break;
  }
  return Float32Array.from(median);
}

export function initialParams(rows: Float32Array, count: number, dIn: number, dSae: number, seed: number): TrainedParams {
  const random = new SeededRandom(seed);
  const w_dec = new Float32Array(dSae * dIn);
  for (let j = 0; j < dSae; j++) {
    let norm = 0;
    for (let i = 0; i < dIn; i++) {
      const v = gaussian(random);
      w_dec[j * dIn + i] = v;
      norm += v * v;
    }
    const scale = 1 / Math.sqrt(norm);
    for (let i = 0; i < dIn; i++) w_dec[j * dIn + i] *= scale;
  }
  return { w_enc: Float32Array.from(w_dec), b_enc: new Float32Array(dSae), w_dec, b_dec: geometricMedian(rows, count, dIn) };
}
