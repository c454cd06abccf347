/** RoPE tables shared by the runtime and the scorer, so both rotate exactly alike. */
import type { ModelConfig } from './types.js';

/**
 * `[maxSeqLen, headDim/2]` cos and sin tables: angle(p, i) = p · theta^(-2i/headDim), as llama2.c
 * and HF compute it (in float32 there, so the inverse frequency is rounded to float32 first).
 */
export function ropeTables(config: Pick<ModelConfig, 'dim' | 'nHeads' | 'maxSeqLen' | 'ropeTheta'>): { cos: Float32Array; sin: Float32Array } {
  const headDim = config.dim / config.nHeads;
  const half = headDim / 2;
  const cos = new Float32Array(config.maxSeqLen * half);
  const sin = new Float32Array(config.maxSeqLen * half);
  for (let i = 0; i < half; i++) {
    const freq = Math.fround(1 / Math.pow(config.ropeTheta, (2 * i) / headDim));
    for (let p = 0; p < config.maxSeqLen; p++) {
      const angle = Math.fround(p * freq);
      cos[p * half + i] = Math.cos(angle);
      sin[p * half + i] = Math.sin(angle);
    }
  }
  return { cos, sin };
}
