/**
 * Joins the engine to saegate's tap: subscriptions switch the runtime's taps on and off, each
 * step's activation rows and tokens go up, request ends go up, plans and plan updates come down.
 *
 * Nothing here waits on the socket: TapClient's sends are synchronous and bounded (rows beyond its
 * queue budget are dropped and reported), so a slow or absent saegate never slows decoding. While
 * disconnected the runtime stops computing taps at all; the subscription comes back with the next
 * connection.
 *
 * Rows, tokens and request ends are coalesced across steps before they become frames: a small
 * model decodes a step in about a millisecond, and every write to saegate's socket costs the model
 * server's core tens of microseconds (on loopback the sender also runs the receiver's TCP work and
 * wakes it), about what a whole step of stories260K's event-loop work costs. Flushes happen at step
 * boundaries: after a step's data is queued, the bridge flushes when the oldest pending entry would
 * be older than `flushMs` by the time the next step is expected (the step interval is tracked), or
 * when `flushRows` rows and tokens are pending. So a model whose steps take longer than `flushMs`
 * sends every step at once, and a fast one sends about every `flushMs`, in the same event-loop turn
 * as a step (no timer wakeup of its own). A timer at `flushMs` after the first pending entry covers
 * the end of a burst. A subscription's `maxDelayMs`, when longer, replaces `flushMs` in all of
 * this: saegate asks for it when nothing it runs needs the data sooner (no conditional policy),
 * which makes the writes that many times fewer.
 *
 * Per request, a hold may replace the subscription's: the `x-saegate-tap-max-delay-ms` header of
 * its HTTP request (handed over with its prompt, `trackRequest`) or a later `plan_update`'s
 * `maxDelayMs`. saegate relaxes this way the requests no conditional rule reads (or whose rules
 * have all fired) while a conditional policy keeps the subscription short. A flush serves every
 * request at once, so the delay in force is the shortest hold among the running requests (from
 * prefill to end): one request a rule waits on keeps every flush short while it runs.
 *
 * A request's `end` waits for the next flush, after
 * its last tokens and rows, so its tokens precede its rows and both precede its end on the wire;
 * each flush is one write (the tap client corks its socket).
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
import type { RequestEnd } from '../tap/messages.js';
import type { Tokenizer } from './types.js';

/** What the bridge needs of the engine (a LocalEngine; benches drive it with recorded steps). */
export type TapEngine = Pick<LocalEngine, 'config' | 'hookPoints' | 'onStep' | 'onEnd' | 'setTapSubscription' | 'isActive' | 'updatePlan'>;

/** What `/healthz` says of the tap (snake_case like the rest of it). */
export interface TapHealth {
  /** A welcomed connection to saegate is open. */
  connected: boolean;
  /** Writes to saegate's socket since start (TapClientStats.writes). */
  writes: number;
  /** How long pending rows, tokens and ends may wait now, ms. */
  delay_ms: number;
  /** Requests that ran with a tap hold of their own (header or plan update) since start. */
  requests_with_own_hold: number;
}

/** How long a request waits for its plan when `planWaitTimeoutMs` is not given, ms. */
export const DEFAULT_PLAN_WAIT_TIMEOUT_MS = 2000;

export interface TapBridgeOptions {
  /** saegate's tap endpoint, `ws://HOST:PORT/v1/tap`. */
  url: string;
  /** Bearer token. */
  token?: string;
  engine: TapEngine;
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
  /** Longest a row, token or end should wait to be sent, ms (see the class comment). Default 2. */
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
  private readonly engine: TapEngine;
  private readonly tokenizer: Tokenizer | null;
  private readonly planWaitTimeoutMs: number;
  /** Per request: turns its tokens, prompt then generated, into text pieces. */
  private readonly detokenizers = new Map<string, TokenPieceDecoder>();
  /** Requests handed to the engine and not yet prefilled: their prompt, and their own hold (`x-saegate-tap-max-delay-ms`) or null. */
  private readonly tracked = new Map<string, { prompt: readonly number[]; hold: number | null }>();
  /** Requests from prefill to end, with their own hold in ms, or null for the subscription's. */
  private readonly running = new Map<string, number | null>();
  /** Requests that ran with a hold of their own (their header, or a plan update's), so far. */
  private heldRequests = 0;
  private readonly unsubscribe: (() => void)[] = [];
  private readonly flushRows: number;
  private readonly flushMs: number;
  /** The subscription's hold: `flushMs`, or its longer `maxDelayMs`. */
  private subscriptionDelayMs: number;
  /** How long entries may wait now: the shortest hold among running requests (see the class comment), at least `flushMs`. */
  private delayMs: number;
  /** Steps whose rows are not yet sent, oldest first. */
  private pending: ActivationBatch[][] = [];
  private pendingRows = 0;
  /** Token entries not yet sent, in step order (one `tokens` message at the next flush). */
  private pendingTokens = noTokens();
  /** Ends of requests whose last tokens and rows are pending or sent; they go last in a flush. */
  private pendingEnds: RequestEnd[] = [];
  /** performance.now() when the oldest pending entry was queued; NaN when nothing is pending. */
  private pendingSince = NaN;
  /** performance.now() of the last step, and a moving average of the time between steps (ms). */
  private lastStepAt = NaN;
  private stepIntervalMs = 0;
  private flushTimer: NodeJS.Timeout | null = null;

