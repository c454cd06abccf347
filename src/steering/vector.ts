/**
 * A steering vector: one direction per hook point (TransformerLens names, e.g.
 * `blocks.3.hook_resid_post`), all of the model's width, plus where it came from. Values are raw,
 * not normalised: `vectors build` writes the difference of two centroids, so scale 1 moves the
 * negative centroid onto the positive one, and the norm is kept in the metadata.
 *
 * A vector is identified by the content hash of its hook names and values (`id`), so the same
 * directions read from safetensors, JSON or GGUF get the same id; each hook's direction also has
 * the tap protocol's own id (the sha256 of its f32 bytes) under which it is registered once per
 * tap connection (`tapIds`).
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { err } from '../common/errors.js';
import { vectorId } from '../tap/codec.js';

/** TransformerLens-style hook names a vector may target. */
export const HOOK_NAME_PATTERN = /^(hook_embed|blocks\.\d{1,4}\.hook_[a-z_]+|ln_final\.hook_normalized)$/;

/** How a vector was made. `import` = read from another tool's file; `sae-decoder` = an SAE latent's decoder row. */
export const vectorMethods = ['mean-diff', 'pca', 'import', 'sae-decoder', 'manual'] as const;
export type VectorMethod = (typeof vectorMethods)[number];

/** Provenance kept with a vector. Every field is optional except what `makeSteeringVector` fills. */
export const vectorMetadataSchema = z
  .object({
    /** Model the vector was built on (its id as the model server reports it). */
    model: z.string().max(512).optional(),
    method: z.enum(vectorMethods).optional(),
    /** Which token positions fed the centroids: the last prompt token or the mean over the prompt. */
    position: z.enum(['last', 'mean']).optional(),
    /** Prompt counts per set, e.g. `{positive: 32, negative: 32}`. */
    counts: z.record(z.string().max(64), z.number().int().nonnegative()).optional(),
    /** L2 norm of each hook's direction (filled in by `makeSteeringVector`). */
    norms: z.record(z.string(), z.number().nonnegative()),
    seed: z.number().int().optional(),
    /** saegate version that wrote the file. */
    saegateVersion: z.string().max(64).optional(),
    /** ISO 8601 time the vector was made. */
    createdAt: z.string().max(64).optional(),
    /** Free text: what the vector is for. */
    description: z.string().max(4096).optional(),
  })
  .strict();
export type VectorMetadata = z.infer<typeof vectorMetadataSchema>;

export interface SteeringVector {
  /** Content hash (sha256, hex) of the hook names and their f32 values. */
  readonly id: string;
  /** Width of every direction (the model's d_model). */
  readonly dModel: number;
  /** Directions by hook name, in a stable (sorted) order. */
  readonly hooks: ReadonlyMap<string, Float32Array>;
  /** The tap protocol id of each hook's direction (`vectorId`). */
  readonly tapIds: ReadonlyMap<string, string>;
  readonly metadata: VectorMetadata;
}

/** L2 norm, accumulated in float64. */
export function l2Norm(values: Float32Array): number {
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += values[i] * values[i];
  return Math.sqrt(sum);
}

/**
 * Checks and freezes a vector: at least one hook, valid hook names, one width, finite values.
 * `source` names the file (or `<memory>`) in errors. Norms in `metadata` are recomputed.
 */
export function makeSteeringVector(
  source: string,
  directions: ReadonlyMap<string, Float32Array> | Readonly<Record<string, Float32Array>>,
  metadata: Omit<VectorMetadata, 'norms'> & { norms?: VectorMetadata['norms'] } = {},
): SteeringVector {
  const entries = directions instanceof Map ? [...directions.entries()] : Object.entries(directions as Record<string, Float32Array>);
  if (entries.length === 0) throw err('SAEGATE_ERR_VECTOR_FILE', source, 'it holds no directions (expected one per hook)');
  entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const dModel = entries[0][1].length;
  const hooks = new Map<string, Float32Array>();
  const tapIds = new Map<string, string>();
  const norms: Record<string, number> = {};
  const hash = createHash('sha256');
  for (const [hook, values] of entries) {
    if (!HOOK_NAME_PATTERN.test(hook)) {
      throw err('SAEGATE_ERR_VECTOR_FILE', source, `'${hook}' is not a TransformerLens hook name (expected e.g. blocks.3.hook_resid_post)`);
    }
    if (values.length === 0) throw err('SAEGATE_ERR_VECTOR_FILE', source, `${hook}: the direction is empty`);
    if (values.length !== dModel) {
      throw err('SAEGATE_ERR_VECTOR_FILE', source, `${hook}: ${values.length} values, but ${entries[0][0]} has ${dModel}; every direction must have the model's width`);
    }
    for (let i = 0; i < values.length; i++) {
      if (!Number.isFinite(values[i])) throw err('SAEGATE_ERR_VECTOR_FILE', source, `${hook}[${i}]: ${values[i]} is not a finite number`);
    }
    // Own the bytes: callers' arrays may be views on a larger buffer or be reused.
    const owned = Float32Array.from(values);
    hooks.set(hook, owned);
    tapIds.set(hook, vectorId(owned));
    norms[hook] = l2Norm(owned);
    hash.update(`${hook}\0`);
    hash.update(new Uint8Array(owned.buffer, owned.byteOffset, owned.byteLength));
  }
  const parsed = vectorMetadataSchema.safeParse({ ...metadata, norms });
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw err('SAEGATE_ERR_VECTOR_FILE', source, `metadata.${issue.path.join('.')}: ${issue.message}`);
  }
  return { id: hash.digest('hex'), dModel, hooks, tapIds, metadata: parsed.data };
}

/** The layer of a `blocks.N.…` hook name, or undefined for other hooks. */
export function hookLayer(hook: string): number | undefined {
  const match = /^blocks\.(\d+)\./.exec(hook);
  return match ? Number(match[1]) : undefined;
}
