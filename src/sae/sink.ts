/**
 * The SAE pipeline as the proxy's activation sink: each frame whose hook point has an SAE goes to
 * that SAE's micro-batcher (which copies the rows, so the socket's buffer can go), and encoded
 * batches come out to subscribers (monitoring, policies, live views) tagged with request ids (a
 * request table and a per-row index into it), positions and the token at each position. Nothing here waits: overload samples or drops rows in
 * the batcher and they are reported back to the tap as sink drops.
 *
 * Tokens arrive on the tap separately from rows (`tokens` messages, prompt tokens too when the
 * subscription has includePrompt). The sink keeps them per request (src/sae/tokens.ts, bounded) and
 * the batcher looks them up when it delivers a batch. A request's tokens are released after its
 * `end` once every row pushed before the end has been delivered or dropped, so a request that ends
 * while its last rows are still being encoded keeps its tokens on them.
 */
import type { Registry } from 'prom-client';
import { SaegateError } from '../common/errors.js';
import type { Device } from '../common/ort.js';
import type { ActivationSink, TapSource } from '../tap/sink.js';
import type { RequestEnd, TokensMessage } from '../tap/messages.js';
import type { ActivationsFrame } from '../tap/server.js';
import { MicroBatcher, type BatchObserver, type SaeResultBatch } from './batcher.js';
import { SaeMetrics, type SaeHookStats } from './metrics.js';
import { SaePool } from './pool.js';
import { RequestTokens } from './tokens.js';
import type { SaeWeights } from './types.js';

export interface SaeSinkOptions {
  /** SAEs to run, at most one per hook point. */
  saes: SaeWeights[];
  /**
   * Most features listed per row, the strongest (a cap for display; L0 and errors stay exact). Default:
   * none, every active feature of every row is listed, which the monitor's firing counts need.
   */
  topK?: number;
  /** Worker threads per SAE. Default 1. */
  workers?: number;
  /** Default 'cpu'. */
  device?: Device;
  /** Micro-batch size in rows. Default 256. */
  maxBatchRows?: number;
  /** Longest a row someone waits on (see `setUrgency`) waits for its batch, ms. Default 2. */
  maxDelayMs?: number;
  /**
   * Longest a row nobody waits on waits for its batch, ms: monitoring-only rows gather into larger,
   * cheaper batches. Never shorter than `maxDelayMs`, which is also the default.
   */
  monitorDelayMs?: number;
  /** Rows queued per SAE before every row is dropped (`queue_full`). Default 8192. */
  maxQueuedRows?: number;
  /** Queued rows per SAE above which rows are sampled (see MicroBatcher). Default `maxQueuedRows / 2`. */
  sampleAboveRows?: number;
  /** Requests whose tokens are kept for result rows, least recently touched forgotten first. Default 4096. */
  maxTokenRequests?: number;
  /** Token slots kept over all requests (one per position up to a request's highest). Default 1,048,576. */
  maxTokens?: number;
  /** Registers the `saegate_sae_*` metrics here (the proxy's registry). Default: no metrics. */
  registry?: Registry;
}

interface Binding {
  sae: SaeWeights;
  pool: SaePool;
  batcher: MicroBatcher;
  /** Rows refused because their width was not the SAE's d_in. */
  rowsRejected: number;
}

/** A request that ended while rows pushed before its end were still with the batchers. */
interface PendingEnd {
  requestId: string;
  /** Per binding (in `byHook` order), `pushedBatches` when the end arrived. */
  marks: number[];
}

export class SaeSink implements ActivationSink {
  private readonly byHook = new Map<string, Binding>();
  private readonly bindings: Binding[] = [];
  private readonly requestTokens: RequestTokens;
  /** Ends waiting for their rows to be delivered, oldest first; at most `maxPendingEnds`. */
  private readonly pendingEnds: PendingEnd[] = [];
  private readonly maxPendingEnds: number;

  private constructor(tokens: RequestTokens, maxPendingEnds: number) {
    this.requestTokens = tokens;
    this.maxPendingEnds = maxPendingEnds;
  }

  /** Starts a worker pool and a micro-batcher per SAE (and registers the metrics when given a registry). */
  static async create(options: SaeSinkOptions): Promise<SaeSink> {
    const tokens = new RequestTokens({ maxTokenRequests: options.maxTokenRequests, maxTokens: options.maxTokens });
    const sink = new SaeSink(tokens, options.maxTokenRequests ?? 4096);
    const hooks = options.saes.map((sae) => sae.config.hookName);
    const duplicate = hooks.find((hook, i) => hooks.indexOf(hook) !== i);
    if (duplicate !== undefined) throw new SaegateError('SAEGATE_ERR_CONFIG', ['saes', `two SAEs for hook '${duplicate}'; one per hook point`]);
    const metrics = options.registry === undefined ? null : new SaeMetrics({ registry: options.registry, hooks, stats: () => sink.stats() });
    try {
      for (const sae of options.saes) {
        const hook = sae.config.hookName;
        const pool = await SaePool.create({ sae, ...(options.topK !== undefined && { topK: options.topK }), workers: options.workers, device: options.device });
        const batcher = new MicroBatcher({
          pool,
          dIn: sae.config.dIn,
          maxBatchRows: options.maxBatchRows,
          maxDelayMs: options.maxDelayMs,
          relaxedDelayMs: Math.max(options.monitorDelayMs ?? 0, options.maxDelayMs ?? 2),
          maxQueuedRows: options.maxQueuedRows,
          sampleAboveRows: options.sampleAboveRows,
          tokens,
          observer: sink.observerFor(metrics?.observer(hook) ?? null),
        });
        const binding: Binding = { sae, pool, batcher, rowsRejected: 0 };
        sink.byHook.set(hook, binding);
        sink.bindings.push(binding);
      }
    } catch (error) {
      for (const b of sink.bindings) await b.pool.close();
      // The registry outlives a failed start (a caller may retry): leave it as it was.
      metrics?.unregister();
      throw error;
    }
    return sink;
  }

