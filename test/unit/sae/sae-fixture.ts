/** A seeded small SAE (d_in 16, d_sae 64) shared by the pool and batcher tests. */
import type { SaeWeights } from '../../../src/sae/types.js';

export const D_IN = 16;
export const D_SAE = 64;

/** mulberry32: a tiny seeded PRNG so every case is reproducible. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function uniform(next: () => number, n: number, lo: number, hi: number): Float32Array {
  return Float32Array.from({ length: n }, () => lo + (hi - lo) * next());
}

export function makeSmallSae(seed = 7): SaeWeights {
  const next = rng(seed);
  const scale = 1 / Math.sqrt(D_IN);
  return {
    config: {
      architecture: 'standard',
      format: 'saelens',
      dIn: D_IN,
      dSae: D_SAE,
      hookName: 'blocks.0.hook_resid_post',
      modelName: null,
      applyBDecToInput: true,
      normalizeActivations: 'none',
      k: null,
      scalingFactor: null,
      dtype: 'f32',
      source: 'test-pool',
    },
    W_enc: uniform(next, D_IN * D_SAE, -2 * scale, 2 * scale),
    b_enc: uniform(next, D_SAE, -0.3, 0.3),
    W_dec: uniform(next, D_SAE * D_IN, -scale, scale),
    b_dec: uniform(next, D_IN, -0.5, 0.5),
    threshold: null,
    gated: null,
  };
}
