/**
 * Payloads between `spliceEvaluation` (main thread) and the splice-evaluation worker, inside the
 * `WorkerHost` envelope: the init builds the session, each request scores one document.
 */
import type { Device } from '../../common/ort.js';
import type { ModelConfig } from '../../model/types.js';

export interface SpliceInit {
  /** Decoder graph bytes, built for one KV slot. */
  model: Uint8Array;
  config: ModelConfig;
  /** Every hook point of the graph (each has a steering input that must be fed). */
  hookPoints: string[];
  /** The hook the SAE is spliced in at. */
  hook: string;
  /** The TopK SAE, `W_enc` `[dIn, dSae]`. */
  sae: { W_enc: Float32Array; b_enc: Float32Array; W_dec: Float32Array; b_dec: Float32Array; dIn: number; dSae: number; k: number };
  device: Device;
  intraOpThreads?: number;
}

/** Per-document results; cross-entropies are means over the document's `targets` next-token predictions. */
export interface SpliceScores {
  targets: number;
  clean: number;
  spliced: number;
  ablated: number;
  /** Σ‖x − x̂‖² over the document's rows at the hook. */
  sqError: number;
  /** The clean activations at the hook, `[T, dim]`. */
  activations: Float32Array;
}

export interface ScoreRequest {
  /** One document's token ids (≥ 2). */
  tokens: number[];
}

export interface SpliceWorkerProtocol {
  init: SpliceInit;
  request: ScoreRequest;
  response: SpliceScores;
  notice: never;
  event: never;
}
