/**
 * Joins the engine to saegate's tap: subscriptions switch the runtime's taps on and off, each
 * step's activation rows and tokens go up, request ends go up, plans and plan updates come down.
 *
 * Nothing here waits on the socket: TapClient's sends are synchronous and bounded (rows beyond its
 * queue budget are dropped and reported), so a slow or absent saegate never slows decoding. While
 * disconnected the runtime stops computing taps at all; the subscription comes back with the next
 * connection.
 *
 * Rows and tokens are coalesced across steps before they become frames: a small model decodes a
 * step in about a millisecond, and one frame per hook per step (ten for stories260K) plus one
 * `tokens` message per step cost more on both ends of the socket than the rows themselves (the
 * end-to-end bench, test/bench/e2e.ts, measured the per-step `tokens` message alone at a fifth of
 * the model server's event-loop time). Pending tokens and rows are flushed together, the tokens
 * first, when they reach `flushRows`, `flushMs` after the first one, and always before a request's
 * `end`, so a request's tokens precede its rows and both precede its end on the wire.
 *
 * Prompt tokens: the engine's steps carry only generated tokens, so the HTTP side hands each
 * request's prompt to the bridge (`engineWithPromptTokens`). At the request's prefill step, when the
 * subscription has `includePrompt`, the prompt goes up as one `tokens` message (positions
 * 0..P−1) together with the first generated token, and before that step's rows are queued: a
 * receiver has a request's prompt tokens before any of its rows.
 */
import { SaegateError } from '../common/errors.js';
import { TapClient, type TapClientStats } from '../tap/client.js';
import type { TapLogger } from '../tap/logger.js';
import type { LocalEngine } from './engine.js';
import type { Engine } from './engine-types.js';
import { TokenPieceDecoder } from './http/detokenizer.js';
import type { ActivationBatch, StepTokens, PlanSteeringEntry } from './runtime-protocol.js';
import type { Tokenizer } from './types.js';

export interface TapBridgeOptions {
  /** saegate's tap endpoint, `ws://HOST:PORT/v1/tap`. */
  url: string;
  /** Bearer token. */
  token?: string;
  engine: LocalEngine;
  /** Turns token ids into the text pieces of `tokens` messages; null sends empty pieces. */
  tokenizer: Tokenizer | null;
  /** Model id announced in hello. */
  modelId: string;
  /** How long a request waits for its plan. Default 2000 ms. */
  planWaitTimeoutMs?: number;
  /** Send-queue budget before rows are dropped, bytes. Default 64 MiB. */
  maxQueueBytes?: number;
  /** Rows (all hooks together) that trigger a flush of coalesced activations. Default 512. */
  flushRows?: number;
  /** Longest a row waits to be sent, ms. Default 2. */
  flushMs?: number;
  logger?: TapLogger;
}

/** Token entries gathered for the next flush (a `tokens` message's columns). */
interface PendingTokens {
  requestIds: string[];
  positions: number[];
  tokenIds: number[];
  texts: string[];
}

function noTokens(): PendingTokens {
  return { requestIds: [], positions: [], tokenIds: [], texts: [] };
}

export class TapBridge {
  readonly client: TapClient;
  private readonly engine: LocalEngine;
  private readonly tokenizer: Tokenizer | null;
  private readonly planWaitTimeoutMs: number;
  /** Per request: turns its tokens, prompt then generated, into text pieces. */
  private readonly detokenizers = new Map<string, TokenPieceDecoder>();
  /** Prompts of requests handed to the engine and not yet prefilled. */
  private readonly prompts = new Map<string, readonly number[]>();
  private readonly unsubscribe: (() => void)[] = [];
  private readonly flushRows: number;
  private readonly flushMs: number;
  /** Steps whose rows are not yet sent, oldest first. */
  private pending: ActivationBatch[][] = [];
  private pendingRows = 0;
  /** Token entries not yet sent, in step order (one `tokens` message at the next flush). */
  private pendingTokens = noTokens();
  private flushTimer: NodeJS.Timeout | null = null;

