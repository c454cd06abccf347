/**
 * The contract between the generation engine (scheduler + runtime worker) and its callers (the
 * OpenAI HTTP API, benchmarks, tests). Token ids in, token ids out; text belongs to the caller.
 */
import type { PromptLogprobs } from './runtime-protocol.js';
import type { ModelConfig } from './types.js';

export type { PromptLogprobs } from './runtime-protocol.js';

/**
 * One additive steering term: at hook point `hook`, for token positions in
 * [fromPosition, untilPosition), the residual stream gets `+ scale × vector`.
 * Positions count from 0 at the first prompt token (BOS included).
 */
export interface SteeringEntry {
  /** TransformerLens hook name, e.g. `blocks.2.hook_resid_post`. */
  hook: string;
  /** d_model values. */
  vector: Float32Array;
  scale: number;
  /** First steered position. Default 0. */
  fromPosition: number;
  /** First position no longer steered; null = until the end. */
  untilPosition: number | null;
}

export interface SamplingParams {
  /** 0 = greedy. */
  temperature: number;
  /** Nucleus mass in (0, 1]; 1 = off. */
  topP: number;
  /** Seed for this request's sampler; null = nondeterministic. */
  seed: number | null;
}

export interface GenerateRequest {
  /** Unique id (the x-request-id); tap frames and plans refer to it. */
  requestId: string;
  /** Prompt token ids, BOS included when the model wants one. */
  promptTokens: number[];
  /** Upper bound on generated tokens. */
  maxTokens: number;
  sampling: SamplingParams;
  /** Token ids that end generation (EOS). */
  stopTokenIds: readonly number[];
  /** Steering from the request body. */
  steering: SteeringEntry[];
  /**
   * Steering plan id that saegate announced for this request (header `x-saegate-plan-id`); the
   * engine waits for the plan to arrive over the tap before prefill.
   */
  planId?: string | null;
  /**
   * How long the tap may hold this request's rows, tokens and end before sending them, ms (header
   * `x-saegate-tap-max-delay-ms`), in place of the subscription's `maxDelayMs`; null/absent: the
   * subscription's. Read by the tap bridge, not the engine.
   */
  tapMaxDelayMs?: number | null;
  /** Aborting ends generation at the next step with finishReason 'abort'. */
  signal?: AbortSignal;
  /**
   * Asks for the prompt tokens' log-probabilities (OpenAI's `echo` with `logprobs`): computed in
   * the prefill pass, steering applied, and handed to `onResult` before any generated token.
   */
  promptLogprobs?: PromptLogprobsRequest;
}

/** What {@link GenerateRequest.promptLogprobs} asks for. */
export interface PromptLogprobsRequest {
  /** Most likely alternatives to report per position (0 = only each token's own). */
  top: number;
  onResult: (result: PromptLogprobs) => void;
}

export type FinishReason = 'stop' | 'length' | 'abort';

export interface GenerateResult {
  finishReason: FinishReason;
  promptTokens: number;
  completionTokens: number;
}

/** Called once per generated token, in order; `position` is the token's index in the sequence. */
export type TokenCallback = (tokenId: number, position: number) => void;

/** What an engine has run so far (counters; /healthz reports them). */
export interface EngineStats {
  prefillSteps: number;
  decodeSteps: number;
  generatedTokens: number;
  /** Time inside onnxruntime, milliseconds. */
  runMs: number;
}

export interface Engine {
  readonly config: ModelConfig;
  /** Counters, when the engine keeps them. */
  readonly stats?: EngineStats;
  /** Runs one request to completion. Rejects with a SaegateError on bad input or runtime failure. */
  generate(request: GenerateRequest, onToken: TokenCallback): Promise<GenerateResult>;
  /** Stops accepting requests, finishes nothing further, and terminates workers. */
  close(): Promise<void>;
}
