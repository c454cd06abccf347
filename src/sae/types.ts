/**
 * Shapes of a loaded sparse autoencoder, whatever file format it came from. Matrices are row-major
 * in the orientation SAELens uses: `W_enc` is `[d_in, d_sae]` (so `pre = x · W_enc + b_enc`) and
 * `W_dec` is `[d_sae, d_in]` (so `x̂ = f · W_dec + b_dec`). Weights are held as float32 whatever the
 * file's dtype (`config.dtype` records the file's).
 */

export type SaeArchitecture = 'standard' | 'topk' | 'jumprelu' | 'gated';

/** SAELens `normalize_activations`. */
export type SaeNormalization = 'none' | 'constant_norm_rescale' | 'layer_norm' | 'expected_average_only_in';

export type SaeFileFormat = 'saelens' | 'sparsify';

export interface SaeConfig {
  architecture: SaeArchitecture;
  format: SaeFileFormat;
  dIn: number;
  dSae: number;
  /** TransformerLens hook name the SAE reads, e.g. `blocks.6.hook_resid_post`. */
  hookName: string;
  /** Model the SAE was trained on, when the file says. */
  modelName: string | null;
  /** Subtract `b_dec` from the input before encoding. */
  applyBDecToInput: boolean;
  normalizeActivations: SaeNormalization;
  /** TopK: active latents per row. */
  k: number | null;
  /**
   * `expected_average_only_in`: the factor the input is multiplied by (SAELens'
   * `scaling_factor` / sparsify-free); null when the file carries none.
   */
  scalingFactor: number | null;
  /** Weight dtype in the file. */
  dtype: 'f32' | 'f16' | 'bf16';
  /** Directory or file it was loaded from. */
  source: string;
}

export interface SaeWeights {
  config: SaeConfig;
  /** [dIn, dSae] */
  W_enc: Float32Array;
  /** [dSae] */
  b_enc: Float32Array;
  /** [dSae, dIn] */
  W_dec: Float32Array;
  /** [dIn] */
  b_dec: Float32Array;
  /** JumpReLU: per-latent threshold [dSae]. */
  threshold: Float32Array | null;
  /** Gated SAEs (SAELens): gate bias, magnitude log-scale and magnitude bias, each [dSae]. `b_enc` is unused. */
  gated: { b_gate: Float32Array; r_mag: Float32Array; b_mag: Float32Array } | null;
}
