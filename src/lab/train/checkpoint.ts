/**
 * Training checkpoints: one safetensors file with the parameters, both Adam moments and the
 * dead-latent counters, plus the step and the training configuration in `__metadata__`. Written to a
 * temporary file and renamed, so a crash mid-write leaves the previous checkpoint intact. Resuming
 * needs the same configuration, because the batch order and the schedule derive from it.
 */
import { writeAtomically } from '../../common/json-file.js';
import { err, isSaegateError } from '../../common/errors.js';
import { SafetensorsFile, writeSafetensors, type SafetensorsWriteTensor } from '../../common/safetensors.js';
import { PARAM_NAMES, paramShape, type ParamName } from './graph.js';
import type { TrainConfig, TrainedParams } from './protocol.js';

const FORMAT = 'saegate-topk-train-checkpoint';

export interface CheckpointState {
  /** Steps completed. */
  step: number;
  params: TrainedParams;
  m: Record<ParamName, Float32Array>;
  v: Record<ParamName, Float32Array>;
  /** Training rows since each latent last fired. */
  rowsSinceFired: Float32Array;
}

/** `trainRows`: the training row count, which the batch order depends on; resuming checks it. */
export function writeCheckpoint(path: string, config: TrainConfig, trainRows: number, state: CheckpointState): void {
  const tensors: Record<string, SafetensorsWriteTensor> = {};
  for (const p of PARAM_NAMES) {
    const shape = paramShape(p, config.dIn, config.dSae);
    tensors[p] = { dtype: 'F32', shape, data: state.params[p] };
    tensors[`m.${p}`] = { dtype: 'F32', shape, data: state.m[p] };
    tensors[`v.${p}`] = { dtype: 'F32', shape, data: state.v[p] };
  }
  tensors.rows_since_fired = { dtype: 'F32', shape: [config.dSae], data: state.rowsSinceFired };
  writeAtomically(path, (temp) =>
    writeSafetensors(temp, tensors, { format: FORMAT, step: String(state.step), train_rows: String(trainRows), config: JSON.stringify(config) }),
  );
}

/**
 * Reads a checkpoint written for `config` and `trainRows` training rows; any other configuration or
 * row count is refused, naming what differs (the batch order depends on both).
 */
export function readCheckpoint(path: string, config: TrainConfig, trainRows: number): CheckpointState {
  let file: SafetensorsFile;
  try {
    file = SafetensorsFile.open(path);
  } catch (error) {
    throw err('SAEGATE_ERR_TRAIN_CHECKPOINT', path, isSaegateError(error) ? error.message : (error as Error).message);
  }
  try {
    const meta = file.metadata;
    if (meta?.format !== FORMAT) throw err('SAEGATE_ERR_TRAIN_CHECKPOINT', path, `not a saegate training checkpoint (__metadata__.format is ${JSON.stringify(meta?.format ?? null)})`);
    let saved: Record<string, unknown>;
    try {
      saved = JSON.parse(meta.config ?? '') as Record<string, unknown>;
    } catch {
      throw err('SAEGATE_ERR_TRAIN_CHECKPOINT', path, '__metadata__.config is not JSON');
    }
    for (const [key, value] of Object.entries(config)) {
      if (saved[key] !== value) throw err('SAEGATE_ERR_TRAIN_CHECKPOINT', path, `written for a different configuration (${key}: checkpoint ${JSON.stringify(saved[key])}, now ${JSON.stringify(value)})`);
    }
    if (meta.train_rows !== String(trainRows)) {
      throw err('SAEGATE_ERR_TRAIN_CHECKPOINT', path, `written for ${meta.train_rows ?? 'an unknown number of'} training rows, now ${trainRows}; resume with the same data`);
    }
    const step = Number(meta.step);
    if (!Number.isInteger(step) || step < 0 || step > config.steps) throw err('SAEGATE_ERR_TRAIN_CHECKPOINT', path, `bad step ${JSON.stringify(meta.step)}`);
    const read = (name: string, shape: number[]): Float32Array => {
      const info = file.tensors.get(name);
      if (!info) throw err('SAEGATE_ERR_TRAIN_CHECKPOINT', path, `tensor '${name}' is missing`);
      if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
        throw err('SAEGATE_ERR_TRAIN_CHECKPOINT', path, `tensor '${name}' has shape [${info.shape.join(', ')}], expected [${shape.join(', ')}]`);
      }
      return Float32Array.from(file.getFloat32(name));
    };
    const params = {} as TrainedParams;
    const m = {} as Record<ParamName, Float32Array>;
    const v = {} as Record<ParamName, Float32Array>;
    for (const p of PARAM_NAMES) {
      const shape = paramShape(p, config.dIn, config.dSae);
      params[p] = read(p, shape);
      m[p] = read(`m.${p}`, shape);
      v[p] = read(`v.${p}`, shape);
    }
    return { step, params, m, v, rowsSinceFired: read('rows_since_fired', [config.dSae]) };
  } finally {
    file.close();
  }
}
