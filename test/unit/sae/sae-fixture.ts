/** A seeded small SAE (d_in 16, d_sae 64) shared by the pool and batcher tests. */
import { seededUniform } from '../../../src/common/random.js';
import type { SaeWeights } from '../../../src/sae/types.js';

/** Uniforms in [0, 1) from a seed. */
export const rng = seededUniform;

export const D_IN = 16;
export const D_SAE = 64;


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
