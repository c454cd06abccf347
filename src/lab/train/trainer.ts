/**
 * Training a TopK SAE from the main thread: the rows go to the training worker once (shared
 * memory), progress comes back as messages, and the result is written as a SAELens directory that
 * `loadSae` reads unchanged. Evaluation on held-out rows runs through the SAE engine itself
 * (`SaePool`, the same encoder graph the proxy runs), so a trained SAE is judged by what serving
 * it would compute.
 */
import fs from 'node:fs';
import path from 'node:path';
import { SaegateError } from '../../common/errors.js';
import type { Device } from '../../common/ort.js';
import { writeSafetensors } from '../../common/safetensors.js';
import { siblingModule } from '../../common/worker.js';
import { WorkerHost } from '../../common/worker-host.js';
import { SaePool } from '../../sae/pool.js';
import type { SaeWeights } from '../../sae/types.js';
import type { RunOptions, TrainConfig, TrainedParams, TrainProgress, TrainWorkerProtocol } from './protocol.js';

export interface TrainTopKOptions {
  /** Training rows, `count × config.dIn`. */
  rows: Float32Array;
  count: number;
  config: TrainConfig;
  run?: Partial<RunOptions>;
  onProgress?: (progress: TrainProgress) => void;
  onCheckpoint?: (step: number, file: string) => void;
}

export interface TrainTopKResult {
  params: TrainedParams;
  history: TrainProgress[];
  /** Step the run started from (0 unless resumed). */
  resumedAtStep: number;
  trainSeconds: number;
}

/** Sensible defaults for the knobs a caller leaves out (Gao et al. 2024 where they apply). */
export function defaultTrainConfig(partial: Partial<TrainConfig> & Pick<TrainConfig, 'dIn' | 'dSae' | 'k'>): TrainConfig {
  const batchRows = partial.batchRows ?? 4096;
  return {
    kAux: Math.min(partial.dSae, Math.max(partial.k, Math.floor(partial.dIn / 2))),
    auxCoef: 1 / 32,
    // Gao et al. scale the learning rate as 1/√dSae from 2e-4 at 16k latents.
    lr: 2e-4 / Math.sqrt(partial.dSae / 16384),
    warmupSteps: 50,
    decayFraction: 0.2,
    steps: 3000,
    seed: 0,
    deadAfterRows: 5 * batchRows,
    ...partial,
    batchRows,
  };
}

function validateConfig(config: TrainConfig, count: number): void {
  const bad = (name: string, why: string): never => {
    throw new SaegateError('SAEGATE_ERR_CONFIG', [name, why]);
  };
  const posInt = (name: keyof TrainConfig): void => {
    const v = config[name];
    if (!Number.isInteger(v) || v < 1) bad(name, `a positive integer, got ${v}`);
  };
  for (const name of ['dIn', 'dSae', 'k', 'batchRows', 'steps', 'deadAfterRows'] as const) posInt(name);
  if (config.k > config.dSae) bad('k', `at most d_sae (${config.dSae}), got ${config.k}`);
  if (!Number.isInteger(config.kAux) || config.kAux < 0 || config.kAux > config.dSae) bad('kAux', `an integer in [0, ${config.dSae}], got ${config.kAux}`);
  if (!(config.lr > 0)) bad('lr', `a positive number, got ${config.lr}`);
  if (!(config.auxCoef >= 0)) bad('auxCoef', `a non-negative number, got ${config.auxCoef}`);
  if (!(config.decayFraction >= 0 && config.decayFraction <= 1)) bad('decayFraction', `in [0, 1], got ${config.decayFraction}`);
  if (count < 2) bad('rows', `training needs at least 2 rows, got ${count}`);
}

/** Trains in a worker thread; resolves when the last step is done (and its checkpoint written). */
export async function trainTopKSae(options: TrainTopKOptions): Promise<TrainTopKResult> {
  const { config, count } = options;
  validateConfig(config, count);
  if (options.rows.length < count * config.dIn) throw new SaegateError('SAEGATE_ERR_CONFIG', ['rows', `${count} rows of ${config.dIn} need ${count * config.dIn} values, got ${options.rows.length}`]);
  const run: RunOptions = {
    device: 'cpu',
    progressEvery: 50,
    checkpointEvery: 0,
    checkpointPath: null,
    resumeFrom: null,
    ...options.run,
  };
  const buffer = new SharedArrayBuffer(count * config.dIn * 4);
  new Float32Array(buffer).set(options.rows.subarray(0, count * config.dIn));
  const host = await WorkerHost.start<TrainWorkerProtocol>({
    entry: siblingModule(import.meta.url, 'worker'),
    name: 'training worker',
    init: () => ({ init: null }),
    onEvent: (event) => {
      if (event.type === 'progress') options.onProgress?.(event.progress);
      else options.onCheckpoint?.(event.step, event.path);
    },
  });
  try {
    const done = await host.request({ config, run, train: { buffer, rows: count } });
    return { params: done.params, history: done.history, resumedAtStep: done.resumedAtStep, trainSeconds: done.trainSeconds };
  } finally {
    await host.close();
  }
}

export interface SaeIdentity {
  hookName: string;
  modelName: string | null;
  /** Where the weights live (or will), for messages. */
  source: string;
}