  constructor(options: TapBridgeOptions) {
    const engine = options.engine;
    this.engine = engine;
    this.tokenizer = options.tokenizer;
    this.planWaitTimeoutMs = options.planWaitTimeoutMs ?? 2000;
    this.flushRows = options.flushRows ?? 512;
    this.flushMs = options.flushMs ?? 2;
    this.client = new TapClient({
      url: options.url,
      token: options.token,
      hello: {
        modelId: options.modelId,
        dModel: engine.config.dim,
        nLayers: engine.config.nLayers,
        hookPoints: [...engine.hookPoints],
        dtypes: ['f32', 'f16'],
        canSteer: true,
        relativeSpans: true,
      },
      maxQueueBytes: options.maxQueueBytes,
      logger: options.logger,
    });
    const log = options.logger;

    this.client.on('subscribe', (sub) => {
      try {
        engine.setTapSubscription(sub.hooks.length > 0 ? { hooks: sub.hooks, dtype: sub.dtype, includePrompt: sub.includePrompt } : null);
      } catch (error) {
        log?.warn({ err: error }, 'tap: subscription refused');
      }
    });
    this.client.on('disconnected', () => engine.setTapSubscription(null));
    this.client.on('planUpdate', (update) => {
      if (!engine.isActive(update.requestId)) return;
      try {
        engine.updatePlan(update.requestId, update.entries);
      } catch (error) {
        log?.warn({ err: error, requestId: update.requestId }, 'tap: plan update refused');
      }
    });

    this.unsubscribe.push(
      engine.onStep((step) => {
        // Tokens before rows: a prefill step's tokens message carries the prompt, which must reach
        // saegate before any row of the request (enqueue may flush at once).
        if (step.tokens.requestIds.length > 0) this.sendStepTokens(step.tokens, step.phase === 'prefill');
        if (step.activations.length > 0) this.enqueue(step.activations);
      }),
      engine.onEnd((requestId, result) => {
        this.detokenizers.delete(requestId);
        this.prompts.delete(requestId);
        // The request's last tokens and rows, then its end, in one write.
        this.client.batch(() => {
          this.flush();
          this.client.sendEnd({ requestId, promptTokens: result.promptTokens, completionTokens: result.completionTokens, finishReason: result.finishReason });
        });
      }),
    );
  }

  private enqueue(step: ActivationBatch[]): void {
    this.pending.push(step);
    this.pendingRows += step.length * step[0].requestIds.length;
    this.flushSoon();
  }

  /** Flushes now when enough is pending, else arms the flush timer if it is not armed. */
  private flushSoon(): void {
    if (this.pendingRows + this.pendingTokens.requestIds.length >= this.flushRows) this.flush();
    else this.flushTimer ??= setTimeout(() => this.flush(), this.flushMs);
  }

  /** Sends the pending tokens (one message), then every pending row, one frame per hook, in one write. */
  flush(): void {
    if (this.flushTimer) {
      clearTimeout(this.flushTimer);
      this.flushTimer = null;
    }
    if (this.pendingTokens.requestIds.length === 0 && this.pending.length === 0) return;
    this.client.batch(() => this.sendPending());
  }

  private sendPending(): void {
    const tokens = this.pendingTokens;
    if (tokens.requestIds.length > 0) {
      this.pendingTokens = noTokens();
      this.client.sendTokens(tokens);
    }
    const steps = this.pending;
    if (steps.length === 0) return;
    this.pending = [];
    this.pendingRows = 0;
    if (steps.length === 1) {
      for (const b of steps[0]) this.client.sendActivations({ hook: b.hook, requestIds: b.requestIds, positions: b.positions, data: b.data });
      return;
    }
    // Group by hook across steps; each step's hooks share their request ids and positions.
    const byHook = new Map<string, ActivationBatch[]>();
    for (const step of steps) {
      for (const b of step) {
        const parts = byHook.get(b.hook);
        if (parts) parts.push(b);
        else byHook.set(b.hook, [b]);
      }
    }
    for (const [hook, parts] of byHook) {
      const rows = parts.reduce((n, p) => n + p.requestIds.length, 0);
      const data = parts[0].data instanceof Uint16Array ? new Uint16Array(rows * parts[0].dModel) : new Float32Array(rows * parts[0].dModel);
      const positions = new Int32Array(rows);
      const requestIds: string[] = [];
      let row = 0;
      for (const p of parts) {
        data.set(p.data, row * p.dModel);
        positions.set(p.positions, row);
        for (const id of p.requestIds) requestIds.push(id);
        row += p.requestIds.length;
      }
      this.client.sendActivations({ hook, requestIds, positions, data });
    }
  }

  /**
   * Records a request's prompt until its prefill step; returns the function that forgets it (for
   * a request that fails before prefill). See `engineWithPromptTokens`.
   */
  trackPrompt(requestId: string, promptTokens: readonly number[]): () => void {
    // A second request with an id already in flight is refused by the engine; keep the first one's prompt.
    if (this.prompts.has(requestId) || this.detokenizers.has(requestId)) return () => {};
    this.prompts.set(requestId, promptTokens);
    return () => {
      if (this.prompts.get(requestId) === promptTokens) this.prompts.delete(requestId);
    };
  }

