/**
 * Token sampling: greedy, temperature and nucleus (top-p), with a seeded per-request generator so a
 * request with a seed gives the same tokens every time, whatever else shares its batch.
 */
import { SeededRandom } from '../common/random.js';
import type { SamplingParams } from './engine-types.js';

export { SeededRandom };

/** Index of the largest value; the lowest index wins ties, as in llama2.c's argmax. */
export function argmax(logits: Float32Array, offset: number, length: number): number {
  let best = 0;
  let bestValue = logits[offset];
  for (let i = 1; i < length; i++) {
    const v = logits[offset + i];
    if (v > bestValue) {
      bestValue = v;
      best = i;
    }
  }
  return best;
}

/**
 * Samples one token from `logits[offset .. offset+length)`. `scratch` must hold `length` floats
 * and is overwritten (it avoids an allocation per token).
 */
export function sampleToken(
  logits: Float32Array,
  offset: number,
  length: number,
  params: SamplingParams,
  rng: SeededRandom,
  scratch: Float32Array,
): number {
  if (params.temperature <= 0) return argmax(logits, offset, length);
  let max = -Infinity;
  for (let i = 0; i < length; i++) max = Math.max(max, logits[offset + i]);
  let sum = 0;
  const invT = 1 / params.temperature;
  for (let i = 0; i < length; i++) {
    const p = Math.exp((logits[offset + i] - max) * invT);
    scratch[i] = p;
    sum += p;
  }
  const r = rng.next();
  if (params.topP >= 1) {
    let target = r * sum;
    for (let i = 0; i < length; i++) {
      target -= scratch[i];
      if (target <= 0) return i;
    }
    return length - 1;
  }
  // Nucleus: the smallest set of most likely tokens whose mass reaches topP, renormalised.
  const order = Array.from({ length }, (_, i) => i).sort((a, b) => scratch[b] - scratch[a] || a - b);
  const cutoff = params.topP * sum;
  let kept = 0;
  let mass = 0;
  while (kept < length && mass < cutoff) mass += scratch[order[kept++]];
  let target = r * mass;
  for (let j = 0; j < kept; j++) {
    target -= scratch[order[j]];
    if (target <= 0) return order[j];
  }
  return order[kept - 1];
}
