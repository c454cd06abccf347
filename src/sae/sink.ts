/**
 * The SAE pipeline as the proxy's activation sink: each frame whose hook point has an SAE goes to
 * that SAE's micro-batcher (which copies the rows, so the socket's buffer can go), and encoded
 * batches come out to subscribers (monitoring, policies, live views) tagged with request ids and
 * positions. Nothing here waits: overload drops rows in the batcher and they are reported back to
 * the tap as sink drops.
 */
import { SaegateError } from '../common/errors.js';
import type { Device } from '../common/ort.js';
import type { ActivationSink, TapSource } from '../proxy/sink.js';
import type { ActivationsFrame } from '../tap/server.js';
import { MicroBatcher, type SaeResultBatch } from './batcher.js';
import { SaePool } from './pool.js';
import type { SaeWeights } from './types.js';

export interface SaeSinkOptions {
  /** SAEs to run, at most one per hook point. */
  saes: SaeWeights[];
  /** Most active features reported per row. Default: k for TopK SAEs, else 64. */
  topK?: number;
  /** Worker threads per SAE. Default 1. */
  workers?: number;
  /** Default 'cpu'. */
  device?: Device;
  /** Micro-batch size in rows. Default 256. */
  maxBatchRows?: number;
  /** Longest a row waits for its batch, ms. Default 2. */
  maxDelayMs?: number;
  /** Rows queued per SAE before drops. Default 8192. */
  maxQueuedRows?: number;
}

interface Binding {
  sae: SaeWeights;
  pool: SaePool;
  batcher: MicroBatcher;
}

export class SaeSink implements ActivationSink {
  private readonly byHook: Map<string, Binding>;
  /** Rows whose width did not match their SAE's d_in. */
  rowsRejected = 0;

  private constructor(bindings: Map<string, Binding>) {
    this.byHook = bindings;
  }

  /** Starts a worker pool and a micro-batcher per SAE. */
  static async create(options: SaeSinkOptions): Promise<SaeSink> {
    const bindings = new Map<string, Binding>();
    try {
      for (const sae of options.saes) {
        const hook = sae.config.hookName;
        if (bindings.has(hook)) throw new SaegateError('SAEGATE_ERR_CONFIG', ['saes', `two SAEs for hook '${hook}'; one per hook point`]);
        const topK = Math.min(sae.config.dSae, options.topK ?? sae.config.k ?? 64);
        const pool = await SaePool.create({ sae, topK, workers: options.workers, device: options.device });
        const batcher = new MicroBatcher({ pool, dIn: sae.config.dIn, maxBatchRows: options.maxBatchRows, maxDelayMs: options.maxDelayMs, maxQueuedRows: options.maxQueuedRows });
        bindings.set(hook, { sae, pool, batcher });
      }
    } catch (error) {
      for (const b of bindings.values()) await b.pool.close();
      throw error;
    }
    return new SaeSink(bindings);
  }

  /** Hook points that have an SAE: what the tap should subscribe to. */
  get hooks(): string[] {
    return [...this.byHook.keys()];
  }

  write(frame: ActivationsFrame, _source: TapSource): number {
    const binding = this.byHook.get(frame.hook);
    if (!binding) return 0; // a hook nobody runs an SAE on: not ours to count
    if (frame.dModel !== binding.sae.config.dIn) {
      this.rowsRejected += frame.rowCount;
      return frame.rowCount;
    }
    const requestIds = new Array<string>(frame.rowCount);
    for (let i = 0; i < frame.rowCount; i++) requestIds[i] = frame.requestIds[frame.rowRequestIndexes[i]];
    const stats = binding.batcher.stats.rowsDropped;
    const before = stats.queue_full;
    binding.batcher.push(frame.data, frame.rowCount, { requestIds, positions: frame.positions, hook: frame.hook });
    return stats.queue_full - before;
  }

  /** Subscribes to encoded batches of every SAE; returns the unsubscribe function. */
  onResult(listener: (batch: SaeResultBatch) => void): () => void {
    const offs = [...this.byHook.values()].map((b) => b.batcher.onResult(listener));
    return () => offs.forEach((off) => off());
  }

  /** Per-hook batcher and pool counters. */
  stats(): Record<string, { batcher: MicroBatcher['stats']; pool: SaePool['stats'] }> {
    return Object.fromEntries([...this.byHook].map(([hook, b]) => [hook, { batcher: b.batcher.stats, pool: b.pool.stats }]));
  }

  async close(): Promise<void> {
    for (const b of this.byHook.values()) {
      await b.batcher.close();
      await b.pool.close();
    }
  }
}
