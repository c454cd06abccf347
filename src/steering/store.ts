/**
 * The vector store: every steering vector saegate can put in a plan, by name and by content id.
 *
 * A reference is one of
 * - a file path (`vectors/sad.safetensors`, `.json`, `.gguf`), resolved against the store's base
 *   directory (the policy directory); its name is the path as written;
 * - `sae:NAME#FEATURE`: the decoder row of latent FEATURE of the loaded SAE named NAME (its
 *   directory name, or the name it was loaded under), at that SAE's hook. The decoder row is the
 *   direction the SAE writes when the feature fires, so steering with it at scale α adds α units of
 *   that feature's output.
 *
 * Vectors are content addressed: loading the same directions twice (even from another format)
 * yields the same id and one stored copy. Registration with tap connections is by the per-hook tap
 * id (`SteeringVector.tapIds`), once per connection: plans name ids, never values.
 */
import path from 'node:path';
import { err } from '../common/errors.js';
import type { SaeWeights } from '../sae/types.js';
import { readVectorFile } from './formats.js';
import { makeSteeringVector, type SteeringVector } from './vector.js';

/** An SAE the store can take decoder directions from. */
export interface DecoderSource {
  /** The SAE's hook (`blocks.2.hook_resid_post`). */
  hook: string;
  weights: Pick<SaeWeights, 'W_dec' | 'config'>;
}

const SAE_REFERENCE = /^sae:([^#\s]+)#(\d+)$/;

/** Parses `sae:NAME#FEATURE`; undefined when `reference` is not of that form. */
export function parseSaeReference(reference: string): { sae: string; feature: number } | undefined {
  const match = SAE_REFERENCE.exec(reference);
  return match ? { sae: match[1], feature: Number(match[2]) } : undefined;
}

export interface VectorStoreOptions {
  /** Directory relative file references are resolved against. Default: the working directory. */
  baseDir?: string;
  /** SAEs by name, for `sae:NAME#FEATURE` references. */
  saes?: ReadonlyMap<string, DecoderSource>;
}

export class VectorStore {
  private readonly baseDir: string;
  private readonly saes: ReadonlyMap<string, DecoderSource>;
  private readonly byReference = new Map<string, SteeringVector>();
  private readonly byId = new Map<string, SteeringVector>();

  constructor(options: VectorStoreOptions = {}) {
    this.baseDir = options.baseDir ?? process.cwd();
    this.saes = options.saes ?? new Map();
  }

  /**
   * The vector a reference names, loading it on first use. Throws SAEGATE_ERR_VECTOR_FILE for a
   * missing or invalid file and SAEGATE_ERR_VECTOR_REFERENCE for an unknown SAE or a feature past
   * its `d_sae`.
   */
  resolve(reference: string): SteeringVector {
    const cached = this.byReference.get(reference);
    if (cached) return cached;
    const sae = parseSaeReference(reference);
    const loaded = sae ? this.decoderVector(reference, sae.sae, sae.feature) : readVectorFile(path.resolve(this.baseDir, reference));
    // One stored copy per content id, whichever reference loaded it first.
    const vector = this.byId.get(loaded.id) ?? loaded;
    this.byId.set(vector.id, vector);
    this.byReference.set(reference, vector);
    return vector;
  }

  /** A vector by content id, if some reference loaded it. */
  get(id: string): SteeringVector | undefined {
    return this.byId.get(id);
  }

  /** Every distinct vector loaded so far. */
  vectors(): SteeringVector[] {
    return [...this.byId.values()];
  }

  /** Forgets cached files (a policy reload re-reads them; ids stay stable for unchanged content). */
  clearFiles(): void {
    for (const [reference] of this.byReference) if (!parseSaeReference(reference)) this.byReference.delete(reference);
    const live = new Set(this.byReference.values());
    for (const [id, vector] of this.byId) if (!live.has(vector)) this.byId.delete(id);
  }

  private decoderVector(reference: string, saeName: string, feature: number): SteeringVector {
    const source = this.saes.get(saeName);
    if (!source) {
      const known = [...this.saes.keys()];
      throw err('SAEGATE_ERR_VECTOR_REFERENCE', reference, `no SAE named '${saeName}' is loaded${known.length > 0 ? ` (loaded: ${known.join(', ')})` : ''}`);
    }
    const { dSae, dIn } = source.weights.config;
    if (!Number.isSafeInteger(feature) || feature >= dSae) {
      throw err('SAEGATE_ERR_VECTOR_REFERENCE', reference, `feature ${feature} is past the SAE's d_sae ${dSae} (features are 0..${dSae - 1})`);
    }
    const row = source.weights.W_dec.subarray(feature * dIn, (feature + 1) * dIn);
    return makeSteeringVector(reference, new Map([[source.hook, row]]), { method: 'sae-decoder', description: `decoder direction of ${saeName} feature ${feature}` });
  }
}