  /** Hook points that have an SAE: what the tap should subscribe to. */
  get hooks(): string[] {
    return [...this.byHook.keys()];
  }

  /** Rows whose width did not match their SAE's d_in, over every hook. */
  get rowsRejected(): number {
    let rows = 0;
    for (const b of this.bindings) rows += b.rowsRejected;
    return rows;
  }

  write(frame: ActivationsFrame, _source: TapSource): number {
    const binding = this.byHook.get(frame.hook);
    if (!binding) return 0; // a hook nobody runs an SAE on: not ours to count
    if (frame.dModel !== binding.sae.config.dIn) {
      binding.rowsRejected += frame.rowCount;
      return frame.rowCount;
    }
    const dropped = binding.batcher.stats.rowsDropped;
    const before = dropped.queue_full + dropped.sampled;
    // The frame is already in the batcher's compact form (request table + index column + positions).
    binding.batcher.push(frame.data, frame.rowCount, frame);
    return dropped.queue_full + dropped.sampled - before;
  }

  /** Keeps the token id and text piece of each entry for the request's result rows. */
  tokens(message: TokensMessage, _source: TapSource): void {
    this.requestTokens.add(message);
  }

  /** Releases the request's tokens once every row pushed before now has been delivered or dropped. */
  end(end: RequestEnd, _source: TapSource): void {
    const marks = this.bindings.map((b) => b.batcher.pushedBatches);
    const pending: PendingEnd = { requestId: end.requestId, marks };
    if (this.isSettled(pending)) {
      this.requestTokens.delete(end.requestId);
      return;
    }
    this.pendingEnds.push(pending);
    // A pool that never answers must not make this list grow without bound: the oldest ends go
    // early, and rows still queued for them get unknown tokens.
    if (this.pendingEnds.length > this.maxPendingEnds) this.requestTokens.delete(this.pendingEnds.shift()!.requestId);
  }

  /**
   * Says which rows someone waits on: `isUrgent(hook, requestIds)` is asked once per tap frame with
   * the frame's request table, and a true answer gives the frame's rows `maxDelayMs` instead of
   * `monitorDelayMs`. null (the default) makes every row urgent.
   */
  setUrgency(isUrgent: ((hook: string, requestIds: readonly string[]) => boolean) | null): void {
    for (const b of this.bindings) b.batcher.setUrgency(isUrgent === null ? null : (meta) => isUrgent(meta.hook, meta.requestIds));
  }

  /** The precision of the weights the SAE at `hook` is encoded with (`SaePool.weights`); undefined for a hook without an SAE. */
  precision(hook: string): 'f32' | 'f16' | undefined {
    return this.byHook.get(hook)?.pool.weights;
  }

  /** Subscribes to encoded batches of every SAE; returns the unsubscribe function. */
  onResult(listener: (batch: SaeResultBatch) => void): () => void {
    const offs = this.bindings.map((b) => b.batcher.onResult(listener));
    return () => offs.forEach((off) => off());
  }

  /** Per-hook batcher and pool counters, rows refused for their width and rows queued now. */
  stats(): Record<string, SaeHookStats> {
    return Object.fromEntries(
      [...this.byHook].map(([hook, b]) => [hook, { batcher: b.batcher.stats, pool: b.pool.stats, rowsRejected: b.rowsRejected, queuedRows: b.batcher.queuedRows }]),
    );
  }

  /** Requests whose tokens are held now. */
  get tokenRequests(): number {
    return this.requestTokens.requests;
  }

  async close(): Promise<void> {
    for (const b of this.bindings) {
      await b.batcher.close();
      await b.pool.close();
    }
    this.pendingEnds.length = 0;
    this.requestTokens.clear();
  }

  /** The batcher observer: request bookkeeping on every settled batch, plus the hook's metrics when on. */
  private observerFor(metrics: BatchObserver | null): BatchObserver {
    if (metrics === null) {
      return {
        batchSent() {},
        batchSettled: () => this.releaseEnded(),
      };
    }
    return {
      batchSent: (rowCount) => metrics.batchSent(rowCount),
      batchSettled: (report) => {
        metrics.batchSettled(report);
        this.releaseEnded();
      },
    };
  }

  /** Releases the tokens of ended requests whose rows are all out, oldest first. */
  private releaseEnded(): void {
    const pending = this.pendingEnds;
    // Marks only grow along the list, so the first unsettled end blocks the ones after it.
    let released = 0;
    while (released < pending.length && this.isSettled(pending[released])) {
      this.requestTokens.delete(pending[released].requestId);
      released++;
    }
    if (released > 0) pending.splice(0, released);
  }

  private isSettled(pending: PendingEnd): boolean {
    const bindings = this.bindings;
    for (let i = 0; i < bindings.length; i++) {
      if (bindings[i].batcher.settledBatches < pending.marks[i]) return false;
    }
    return true;
  }
}