  /**
   * Queues a step's generated tokens with their text pieces for the next flush; at a prefill step,
   * first each new request's prompt tokens when the subscription asks for prompts. Every token goes
   * through its request's decoder, connected or not, so pieces stay right after a reconnect;
   * TapClient queues (bounded) what it cannot send yet.
   */
  private sendStepTokens(tokens: StepTokens, prefill: boolean): void {
    const sendPrompt = prefill && this.client.subscription?.includePrompt === true;
    let requestIds = tokens.requestIds;
    let positions = tokens.positions;
    let tokenIds = tokens.tokenIds;
    let promptEntries = 0;
    if (prefill) {
      const promptOf = tokens.requestIds.map((id) => this.startRequest(id));
      promptEntries = sendPrompt ? promptOf.reduce((n, p) => n + p.length, 0) : 0;
      if (promptEntries > 0) {
        const count = promptEntries + tokens.requestIds.length;
        requestIds = [];
        positions = new Int32Array(count);
        tokenIds = new Int32Array(count);
        let entry = 0;
        promptOf.forEach((prompt, r) => {
          for (let p = 0; p < prompt.length; p++, entry++) {
            requestIds.push(tokens.requestIds[r]);
            positions[entry] = p;
            tokenIds[entry] = prompt[p];
          }
        });
        requestIds.push(...tokens.requestIds);
        positions.set(tokens.positions, promptEntries);
        tokenIds.set(tokens.tokenIds, promptEntries);
      }
    }
    // Pieces in entry order: per request, its prompt tokens come before its generated one.
    const pending = this.pendingTokens;
    for (let i = 0; i < requestIds.length; i++) {
      pending.requestIds.push(requestIds[i]);
      pending.positions.push(positions[i]);
      pending.tokenIds.push(tokenIds[i]);
      pending.texts.push(this.piece(requestIds[i], tokenIds[i]));
    }
    this.flushSoon();
  }

  /**
   * A request reached prefill: creates its piece decoder and returns the prompt to send ([] when
   * the bridge never saw it). When the prompt is not pushed through the decoder, its last tokens
   * become the decoder's context, so the first generated piece is the same either way.
   */
  private startRequest(requestId: string): readonly number[] {
    const prompt = this.prompts.get(requestId) ?? [];
    this.prompts.delete(requestId);
    if (!this.tokenizer) return prompt;
    const sendPrompt = this.client.subscription?.includePrompt === true;
    this.detokenizers.set(requestId, new TokenPieceDecoder(this.tokenizer, sendPrompt ? [] : prompt));
    return prompt;
  }

  /** Text a token completes for its request (a character split over tokens goes with the last one). */
  private piece(requestId: string, tokenId: number): string {
    if (!this.tokenizer) return '';
    let detok = this.detokenizers.get(requestId);
    if (!detok) {
      detok = new TokenPieceDecoder(this.tokenizer);
      this.detokenizers.set(requestId, detok);
    }
    return detok.push(tokenId);
  }

  /** The engine's `resolvePlan`: waits for plan `planId` and checks it is this request's. */
  async resolvePlan(requestId: string, planId: string, signal: AbortSignal | undefined): Promise<PlanSteeringEntry[]> {
    const plan = await this.client.waitForPlan(planId, { requestId, timeoutMs: this.planWaitTimeoutMs, signal });
    if (plan.requestId !== requestId) {
      throw new SaegateError('SAEGATE_ERR_STEERING', [`plan '${planId}' belongs to request '${plan.requestId}', not '${requestId}'`]);
    }
    return plan.entries.map((e) => ({ hook: e.hook, vector: e.vector, scale: e.scale, fromPosition: e.fromPosition, untilPosition: e.untilPosition, ...(e.span !== undefined && { span: e.span }) }));
  }

  start(): void {
    this.client.start();
  }

  stats(): TapClientStats {
    return this.client.stats;
  }

  async close(): Promise<void> {
    for (const off of this.unsubscribe) off();
    this.flush();
    await this.client.close();
  }
}

/**
 * `engine` as the HTTP API should see it when a tap is attached: each request's prompt token ids
 * are handed to the bridge before the engine runs the request, so the bridge can send them as the
 * request's prompt tokens at prefill (the engine's steps carry only generated tokens). `bridge`
 * is read per request: the bridge is created after the app that serves the engine.
 */
export function engineWithPromptTokens(engine: Engine, bridge: () => TapBridge | null): Engine {
  return {
    config: engine.config,
    async generate(request, onToken) {
      const forget = bridge()?.trackPrompt(request.requestId, request.promptTokens);
      try {
        return await engine.generate(request, onToken);
      } finally {
        forget?.();
      }
    },
    close: () => engine.close(),
  };
}
