/**
 * The SAE micro-batcher: gathers activation rows from many requests into batches for the worker
 * pool, and hands the encoded results to subscribers in push order.
 *
 * Rows are copied (f16 rows converted) into a preallocated batch buffer. A batch is sent when it
 * holds `maxBatchRows` rows or `maxDelayMs` after its first row arrived, whichever is first. At most
 * `maxInFlight` batches are with the pool; full batches beyond that wait in a queue. `push()` never
 * blocks and never throws on overload: when the queued rows (waiting batches plus the open one)
 * would exceed `maxQueuedRows`, the rows that do not fit are dropped whole and counted by reason, so
 * the tap and the request path never wait on the SAE.
 *
 * Ordering: with several workers, batches may finish out of order; results are held back until
 * every earlier batch has been delivered (or failed), so each request sees its rows in push order.
 */
import { err } from '../common/errors.js';
import { f16ToF32 } from '../common/f16.js';
import type { SaeEncoder } from './pool.js';

/** Why rows never reached a subscriber. */
export type DropReason = 'queue_full' | 'worker_exited' | 'encode_failed';

export interface MicroBatcherOptions {
  pool: SaeEncoder;
  /** Values per row (the SAE's d_in). */
  dIn: number;
  /** Most rows per batch. Default 256. */
  maxBatchRows?: number;
  /** Longest a row waits for its batch to fill, milliseconds. Default 2. */
  maxDelayMs?: number;
  /** Most rows waiting for the pool (open batch plus full batches not yet sent). Default 8192. */
  maxQueuedRows?: number;
  /** Most batches with the pool at once. Default: the pool's worker count. */
  maxInFlight?: number;
}

export interface PushMeta {
  /** Request id of each row. */
  requestIds: readonly string[];
  /** Token position of each row. */
  positions: Int32Array;
  /** Hook point the rows were read at. */
  hook: string;
}

/** Encoded rows of one batch, row-aligned with `requestIds` / `positions`. */
export interface SaeResultBatch {
  hook: string;
  rowCount: number;
  topK: number;
  requestIds: string[];
  positions: Int32Array;
  /** [rowCount · topK]; −1 pads unused slots. */
  indices: Int32Array;
  /** [rowCount · topK] */
  values: Float32Array;
  /** [rowCount] */
  l0: Int32Array;
  /** [rowCount] */
  sqError: Float32Array;
  /** [rowCount] */
  fvu: Float32Array;
}

export type SaeResultListener = (batch: SaeResultBatch) => void;

export interface MicroBatcherStats {
  rowsIn: number;
  rowsEncoded: number;
  rowsDropped: Record<DropReason, number>;
  /** Batches sent to the pool. */
  batches: number;
  /** Rows per batch sent, on average (0 before the first). */
  meanBatchRows: number;
}

interface Batch {
  seq: number;
  hook: string;
  rows: Float32Array;
  rowCount: number;
  requestIds: string[];
  positions: Int32Array;
}

/** A settled batch waiting for its turn: a result, or null when it failed. */
type Settled = SaeResultBatch | null;

export class MicroBatcher {
  readonly stats: MicroBatcherStats = {
    rowsIn: 0,
    rowsEncoded: 0,
    rowsDropped: { queue_full: 0, worker_exited: 0, encode_failed: 0 },
    batches: 0,
    meanBatchRows: 0,
  };
  private readonly pool: SaeEncoder;
  private readonly dIn: number;
  private readonly maxBatchRows: number;
  private readonly maxDelayMs: number;
  private readonly maxQueuedRows: number;
  private readonly maxInFlight: number;
  private readonly listeners = new Set<SaeResultListener>();
  /** Row buffers returned by the pool, reused for later batches. */
  private readonly freeBuffers: Float32Array[] = [];
  private open: Batch | null = null;
  private timer: NodeJS.Timeout | null = null;
  private readonly waiting: Batch[] = [];
  private waitingRows = 0;
  private inFlight = 0;
  private nextSeq = 0;
  private nextDeliver = 0;
  private readonly settled = new Map<number, Settled>();
  private idleWaiters: (() => void)[] = [];
  private rowsSent = 0;
  private closed = false;

  constructor(options: MicroBatcherOptions) {
    this.pool = options.pool;
    this.dIn = options.dIn;
    this.maxBatchRows = options.maxBatchRows ?? 256;
    this.maxDelayMs = options.maxDelayMs ?? 2;
    this.maxQueuedRows = options.maxQueuedRows ?? 8192;
    this.maxInFlight = options.maxInFlight ?? options.pool.workers;
    for (const [name, value] of [['dIn', this.dIn], ['maxBatchRows', this.maxBatchRows], ['maxQueuedRows', this.maxQueuedRows], ['maxInFlight', this.maxInFlight]] as const) {
      if (!Number.isInteger(value) || value < 1) throw err('SAEGATE_ERR_CONFIG', name, `a positive integer, got ${value}`);
    }
    if (!(this.maxDelayMs >= 0)) throw err('SAEGATE_ERR_CONFIG', 'maxDelayMs', `a non-negative number, got ${this.maxDelayMs}`);
  }

