/**
 * Payloads between the engine (main thread) and the runtime worker, inside the `WorkerHost`
 * envelope: a generation is one request (submit → done), cancellations, plan updates and tap
 * changes are notices, and every forward pass is a `step` event. Bulk data (ONNX bytes,
 * activation rows) travels as transferred ArrayBuffers, never as per-row objects.
 */
import type { Device } from '../common/ort.js';
import type { FinishReason, SamplingParams } from './engine-types.js';
import type { ModelConfig } from './types.js';

/** A steering term with its vector resolved, as the worker applies it. */
export interface WorkerSteeringEntry {
  hook: string;
  vector: Float32Array;
  scale: number;
  fromPosition: number;
  untilPosition: number | null;
}

/**
 * A plan's steering term as the tap delivers it: positions absolute, or counted within the prompt
 * or the generation (`span`), which the engine turns absolute once it knows the prompt's length.
 */
export interface PlanSteeringEntry extends WorkerSteeringEntry {
  span?: 'prompt' | 'generated';
}

/** `entries` with absolute positions, for a request whose prompt has `promptLength` tokens. */
export function absoluteSteering(entries: readonly PlanSteeringEntry[], promptLength: number): WorkerSteeringEntry[] {
  const out: WorkerSteeringEntry[] = [];
  for (const { span, ...entry } of entries) {
    if (span === undefined) {
      out.push(entry);
    } else if (span === 'prompt') {
      const until = Math.min(entry.untilPosition ?? promptLength, promptLength);
      if (entry.fromPosition < until) out.push({ ...entry, untilPosition: until });
    } else {
      out.push({ ...entry, fromPosition: promptLength + entry.fromPosition, untilPosition: entry.untilPosition === null ? null : promptLength + entry.untilPosition });
    }
  }
  return out;
}

export interface TapSubscription {
  hooks: string[];
  /** Element type the rows are delivered in. */
  dtype: 'f32' | 'f16';
  /** Also stream rows for prompt positions (prefill). */
  includePrompt: boolean;
}

export interface RuntimeInit {
  model: Uint8Array;
  config: ModelConfig;
  maxSlots: number;
  device: Device;
  intraOpThreads?: number;
  prefillTokenBudget: number;
  /** Only ids below this are sampled (a tokenizer smaller than a padded embedding). */
  samplableVocab: number;
}

/** One generation; the worker answers when it finishes (or with an error). */
export interface SubmitRequest {
  requestId: string;
  promptTokens: number[];
  maxTokens: number;
  sampling: SamplingParams;
  stopTokenIds: number[];
  steering: WorkerSteeringEntry[];
  /** Steering from saegate's plan; part of the submit so it is in place before prefill. */
  planSteering: WorkerSteeringEntry[];
  /**
   * Most likely alternatives to report per prompt position when the prompt's own log-probabilities
   * are wanted (`echo` with `logprobs`); null = none computed.
   */
  promptLogprobs: number | null;
}

/**
 * Log-probabilities of a prompt's tokens under the model, from the prefill pass (steering
 * applied). Entry i is about prompt token i + 1 (the first token has no prediction): its own
 * log-probability, and the `top` most likely tokens at that position with theirs, best first.
 */
export interface PromptLogprobs {
  requestId: string;
  /** Alternatives per position. */
  top: number;
  /** n − 1 values. */
  tokenLogprobs: Float32Array;
  /** (n − 1) × top token ids. */
  topIds: Int32Array;
  /** (n − 1) × top values, matching `topIds`. */
  topLogprobs: Float32Array;
}

/** The answer to a submit. */
export interface RequestDone {
  finishReason: FinishReason;
  promptTokens: number;
  completionTokens: number;
}

export type RuntimeNotice =
  | { type: 'cancel'; requestId: string }
  /** Replaces the plan-derived steering of a request from the next step on. */
  | { type: 'plan'; requestId: string; entries: WorkerSteeringEntry[] }
  | { type: 'tap'; subscription: TapSubscription | null };

/** Rows of one hook from one forward pass. */
export interface ActivationBatch {
  hook: string;
  dtype: 'f32' | 'f16';
  dModel: number;
  /** Request id per row. */
  requestIds: string[];
  /** Token position per row. */
  positions: Int32Array;
  /** rows × dModel values: Float32Array for f32, Uint16Array (IEEE half bits) for f16. */
  data: Float32Array | Uint16Array;
}

export interface StepTokens {
  requestIds: string[];
  positions: Int32Array;
  tokenIds: Int32Array;
}

/** One prefill or decode forward pass: the tokens it emitted and the tapped rows. */
export interface RuntimeStep {
  tokens: StepTokens;
  activations: ActivationBatch[];
  batchSize: number;
  phase: 'prefill' | 'decode';
  /** Time inside onnxruntime, milliseconds. */
  runMs: number;
  /** Prefill only: prompt log-probabilities of the requests that asked for them. */
  promptLogprobs?: PromptLogprobs[];
}

export interface RuntimeWorkerProtocol {
  init: RuntimeInit;
  request: SubmitRequest;
  response: RequestDone;
  notice: RuntimeNotice;
  event: RuntimeStep;
}
