/**
 * Loads sparse autoencoders as people publish them into `SaeWeights`: SAELens directories
 * (`cfg.json` + `sae_weights.safetensors`, flat pre-v6 or v6 `metadata` layout) and EleutherAI
 * sparsify directories (`cfg.json` + `sae.safetensors`). Everything a later stage relies on — the
 * architecture, every tensor's shape, finiteness — is checked here once, so the encoder builder and
 * the workers can trust the arrays they get. docs/sae-formats.md describes both layouts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { err } from '../common/errors.js';
import { SafetensorsFile, type SafetensorsDtype } from '../common/safetensors.js';
import type { SaeArchitecture, SaeConfig, SaeNormalization, SaeWeights } from './types.js';

/** Architectures `loadSae` understands, in the order error messages list them. */
export const supportedArchitectures: readonly SaeArchitecture[] = ['standard', 'topk', 'jumprelu', 'gated'];

/** `normalize_activations` values `loadSae` understands. */
export const supportedNormalizations: readonly SaeNormalization[] = ['none', 'constant_norm_rescale', 'layer_norm', 'expected_average_only_in'];

/** File names that identify each format. */
const SAELENS_WEIGHTS = 'sae_weights.safetensors';
const SPARSIFY_WEIGHTS = 'sae.safetensors';
const CFG = 'cfg.json';

/** Options of `loadSae`. */
export interface LoadSaeOptions {
  /**
   * TransformerLens hook name the SAE reads (e.g. `blocks.6.hook_resid_post`). Overrides the name
   * in a SAELens `cfg.json`; required for a sparsify SAE whose directory name is not `layers.N` or
   * `layers.N.mlp`. Default: from the file (SAELens) or the directory name (sparsify).
   */
  hookName?: string;
}

/** An SAE checked against the model it will read from; see `bindSaeToModel`. */
export interface BoundSae {
  sae: SaeWeights;
  /** The model hook point the SAE reads; equals `sae.config.hookName`. */
  hookPoint: string;
}

/** What `bindSaeToModel` checks the SAE against. */
export interface SaeModelShape {
  /** Width of the model's residual stream. */
  dModel: number;
  /** Every hook point the model can tap, e.g. `blocks.0.hook_resid_pre`. */
  hookPoints: readonly string[];
}

const positiveInt = z.number().int().positive();

/**
 * The SAELens fields saegate reads. Loose: SAELens files carry many training fields (dataset,
 * context size, wandb ids) that do not change the encoder. Fields that moved under `metadata` in
 * v6 are accepted in both places; `hook_point` is the pre-v6 spelling of `hook_name`.
 */
const saelensFields = {
  architecture: z.string().nullish(),
  d_in: positiveInt.nullish(),
  d_sae: positiveInt.nullish(),
  dtype: z.string().nullish(),
  hook_name: z.string().min(1).nullish(),
  hook_point: z.string().min(1).nullish(),
  model_name: z.string().nullish(),
  apply_b_dec_to_input: z.boolean().nullish(),
  // Old files say true/false: SAELens maps true to expected_average_only_in and false to none.
  normalize_activations: z.union([z.string(), z.boolean()]).nullish(),
  k: positiveInt.nullish(),
  activation_fn_kwargs: z.looseObject({ k: positiveInt.nullish() }).nullish(),
  scaling_factor: z.number().positive().nullish(),
};
const saelensSchema = z.looseObject({ ...saelensFields, metadata: z.looseObject(saelensFields).nullish() });

/** sparsify's `SparseCoderConfig` plus the `d_in` that `save_to_disk` adds. */
const sparsifySchema = z.looseObject({
  d_in: positiveInt.nullish(),
  k: positiveInt,
  num_latents: z.number().int().nonnegative().nullish(),
  expansion_factor: positiveInt.nullish(),
  activation: z.string().nullish(),
  transcode: z.boolean().nullish(),
  skip_connection: z.boolean().nullish(),
});