  constructor(options: TapBridgeOptions) {
    const engine = options.engine;
    this.engine = engine;
    this.tokenizer = options.tokenizer;
    this.planWaitTimeoutMs = options.planWaitTimeoutMs ?? DEFAULT_PLAN_WAIT_TIMEOUT_MS;
    this.flushRows = options.flushRows ?? 512;
    this.flushMs = options.flushMs ?? 2;
    this.subscriptionDelayMs = this.flushMs;
    this.delayMs = this.flushMs;
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
      // saegate may let entries wait longer than our own interval when nothing it runs needs them
      // sooner; when it stops, what is pending goes now.
      const before = this.delayMs;
      this.subscriptionDelayMs = Math.max(this.flushMs, sub.maxDelayMs ?? 0);
      this.updateDelay();
      if (this.delayMs < before) this.flush();
      try {
        engine.setTapSubscription(sub.hooks.length > 0 ? { hooks: sub.hooks, dtype: sub.dtype, includePrompt: sub.includePrompt } : null);
      } catch (error) {
        log?.warn({ err: error }, 'tap: subscription refused');
      }
    });
    this.client.on('disconnected', () => {
      engine.setTapSubscription(null);
      this.subscriptionDelayMs = this.flushMs;
      this.updateDelay();
    });
    this.client.on('planUpdate', (update) => {
      // The tokens of every step finished before the update go ahead of its plan_ack (the client
      // sends both in one write): saegate reads the trigger lag from that order.
      this.flush();
      if (!engine.isActive(update.requestId)) return;
      if (update.maxDelayMs !== undefined && this.running.has(update.requestId)) this.setHold(update.requestId, update.maxDelayMs);
      try {
        engine.updatePlan(update.requestId, update.entries);
      } catch (error) {
        log?.warn({ err: error, requestId: update.requestId }, 'tap: plan update refused');
      }
    });

    this.unsubscribe.push(
      engine.onStep((step) => {
        const now = performance.now();
        // A sample is capped at twice the delay: longer intervals all mean "flush at the step", and
        // an idle gap before a burst must not keep the average high through the burst's first steps.
        if (!Number.isNaN(this.lastStepAt)) this.stepIntervalMs = 0.8 * this.stepIntervalMs + 0.2 * Math.min(now - this.lastStepAt, 2 * this.delayMs);
        this.lastStepAt = now;
        // Tokens before rows: a prefill step's tokens message carries the prompt, which must reach
        // saegate before any row of the request.
        if (step.tokens.requestIds.length > 0) this.sendStepTokens(step.tokens, step.phase === 'prefill');
        if (step.activations.length > 0) {
          this.pending.push(step.activations);
          this.pendingRows += step.activations.length * step.activations[0].requestIds.length;
        }
        this.afterQueue(now);
      }),
      engine.onEnd((requestId, result) => {
        this.detokenizers.delete(requestId);
        this.tracked.delete(requestId);
        if (this.running.delete(requestId)) this.updateDelay();
        // After the request's last tokens and rows (queued by its last step), in the next flush.
        this.pendingEnds.push({ requestId, promptTokens: result.promptTokens, completionTokens: result.completionTokens, finishReason: result.finishReason });
        this.afterQueue(performance.now(), false);
      }),
    );
  }

  /**
   * After entries were queued: flushes now when enough is pending or when the oldest entry would
   * pass `delayMs` before the next step is expected (`atStep`: called for a step), else makes
   * sure the timer will flush `delayMs` after the oldest entry.
   */
  private afterQueue(now: number, atStep = true): void {
    const pendingEntries = this.pendingRows + this.pendingTokens.requestIds.length;
    if (pendingEntries === 0 && this.pendingEnds.length === 0) return;
    if (Number.isNaN(this.pendingSince)) this.pendingSince = now;
    if (pendingEntries >= this.flushRows || (atStep && now - this.pendingSince + this.stepIntervalMs >= this.delayMs)) {
      this.flush();
      return;
    }
    this.flushTimer ??= setTimeout(() => this.flush(), Math.max(0, this.pendingSince + this.delayMs - now));
  }

  /** A running request's hold from now on (null: the subscription's); counts it the first time it has one of its own. */
  private setHold(requestId: string, hold: number | null): void {
    if (hold !== null && (this.running.get(requestId) ?? null) === null) this.heldRequests++;
    this.running.set(requestId, hold);
    this.updateDelay();
  }

  /**
   * Recomputes the delay in force after a running request or the subscription changed. A shorter
   * one moves the flush timer forward; entries already older than it go with the next step (or
   * the timer, at once).
   */
  private updateDelay(): void {
    let delay = Infinity;
    let subscription = this.running.size === 0;
    for (const hold of this.running.values()) {
      if (hold === null) subscription = true;
      else if (hold < delay) delay = hold;
    }
    if (subscription) delay = Math.min(delay, this.subscriptionDelayMs);
    delay = Math.max(this.flushMs, delay);
    const shorter = delay < this.delayMs;
    this.delayMs = delay;
    if (shorter && this.flushTimer) {
      clearTimeout(this.flushTimer);
      this.flushTimer = setTimeout(() => this.flush(), Math.max(0, this.pendingSince + delay - performance.now()));
    }
  }

  /** The tap's part of the model server's `/healthz`. */
  health(): TapHealth {
    return { connected: this.client.sessionId !== null, writes: this.client.stats.writes, delay_ms: this.delayMs, requests_with_own_hold: this.heldRequests };
  }

  /** Sends the pending tokens (one message), every pending row (one frame per hook), then pending ends, in one write. */
  flush(): void {
    if (this.flushTimer) {
      clearTimeout(this.flushTimer);
      this.flushTimer = null;
    }
    this.pendingSince = NaN;
    if (this.pendingTokens.requestIds.length === 0 && this.pending.length === 0 && this.pendingEnds.length === 0) return;
    this.client.batch(() => this.sendPending());
  }

  private sendPending(): void {
    const tokens = this.pendingTokens;
    if (tokens.requestIds.length > 0) {
      this.pendingTokens = noTokens();
      this.client.sendTokens(tokens);
    }
    const steps = this.pending;
    this.pending = [];
    this.pendingRows = 0;
    this.sendRows(steps);
    const ends = this.pendingEnds;
    this.pendingEnds = [];
    for (const end of ends) this.client.sendEnd(end);
  }

  /** Every row of `steps`, one frame per hook. */
  private sendRows(steps: ActivationBatch[][]): void {
    if (steps.length === 0) return;
    if (steps.length === 1) {
      for (const b of steps[0]) this.client.sendActivations({ hook: b.hook, requestIds: b.requestIds, positions: b.positions, data: b.data });
      return;
    }
    // Group by hook across steps; each step's hooks share their request ids and positions. The
    // steps' rows go into the frame as parts: no concatenated copy.
    const byHook = new Map<string, ActivationBatch[]>();
    for (const step of steps) {
      for (const b of step) {
        const parts = byHook.get(b.hook);
        if (parts) parts.push(b);
        else byHook.set(b.hook, [b]);
      }
    }
    for (const [hook, parts] of byHook) {
      const requestIds: string[] = [];
      const positions: number[] = [];
      for (const p of parts) {
        for (const id of p.requestIds) requestIds.push(id);
        for (const position of p.positions) positions.push(position);
      }
      const data = parts[0].data instanceof Uint16Array ? parts.map((p) => p.data as Uint16Array) : parts.map((p) => p.data as Float32Array);
      this.client.sendActivations({ hook, requestIds, positions, data });
    }
  }

  /**
   * Records a request's prompt, and its own tap hold when its HTTP request set one, until its
   * prefill step; returns the function that forgets them (for a request that fails before
   * prefill). See `engineWithPromptTokens`.
   */
  trackRequest(requestId: string, promptTokens: readonly number[], holdMs: number | null = null): () => void {
    // A second request with an id already in flight is refused by the engine; keep the first one's prompt.
    if (this.tracked.has(requestId) || this.detokenizers.has(requestId) || this.running.has(requestId)) return () => {};
    const entry = { prompt: promptTokens, hold: holdMs };
    this.tracked.set(requestId, entry);
    return () => {
      if (this.tracked.get(requestId) === entry) this.tracked.delete(requestId);
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
  }

  /**
   * A request reached prefill: creates its piece decoder and returns the prompt to send ([] when
   * the bridge never saw it). When the prompt is not pushed through the decoder, its last tokens
   * become the decoder's context, so the first generated piece is the same either way.
   */
  private startRequest(requestId: string): readonly number[] {
    const tracked = this.tracked.get(requestId);
    this.tracked.delete(requestId);
    const prompt = tracked?.prompt ?? [];
    this.setHold(requestId, tracked?.hold ?? null);
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
    stats: engine.stats,
    async generate(request, onToken) {
      const forget = bridge()?.trackRequest(request.requestId, request.promptTokens, request.tapMaxDelayMs ?? null);
      try {
        return await engine.generate(request, onToken);
      } finally {
        forget?.();
      }
    },
    close: () => engine.close(),
  };
}
