/**
 * Joins the engine to saegate's tap: subscriptions switch the runtime's taps on and off, each
 * step's activation rows and tokens go up, request ends go up, plans and plan updates come down.
 *
 * Nothing here waits on the socket: TapClient's sends are synchronous and bounded (rows beyond its
 * queue budget are dropped and reported), so a slow or absent saegate never slows decoding. While
 * disconnected the runtime stops computing taps at all; the subscription comes back with the next
 * connection.
 */
import { SaegateError } from '../common/errors.js';
import { TapClient, type TapClientStats } from '../tap/client.js';
import type { TapLogger } from '../tap/logger.js';
import type { LocalEngine } from './engine.js';
import { StopSequenceDetokenizer } from './http/detokenizer.js';
import type { WorkerSteeringEntry } from './runtime-protocol.js';
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
  logger?: TapLogger;
}

export class TapBridge {
  readonly client: TapClient;
  private readonly engine: LocalEngine;
  private readonly tokenizer: Tokenizer | null;
  private readonly planWaitTimeoutMs: number;
  private readonly detokenizers = new Map<string, StopSequenceDetokenizer>();
  private readonly unsubscribe: (() => void)[] = [];

  constructor(options: TapBridgeOptions) {
    const engine = options.engine;
    this.engine = engine;
    this.tokenizer = options.tokenizer;
    this.planWaitTimeoutMs = options.planWaitTimeoutMs ?? 2000;
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
        for (const batch of step.activations) {
          this.client.sendActivations({ hook: batch.hook, requestIds: batch.requestIds, positions: batch.positions, data: batch.data });
        }
        const { requestIds, positions, tokenIds } = step.tokens;
        if (requestIds.length > 0 && this.client.connected) {
          const texts = requestIds.map((id, i) => this.piece(id, tokenIds[i]));
          this.client.sendTokens({ requestIds, positions, tokenIds, texts });
        }
      }),
      engine.onEnd((requestId, result) => {
        this.detokenizers.delete(requestId);
        this.client.sendEnd({ requestId, promptTokens: result.promptTokens, completionTokens: result.completionTokens, finishReason: result.finishReason });
      }),
    );
  }

  /** Text a token completes for its request (a character split over tokens goes with the last one). */
  private piece(requestId: string, tokenId: number): string {
    if (!this.tokenizer) return '';
    let detok = this.detokenizers.get(requestId);
    if (!detok) {
      detok = new StopSequenceDetokenizer({ tokenizer: this.tokenizer, stop: [], silentTokenIds: [] });
      this.detokenizers.set(requestId, detok);
    }
    return detok.push(tokenId);
  }

  /** The engine's `resolvePlan`: waits for plan `planId` and checks it is this request's. */
  async resolvePlan(requestId: string, planId: string, signal: AbortSignal | undefined): Promise<WorkerSteeringEntry[]> {
    const plan = await this.client.waitForPlan(planId, { requestId, timeoutMs: this.planWaitTimeoutMs, signal });
    if (plan.requestId !== requestId) {
      throw new SaegateError('SAEGATE_ERR_STEERING', [`plan '${planId}' belongs to request '${plan.requestId}', not '${requestId}'`]);
    }
    return plan.entries.map((e) => ({ hook: e.hook, vector: e.vector, scale: e.scale, fromPosition: e.fromPosition, untilPosition: e.untilPosition }));
  }

  start(): void {
    this.client.start();
  }

  stats(): TapClientStats {
    return this.client.stats;
  }

  async close(): Promise<void> {
    for (const off of this.unsubscribe) off();
    await this.client.close();
  }
}