function readCfg<T>(dir: string, schema: z.ZodType<T>): { file: string; cfg: T } {
  const file = path.join(dir, CFG);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    throw err('SAEGATE_ERR_SAE_FILE', file, `cannot read: ${(error as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw err('SAEGATE_ERR_SAE_FILE', file, `not valid JSON: ${(error as Error).message}`);
  }
  const result = schema.safeParse(raw);
  if (!result.success) {
    const issue = result.error.issues[0];
    const at = issue.path.length > 0 ? `field '${issue.path.join('.')}'` : 'top level';
    throw err('SAEGATE_ERR_SAE_FILE', file, `${at}: ${issue.message}`);
  }
  return { file, cfg: result.data };
}

function formatShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

function fileDtype(file: string, tensor: string, dtype: SafetensorsDtype): SaeConfig['dtype'] {
  switch (dtype) {
    case 'F32':
      return 'f32';
    case 'F16':
      return 'f16';
    case 'BF16':
      return 'bf16';
    default:
      throw err('SAEGATE_ERR_SAE_FILE', file, `tensor '${tensor}' has dtype ${dtype}; SAE weights must be F32, F16 or BF16`);
  }
}

/**
 * Reads the tensors of one SAE file with shape and finiteness checks; owns the open file so every
 * error path closes it.
 */
class TensorReader {
  readonly file: string;
  readonly #st: SafetensorsFile;

  constructor(file: string) {
    this.file = file;
    this.#st = SafetensorsFile.open(file);
  }

  has(name: string): boolean {
    return this.#st.has(name);
  }

  shape(name: string): readonly number[] {
    this.#require(name);
    return this.#st.info(name).shape;
  }

  dtype(name: string): SaeConfig['dtype'] {
    this.#require(name);
    return fileDtype(this.file, name, this.#st.info(name).dtype);
  }

  /** The tensor as f32, after checking it has exactly `expected` dims and only finite values. */
  read(name: string, expected: readonly number[]): Float32Array {
    const actual = this.shape(name);
    if (actual.length !== expected.length || actual.some((d, i) => d !== expected[i])) {
      throw err('SAEGATE_ERR_SAE_FILE', this.file, `tensor '${name}' has shape ${formatShape(actual)}, expected ${formatShape(expected)}`);
    }
    fileDtype(this.file, name, this.#st.info(name).dtype);
    const values = this.#st.getFloat32(name);
    // One pass at load time, so a NaN in the file is reported here with its tensor name rather
    // than surfacing later as NaN feature activations nobody can trace back.
    for (let i = 0; i < values.length; i++) {
      if (!Number.isFinite(values[i])) {
        throw err('SAEGATE_ERR_SAE_FILE', this.file, `tensor '${name}' has a non-finite value (${values[i]}) at flat index ${i}`);
      }
    }
    return values;
  }

  close(): void {
    this.#st.close();
  }

  #require(name: string): void {
    if (!this.#st.has(name)) {
      const present = [...this.#st.tensors.keys()].join(', ') || 'none';
      throw err('SAEGATE_ERR_SAE_FILE', this.file, `missing tensor '${name}' (tensors present: ${present})`);
    }
  }
}

function withReader<T>(file: string, body: (reader: TensorReader) => T): T {
  const reader = new TensorReader(file);
  try {
    return body(reader);
  } finally {
    reader.close();
  }
}

function parseArchitecture(file: string, value: string | null | undefined): SaeArchitecture {
  const architecture = value ?? 'standard';
  if (!(supportedArchitectures as readonly string[]).includes(architecture)) {
    throw err('SAEGATE_ERR_SAE_FILE', file, `architecture '${architecture}' is not supported (supported: ${supportedArchitectures.join(', ')})`);
  }
  return architecture as SaeArchitecture;
}

function parseNormalization(file: string, value: string | boolean | null | undefined): SaeNormalization {
  if (value === true) return 'expected_average_only_in';
  if (value === false || value === null || value === undefined) return 'none';
  if (!(supportedNormalizations as readonly string[]).includes(value)) {
    throw err('SAEGATE_ERR_SAE_FILE', file, `normalize_activations '${value}' is not supported (supported: ${supportedNormalizations.join(', ')})`);
  }
  return value as SaeNormalization;
}

function loadSaelens(dir: string, options: LoadSaeOptions): SaeWeights {
  const { file: cfgFile, cfg } = readCfg(dir, saelensSchema);
  const meta = cfg.metadata ?? null;
  // v6 moved model/hook fields under `metadata`. A top-level value wins when both are present:
  // pre-v6 files have no `metadata`, and v6 keeps d_in/d_sae/architecture at top level.
  const field = <K extends keyof typeof saelensFields>(key: K) => cfg[key] ?? meta?.[key];

  const architecture = parseArchitecture(cfgFile, field('architecture'));
  const normalizeActivations = parseNormalization(cfgFile, field('normalize_activations'));
  const dIn = field('d_in');
  const dSae = field('d_sae');
  if (dIn == null) throw err('SAEGATE_ERR_SAE_FILE', cfgFile, "field 'd_in' is missing");
  if (dSae == null) throw err('SAEGATE_ERR_SAE_FILE', cfgFile, "field 'd_sae' is missing");
  const hookName = options.hookName ?? field('hook_name') ?? field('hook_point');
  if (hookName == null) throw err('SAEGATE_ERR_SAE_FILE', cfgFile, "field 'hook_name' is missing (pass a hook name to use this SAE)");

  let k: number | null = null;
  if (architecture === 'topk') {
    // v6 writes `k`; older files keep it in `activation_fn_kwargs`.
    k = field('k') ?? field('activation_fn_kwargs')?.k ?? null;
    if (k === null) throw err('SAEGATE_ERR_SAE_FILE', cfgFile, "architecture 'topk' needs 'k' (or 'activation_fn_kwargs.k')");
    if (k > dSae) throw err('SAEGATE_ERR_SAE_FILE', cfgFile, `k = ${k} exceeds d_sae = ${dSae}`);
  }

  const weightsFile = path.join(dir, SAELENS_WEIGHTS);
  return withReader(weightsFile, (reader) => {
    const gated = architecture === 'gated';
    const weights: SaeWeights = {
      config: {
        architecture,
        format: 'saelens',
        dIn,
        dSae,
        hookName,
        modelName: field('model_name') ?? null,
        // SAELens defaults this to true for files written before the field existed.
        applyBDecToInput: field('apply_b_dec_to_input') ?? true,
        normalizeActivations,
        k,
        scalingFactor: normalizeActivations === 'expected_average_only_in' ? (field('scaling_factor') ?? null) : null,
        dtype: reader.dtype('W_enc'),
        source: dir,
      },
      W_enc: reader.read('W_enc', [dIn, dSae]),
      // Gated SAEs have no b_enc (the gate and magnitude paths carry their own biases).
      b_enc: gated && !reader.has('b_enc') ? new Float32Array(dSae) : reader.read('b_enc', [dSae]),
      W_dec: reader.read('W_dec', [dSae, dIn]),
      b_dec: reader.read('b_dec', [dIn]),
      threshold: null,
      gated: null,
    };
    if (architecture === 'jumprelu') {
      // Inference files hold `threshold`; checkpoints saved mid-training hold `log_threshold`.
      if (!reader.has('threshold') && reader.has('log_threshold')) {
        weights.threshold = reader.read('log_threshold', [dSae]).map(Math.exp);
      } else {
        weights.threshold = reader.read('threshold', [dSae]);
      }
    }
    if (gated) {
      weights.gated = { b_gate: reader.read('b_gate', [dSae]), r_mag: reader.read('r_mag', [dSae]), b_mag: reader.read('b_mag', [dSae]) };
    }
    checkFinetuningScale(reader, dSae);
    return weights;
  });
}

/**
 * SAELens once saved a per-latent `scaling_factor` that multiplies feature activations. All-ones
 * (the common case: SAELens itself drops it then) changes nothing; anything else would change the
 * math and SaeWeights has no place for it, so refuse rather than encode wrongly.
 */
function checkFinetuningScale(reader: TensorReader, dSae: number): void {
  if (!reader.has('scaling_factor')) return;
  const scale = reader.read('scaling_factor', [dSae]);
  if (scale.some((v) => v !== 1)) {
    throw err('SAEGATE_ERR_SAE_FILE', reader.file, "tensor 'scaling_factor' (finetuning scaling factor) is not all ones; such SAEs are not supported");
  }
}

/**
 * sparsify names a hookpoint after the Hugging Face module path. `layers.N` is the output of decoder
 * layer N, i.e. the residual stream after block N; `layers.N.mlp` is the MLP output.
 */
function hookNameFromSparsifyDir(dir: string): string | null {
  const name = path.basename(path.resolve(dir));
  const layer = /^(?:model\.|gpt_neox\.|transformer\.)?(?:layers|h)\.(\d+)(\.mlp)?$/.exec(name);
  if (!layer) return null;
  return layer[2] ? `blocks.${layer[1]}.hook_mlp_out` : `blocks.${layer[1]}.hook_resid_post`;
}

function loadSparsify(dir: string, options: LoadSaeOptions): SaeWeights {
  const { file: cfgFile, cfg } = readCfg(dir, sparsifySchema);
  if (cfg.transcode === true) throw err('SAEGATE_ERR_SAE_FILE', cfgFile, 'transcode = true: transcoders are not supported, only autoencoders');
  if (cfg.skip_connection === true) throw err('SAEGATE_ERR_SAE_FILE', cfgFile, 'skip_connection = true is not supported');
  if (cfg.activation != null && cfg.activation !== 'topk') {
    throw err('SAEGATE_ERR_SAE_FILE', cfgFile, `activation '${cfg.activation}' is not supported (supported: topk)`);
  }
  const hookName = options.hookName ?? hookNameFromSparsifyDir(dir);
  if (hookName === null) {
    throw err('SAEGATE_ERR_SAE_FILE', dir, `sparsify files carry no hook name and the directory name '${path.basename(path.resolve(dir))}' is not layers.N or layers.N.mlp; pass the hook name`);
  }

  const weightsFile = path.join(dir, SPARSIFY_WEIGHTS);
  return withReader(weightsFile, (reader) => {
    // d_in is optional in the cfg (older files); the encoder's shape settles both sizes then, and
    // the cfg values, when present, must agree with it.
    const encoderShape = reader.shape('encoder.weight');
    if (encoderShape.length !== 2) {
      throw err('SAEGATE_ERR_SAE_FILE', weightsFile, `tensor 'encoder.weight' has shape ${formatShape(encoderShape)}, expected [d_sae, d_in]`);
    }
    const dIn = cfg.d_in ?? encoderShape[1];
    // sparsify's rule: num_latents when non-zero, else d_in × expansion_factor.
    const dSae = cfg.num_latents ? cfg.num_latents : cfg.expansion_factor != null ? dIn * cfg.expansion_factor : encoderShape[0];
    if (cfg.k > dSae) throw err('SAEGATE_ERR_SAE_FILE', cfgFile, `k = ${cfg.k} exceeds the ${dSae} latents`);
    const encoder = reader.read('encoder.weight', [dSae, dIn]);
    return {
      config: {
        architecture: 'topk',
        format: 'sparsify',
        dIn,
        dSae,
        hookName,
        modelName: null,
        // sparsify's encode subtracts b_dec from the input of every non-transcoder SAE.
        applyBDecToInput: true,
        normalizeActivations: 'none',
        k: cfg.k,
        scalingFactor: null,
        dtype: reader.dtype('encoder.weight'),
        source: dir,
      },
      W_enc: transpose(encoder, dSae, dIn),
      b_enc: reader.read('encoder.bias', [dSae]),
      W_dec: reader.read('W_dec', [dSae, dIn]),
      b_dec: reader.read('b_dec', [dIn]),
      threshold: null,
      gated: null,
    };
  });
}

/** Tile edge for `transpose`: 64 × 64 f32 tiles (16 KiB each side) stay in L1. */
const TRANSPOSE_TILE = 64;

/**
 * Row-major `[rows, cols]` → `[cols, rows]`. Tiled because a naive loop strides the whole output
 * on every element, which for a 131072 × 4096 encoder thrashes the cache for seconds.
 */
function transpose(source: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(source.length);
  for (let r0 = 0; r0 < rows; r0 += TRANSPOSE_TILE) {
    const r1 = Math.min(r0 + TRANSPOSE_TILE, rows);
    for (let c0 = 0; c0 < cols; c0 += TRANSPOSE_TILE) {
      const c1 = Math.min(c0 + TRANSPOSE_TILE, cols);
      for (let r = r0; r < r1; r++) {
        for (let c = c0; c < c1; c++) out[c * rows + r] = source[r * cols + c];
      }
    }
  }
  return out;
}

/**
 * Loads the SAE in `dir`, detecting its format by the weights file present:
 * `sae_weights.safetensors` → SAELens, `sae.safetensors` → EleutherAI sparsify (TopK, `encoder.weight`
 * transposed into `W_enc`). Weights come back as f32 whatever the file's dtype.
 *
 * Throws SAEGATE_ERR_SAE_FILE naming the file for: no recognised weights file, an invalid
 * `cfg.json`, an unknown architecture or `normalize_activations`, TopK without `k`, a missing
 * tensor, a shape that does not match `d_in`/`d_sae`, or a non-finite weight; and
 * SAEGATE_ERR_SAFETENSORS for a corrupt safetensors file.
 */
export function loadSae(dir: string, options: LoadSaeOptions = {}): SaeWeights {
  if (fs.existsSync(path.join(dir, SAELENS_WEIGHTS))) return loadSaelens(dir, options);
  if (fs.existsSync(path.join(dir, SPARSIFY_WEIGHTS))) return loadSparsify(dir, options);
  if (!fs.existsSync(dir)) throw err('SAEGATE_ERR_SAE_FILE', dir, 'directory does not exist');
  throw err('SAEGATE_ERR_SAE_FILE', dir, `no ${SAELENS_WEIGHTS} (SAELens) or ${SPARSIFY_WEIGHTS} (sparsify) in the directory`);
}

/**
 * Checks that an SAE can read from a model: its `d_in` must equal the model's `d_model` and its
 * hook must be one the model can tap. Throws SAEGATE_ERR_SAE_FILE naming the SAE's source, both
 * widths or the hook and the model's hook points.
 */
export function bindSaeToModel(sae: SaeWeights, model: SaeModelShape): BoundSae {
  const { dIn, hookName, source } = sae.config;
  if (dIn !== model.dModel) {
    throw err('SAEGATE_ERR_SAE_FILE', source, `d_in ${dIn} does not match the model's d_model ${model.dModel}; this SAE was trained on a different model`);
  }
  if (!model.hookPoints.includes(hookName)) {
    const shown = model.hookPoints.length > 8 ? `${model.hookPoints.slice(0, 8).join(', ')}, … (${model.hookPoints.length} in all)` : model.hookPoints.join(', ');
    throw err('SAEGATE_ERR_SAE_FILE', source, `hook '${hookName}' is not one of the model's hook points (${shown || 'none'})`);
  }
  return { sae, hookPoint: hookName };
}