  /** Subscribes to result batches; returns the unsubscribe function. */
  onResult(listener: SaeResultListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Queues `rowCount` rows (`rowCount × dIn` values: f32, or f16 bits as a Uint16Array). The rows are
   * copied; the caller keeps its buffers. Rows beyond `maxQueuedRows` are dropped and counted.
   * Throws only for malformed arguments (wrong lengths), never for overload.
   */
  push(rows: Float32Array | Uint16Array, rowCount: number, meta: PushMeta): void {
    const dIn = this.dIn;
    if (!Number.isInteger(rowCount) || rowCount < 0 || rows.length < rowCount * dIn || meta.requestIds.length < rowCount || meta.positions.length < rowCount) {
      throw err('SAEGATE_ERR_BAD_REQUEST', `MicroBatcher.push: ${rowCount} rows of ${dIn} need ${rowCount * dIn} values, ids and positions; got ${rows.length}, ${meta.requestIds.length}, ${meta.positions.length}`);
    }
    this.stats.rowsIn += rowCount;
    if (this.closed) {
      this.stats.rowsDropped.queue_full += rowCount;
      return;
    }
    let r = 0;
    while (r < rowCount) {
      if (this.open !== null && this.open.hook !== meta.hook) this.flush();
      const queued = this.waitingRows + (this.open?.rowCount ?? 0);
      const room = this.maxQueuedRows - queued;
      if (room <= 0) {
        this.stats.rowsDropped.queue_full += rowCount - r;
        return;
      }
      const batch = this.open ?? this.openBatch(meta.hook);
      const take = Math.min(rowCount - r, this.maxBatchRows - batch.rowCount, room);
      const dst = batch.rows.subarray(batch.rowCount * dIn, (batch.rowCount + take) * dIn);
      const src = rows.subarray(r * dIn, (r + take) * dIn);
      if (src instanceof Uint16Array) f16ToF32(src, dst);
      else dst.set(src);
      for (let i = 0; i < take; i++) {
        batch.requestIds.push(meta.requestIds[r + i]);
        batch.positions[batch.rowCount + i] = meta.positions[r + i];
      }
      batch.rowCount += take;
      r += take;
      if (batch.rowCount === this.maxBatchRows) this.flush();
    }
  }

  private openBatch(hook: string): Batch {
    const rows = this.freeBuffers.pop() ?? new Float32Array(this.maxBatchRows * this.dIn);
    const batch: Batch = { seq: -1, hook, rows, rowCount: 0, requestIds: [], positions: new Int32Array(this.maxBatchRows) };
    this.open = batch;
    // The deadline starts with the batch's first row; a full batch flushes before it fires.
    this.timer = setTimeout(() => {
      this.timer = null;
      this.flush();
    }, this.maxDelayMs);
    return batch;
  }

  /** Closes the open batch (if any) and sends it, or queues it when `maxInFlight` batches are out. */
  flush(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    const batch = this.open;
    this.open = null;
    if (batch === null || batch.rowCount === 0) return;
    batch.seq = this.nextSeq++;
    this.waiting.push(batch);
    this.waitingRows += batch.rowCount;
    this.pump();
  }

  private pump(): void {
    while (this.inFlight < this.maxInFlight && this.waiting.length > 0) {
      const batch = this.waiting.shift()!;
      this.waitingRows -= batch.rowCount;
      this.send(batch);
    }
  }

  private send(batch: Batch): void {
    this.inFlight++;
    this.stats.batches++;
    this.rowsSent += batch.rowCount;
    this.stats.meanBatchRows = this.rowsSent / this.stats.batches;
    this.pool.encode(batch.rows, batch.rowCount).then(
      (result) => {
        if (result.rows.length === this.maxBatchRows * this.dIn) this.freeBuffers.push(result.rows);
        this.stats.rowsEncoded += batch.rowCount;
        this.settle(batch.seq, {
          hook: batch.hook,
          rowCount: batch.rowCount,
          topK: result.topK,
          requestIds: batch.requestIds,
          positions: batch.positions.subarray(0, batch.rowCount),
          indices: result.indices,
          values: result.values,
          l0: result.l0,
          sqError: result.sqError,
          fvu: result.fvu,
        });
      },
      (error: unknown) => {
        const reason: DropReason = (error as { code?: unknown }).code === 'SAEGATE_ERR_WORKER_EXITED' ? 'worker_exited' : 'encode_failed';
        this.stats.rowsDropped[reason] += batch.rowCount;
        this.settle(batch.seq, null);
      },
    );
  }

  /** Records a finished batch and delivers every batch that is now next in order. */
  private settle(seq: number, outcome: Settled): void {
    this.inFlight--;
    this.settled.set(seq, outcome);
    while (this.settled.has(this.nextDeliver)) {
      const ready = this.settled.get(this.nextDeliver)!;
      this.settled.delete(this.nextDeliver);
      this.nextDeliver++;
      if (ready !== null) {
        for (const listener of this.listeners) listener(ready);
      }
    }
    this.pump();
    if (this.isIdle()) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const resolve of waiters) resolve();
    }
  }

  private isIdle(): boolean {
    return this.open === null && this.waiting.length === 0 && this.inFlight === 0 && this.settled.size === 0;
  }

  /** Flushes the open batch and resolves once every batch pushed so far has been delivered or dropped. */
  drain(): Promise<void> {
    this.flush();
    if (this.isIdle()) return Promise.resolve();
    return new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  /** Stops accepting rows (later pushes count as dropped) and waits for what is queued. Does not close the pool. */
  async close(): Promise<void> {
    this.closed = true;
    await this.drain();
  }
}
