/**
 * Standalone steering: the request body's `steering` field, turned into the engine's
 * SteeringEntry list. It is the same additive mechanism saegate drives through the tap (plans of
 * {hook, vector, scale, from, until}), reachable without saegate for experiments and for proxies
 * that translate plans into a per-request field (ARCHITECTURE.md, decision 7).
 */
import { SaegateError } from '../../common/errors.js';
import type { SteeringEntry } from '../engine-types.js';
import { allHookPoints, hookName, type ModelConfig } from '../types.js';
import type { SteeringField } from './schemas.js';

function steeringError(param: string, message: string): SaegateError {
  return new SaegateError('SAEGATE_ERR_STEERING', [`${param}: ${message}`], { param });
}

/** How the valid hook names look, for error messages (listing 2·nLayers names would drown the point). */
function validHookForms(config: Pick<ModelConfig, 'nLayers'>): string {
  const last = config.nLayers - 1;
  return `valid hooks are blocks.<layer>.hook_resid_pre and blocks.<layer>.hook_resid_post for layer 0..${last}`;
}

/**
 * Validates the `steering` field against the model and converts it to engine entries.
 * `promptLength` resolves the `"prompt"` and `"generated"` position ranges:
 * prompt = [0, promptLength), generated = [promptLength, end).
 */
export function toSteeringEntries(
  fields: readonly SteeringField[],
  config: Pick<ModelConfig, 'nLayers' | 'dim'>,
  promptLength: number,
): SteeringEntry[] {
  const hooks = new Set(allHookPoints(config));
  return fields.map((field, i) => {
    const at = `steering[${i}]`;
    let hook: string;
    if (field.hook !== undefined && field.layer !== undefined) {
      throw steeringError(at, 'give either "hook" or "layer", not both');
    } else if (field.hook !== undefined) {
      if (!hooks.has(field.hook)) throw steeringError(`${at}.hook`, `unknown hook '${field.hook}'; ${validHookForms(config)}`);
      hook = field.hook;
    } else if (field.layer !== undefined) {
      if (field.layer >= config.nLayers) {
        throw steeringError(`${at}.layer`, `layer ${field.layer} does not exist; this model has layers 0..${config.nLayers - 1}`);
      }
      hook = hookName(field.layer, 'hook_resid_post');
    } else {
      throw steeringError(at, `needs "hook" (e.g. "${hookName(0, 'hook_resid_post')}") or "layer"`);
    }

    if (field.vector.length !== config.dim) {
      throw steeringError(`${at}.vector`, `the vector has ${field.vector.length} values but the model's d_model is ${config.dim}`);
    }
    // Float32 overflow turns a finite double like 1e39 into Infinity; catch it here, not in the graph.
    const vector = Float32Array.from(field.vector);
    const bad = vector.findIndex((v) => !Number.isFinite(v));
    if (bad !== -1) throw steeringError(`${at}.vector[${bad}]`, `${field.vector[bad]} is not a finite float32 value`);

    let fromPosition = 0;
    let untilPosition: number | null = null;
    const positions = field.positions ?? 'all';
    if (positions === 'prompt') {
      untilPosition = promptLength;
    } else if (positions === 'generated') {
      fromPosition = promptLength;
    } else if (positions !== 'all') {
      fromPosition = positions.from;
      untilPosition = positions.until ?? null;
      if (untilPosition !== null && untilPosition <= fromPosition) {
        throw steeringError(`${at}.positions`, `"until" (${untilPosition}) must be greater than "from" (${fromPosition})`);
      }
    }
    return { hook, vector, scale: field.scale ?? 1, fromPosition, untilPosition };
  });
}