/** A multi-line, human-readable summary of a loaded SAE, as `saegate sae info` prints it. */
export function describeSae(sae: SaeWeights): string {
  const c = sae.config;
  const bytes = (sae.W_enc.length + sae.W_dec.length) * 4;
  const lines = [
    `source:                ${c.source}`,
    `format:                ${c.format}`,
    `architecture:          ${c.architecture}${c.k === null ? '' : ` (k = ${c.k})`}`,
    `d_in × d_sae:          ${c.dIn} × ${c.dSae}`,
    `hook:                  ${c.hookName}`,
    `model:                 ${c.modelName ?? '(not recorded)'}`,
    `dtype in file:         ${c.dtype} (held as f32, ${(bytes / 2 ** 20).toFixed(1)} MiB of matrices)`,
    `apply_b_dec_to_input:  ${c.applyBDecToInput}`,
    `normalize_activations: ${c.normalizeActivations}${c.scalingFactor === null ? '' : ` (scaling factor ${c.scalingFactor})`}`,
  ];
  if (sae.threshold) lines.push(`threshold:             min ${min(sae.threshold)}, max ${max(sae.threshold)}`);
  return lines.join('\n');
}

function min(values: Float32Array): number {
  let m = Infinity;
  for (const v of values) m = Math.min(m, v);
  return m;
}

function max(values: Float32Array): number {
  let m = -Infinity;
  for (const v of values) m = Math.max(m, v);
  return m;
}
