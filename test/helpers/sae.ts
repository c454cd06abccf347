/** Seeded synthetic SAEs for integration tests. */
import { seededUniform } from '../../src/common/random.js';
import type { SaeWeights } from '../../src/sae/types.js';

export interface StandardSaeOptions {
  dIn: number;
  dSae: number;
  hook: string;
  seed: number;
  /** Each tensor is uniform in ±scale/2, drawn in the order W_enc, b_enc, W_dec, b_dec. */
  scales: { W_enc: number; b_enc: number; W_dec: number; b_dec: number };
}

/** `seededStandardSae`'s weights with a TopK activation keeping `k` latents per row. */
export function seededTopKSae(options: StandardSaeOptions & { k: number }): SaeWeights {
  const sae = seededStandardSae(options);
  return { ...sae, config: { ...sae.config, architecture: 'topk', k: options.k } };
}

/** A standard (ReLU) SAELens-style SAE with seeded uniform weights, applying b_dec to the input. */
export function seededStandardSae(options: StandardSaeOptions): SaeWeights {
  const { dIn, dSae, hook, seed, scales } = options;
  const u = seededUniform(seed);
  const arr = (n: number, scale: number): Float32Array => Float32Array.from({ length: n }, () => (u() - 0.5) * scale);
  return {
    config: { architecture: 'standard', format: 'saelens', dIn, dSae, hookName: hook, modelName: null, applyBDecToInput: true, normalizeActivations: 'none', k: null, scalingFactor: null, dtype: 'f32', source: 'test' },
    W_enc: arr(dIn * dSae, scales.W_enc),
    b_enc: arr(dSae, scales.b_enc),
    W_dec: arr(dSae * dIn, scales.W_dec),
    b_dec: arr(dIn, scales.b_dec),
    threshold: null,
    gated: null,
  };
}
