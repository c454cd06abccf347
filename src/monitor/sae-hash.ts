/**
 * The content hash a baseline's provenance names its SAE by (`provenance.sae.hash`): sha256 over
 * the loaded encoder and decoder tensors as float32, so the same weights hash the same whether they
 * came from SAELens or sparsify files, f16 or f32 on disk (held as f32 either way), and a retrained
 * SAE in the same directory does not. The recorder (`saegate baseline record`) and the live monitor
 * compute it the same way, from this one function.
 */
import { createHash } from 'node:crypto';
import type { SaeWeights } from '../sae/types.js';

/** `sha256:<hex>` of the SAE's architecture, shape and tensors (W_enc, b_enc, W_dec, b_dec, then any threshold or gate tensors). */
export function saeWeightsHash(sae: SaeWeights): string {
  const hash = createHash('sha256');
  const { architecture, dIn, dSae, k } = sae.config;
  hash.update(`${architecture};${dIn};${dSae};${k ?? ''};`);
  const tensors: Float32Array[] = [sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec];
  if (sae.threshold !== null) tensors.push(sae.threshold);
  if (sae.gated !== null) tensors.push(sae.gated.b_gate, sae.gated.r_mag, sae.gated.b_mag);
  for (const tensor of tensors) hash.update(new Uint8Array(tensor.buffer, tensor.byteOffset, tensor.byteLength));
  return `sha256:${hash.digest('hex')}`;
}