/** The trained parameters as the engine's `SaeWeights` (a SAELens TopK SAE). */
export function toSaeWeights(params: TrainedParams, config: Pick<TrainConfig, 'dIn' | 'dSae' | 'k'>, identity: SaeIdentity): SaeWeights {
  const { dIn, dSae } = config;
  const W_enc = new Float32Array(dIn * dSae);
  for (let j = 0; j < dSae; j++) for (let i = 0; i < dIn; i++) W_enc[i * dSae + j] = params.w_enc[j * dIn + i];
  return {
    config: {
      architecture: 'topk',
      format: 'saelens',
      dIn,
      dSae,
      hookName: identity.hookName,
      modelName: identity.modelName,
      applyBDecToInput: true,
      normalizeActivations: 'none',
      k: config.k,
      scalingFactor: null,
      dtype: 'f32',
      source: identity.source,
    },
    W_enc,
    b_enc: Float32Array.from(params.b_enc),
    W_dec: Float32Array.from(params.w_dec),
    b_dec: Float32Array.from(params.b_dec),
    threshold: null,
    gated: null,
  };
}

/**
 * Writes a TopK SAE as a SAELens directory: `cfg.json` in the flat (pre-v6) layout most published
 * SAEs use, and `sae_weights.safetensors` with `W_enc` `[d_in, d_sae]`, `b_enc`, `W_dec`
 * `[d_sae, d_in]`, `b_dec` in float32. `extra` fields are added to `cfg.json` (provenance).
 */
export function writeSaeLensDirectory(dir: string, sae: SaeWeights, extra: Record<string, unknown> = {}): void {
  const { config } = sae;
  if (config.architecture !== 'topk' || config.k === null) throw new SaegateError('SAEGATE_ERR_CONFIG', ['architecture', 'only TopK SAEs are written']);
  fs.mkdirSync(dir, { recursive: true });
  const cfg = {
    architecture: 'topk',
    d_in: config.dIn,
    d_sae: config.dSae,
    dtype: 'float32',
    device: 'cpu',
    model_name: config.modelName,
    hook_name: config.hookName,
    hook_layer: Number(/^blocks\.(\d+)\./.exec(config.hookName)?.[1] ?? 0),
    hook_head_index: null,
    activation_fn_str: 'topk',
    activation_fn_kwargs: { k: config.k },
    apply_b_dec_to_input: true,
    finetuning_scaling_factor: false,
    normalize_activations: 'none',
    prepend_bos: true,
    ...extra,
  };
  writeSafetensors(path.join(dir, 'sae_weights.safetensors'), {
    W_enc: { dtype: 'F32', shape: [config.dIn, config.dSae], data: sae.W_enc },
    b_enc: { dtype: 'F32', shape: [config.dSae], data: sae.b_enc },
    W_dec: { dtype: 'F32', shape: [config.dSae, config.dIn], data: sae.W_dec },
    b_dec: { dtype: 'F32', shape: [config.dIn], data: sae.b_dec },
  });
  fs.writeFileSync(path.join(dir, 'cfg.json'), `${JSON.stringify(cfg, null, 2)}\n`);
}

export interface SaeEvaluation {
  rows: number;
  /** Σ‖x − x̂‖² / Σ‖x − mean(x)‖² over the rows (the mean over these rows). */
  fvu: number;
  /** Mean active latents per row. */
  l0: number;
  /** Latents that never fired on these rows, as a fraction of d_sae. */
  deadFraction: number;
  /** Rows each latent fired on. */
  firing: Uint32Array;
}

/** Encodes `rows` with the SAE engine's worker pool and measures reconstruction and sparsity. */
export async function evaluateSae(sae: SaeWeights, rows: Float32Array, count: number, options: { device?: Device; batchRows?: number } = {}): Promise<SaeEvaluation> {
  const { dIn, dSae } = sae.config;
  // Every active latent is listed (the batch's largest L0 wide), so firing counts are exact.
  const pool = await SaePool.create({ sae, device: options.device });
  const batchRows = options.batchRows ?? 4096;
  const mean = new Float64Array(dIn);
  for (let r = 0; r < count; r++) for (let i = 0; i < dIn; i++) mean[i] += rows[r * dIn + i];
  for (let i = 0; i < dIn; i++) mean[i] /= count;
  let variance = 0;
  for (let r = 0; r < count; r++) for (let i = 0; i < dIn; i++) variance += (rows[r * dIn + i] - mean[i]) ** 2;
  let sq = 0;
  let active = 0;
  const firing = new Uint32Array(dSae);
  try {
    for (let start = 0; start < count; start += batchRows) {
      const n = Math.min(batchRows, count - start);
      const result = await pool.encode(rows.slice(start * dIn, (start + n) * dIn), n);
      for (let r = 0; r < n; r++) {
        sq += result.sqError[r];
        active += result.l0[r];
        for (let j = 0; j < result.topK; j++) {
          const index = result.indices[r * result.topK + j];
          if (index >= 0) firing[index]++;
        }
      }
    }
  } finally {
    await pool.close();
  }
  let dead = 0;
  for (let j = 0; j < dSae; j++) if (firing[j] === 0) dead++;
  return { rows: count, fvu: sq / Math.max(variance, 1e-30), l0: active / count, deadFraction: dead / dSae, firing };
}
