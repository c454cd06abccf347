/**
 * The SAE micro-batcher: gathers activation rows from many requests into batches for the worker
 * pool, and hands the encoded results to subscribers in push order.
 *
 * Rows are copied as they come (f32 values, or f16 bits) into a preallocated batch buffer; f16
 * rows are widened to f32 by the worker, not here, so the event loop only copies bytes. A batch
 * holds rows of one hook and one element type; a push of another closes the open batch. A batch is
 * sent when it holds `maxBatchRows` rows or at its deadline, whichever is first. At most
 * `maxInFlight` batches are with the pool; full batches beyond that wait in a queue. A batch whose
 * deadline passes while the pool has no room stays open and keeps taking rows until the pool
 * answers: it could not have left earlier anyway, so nobody waits longer, and under load batches
 * grow instead of each paying a worker round trip for a few rows (adaptive batching).
 *
 * Deadlines follow who waits on the rows. A batch's deadline is `relaxedDelayMs` after its first
 * row when nobody waits on its rows (they feed monitoring, whose windows span seconds), and
 * `maxDelayMs` after the first urgent push (`isUrgent`: a conditional policy's rule on these
 * features has yet to fire for one of its requests). Each batch and worker round trip costs a fixed
 * amount whatever its size, so long deadlines cut the cost per row; short ones keep the lag of
 * conditional steering low. On stories260K at 8 streams (test/bench/e2e.ts) 2 ms gathers about 35
 * rows and 100 ms a full batch (256); test/bench/sae-deadline.ts measures the cost per row at each.
 *
 * Overload: `push()` never blocks and never throws on overload, so the tap and the request path
 * never wait on the SAE. The queue (waiting batches plus the open one, not the batches with the
 * pool) is held in check in two stages. Below `sampleAboveRows` queued rows every row is taken.
 * From there to `maxQueuedRows` rows are sampled: a row is admitted with probability
 * `(maxQueuedRows − queued) / (maxQueuedRows − sampleAboveRows)`, 1 at the mark falling linearly to
 * 0 at the limit, and the others are counted as `sampled`. At `maxQueuedRows` every row is dropped
 * and counted as `queue_full`. Sampling thins the stream evenly across requests and time instead
 * of cutting off whatever arrives once the queue is full, so monitoring keeps seeing every request.
 * It is deterministic (error diffusion: each row adds its admission probability to a credit and is
 * admitted when the credit reaches 1), so over any stretch of rows the admitted count is the sum of
 * their probabilities within one row, and a test run is reproducible. Rows of one push are decided
 * one by one; only admitted rows are copied, with their request indexes and positions.
 *
 * Compact rows: no per-row string or object anywhere from the tap frame to the listeners. A push
 * carries the frame's request table (its distinct request ids) and a typed index column into it;
 * a batch keeps its own request table (each request once, in order of its first row), and a row's
 * request index is translated from the frame's table to the batch's through a typed scratch map,
 * so a request id is looked up once per request per push, not once per row. Results go out the same
 * way: request table + index column + positions + typed per-row outputs.
 *
 * Tracing: `saegate:sae:batch-sent` and `saegate:sae:batch-settled` (src/common/diagnostics.ts)
 * are published per batch, and only when the channel has subscribers, so they cost one check each
 * when nobody listens.
 *
 * Ordering: with several workers, batches may finish out of order; results are held back until
 * every earlier batch has been delivered (or failed), so each request sees its rows in push order.
 * Token ids and texts are looked up when a batch is delivered, the latest moment, so a token that
 * arrived while its row was being encoded is still attached.
 */
import diagnostics from 'node:diagnostics_channel';
import { SAE_BATCH_SENT_CHANNEL, SAE_BATCH_SETTLED_CHANNEL } from '../common/diagnostics.js';
import { err } from '../common/errors.js';
import type { SaeEncoder } from './pool.js';

/** Why rows never reached a subscriber. */
export type DropReason = 'queue_full' | 'sampled' | 'worker_exited' | 'encode_failed';

/** Every drop reason, in a fixed order (metrics pre-create a series for each). */
export const DROP_REASONS: readonly DropReason[] = ['queue_full', 'sampled', 'worker_exited', 'encode_failed'];

/** A request index column: row `i` belongs to `requestIds[rowRequestIndexes[i]]`. */
export type RequestIndexColumn = Uint16Array | Uint32Array;

/** Finds the token of result rows when a batch is delivered. */
export interface TokenLookup {
  /**
   * Writes the token id and text piece of row `i` (request `requestIds[rowRequestIndexes[i]]` at
   * `positions[i]`) into `tokenIds[i]` and `tokenTexts[i]`, for `i` below `tokenIds.length`; rows
   * whose token is unknown get −1 and ''.
   */
  fill(requestIds: readonly string[], rowRequestIndexes: RequestIndexColumn, positions: Int32Array, tokenIds: Int32Array, tokenTexts: string[]): void;
}

/** How one batch ended, reported once per batch in push order. */
export interface BatchReport {
  rowCount: number;
  /** True when the batch was encoded and its results delivered; false when it failed. */
  ok: boolean;
  /** From sending the batch to the pool until the pool answered, seconds. */
  encodeSeconds: number;
  /** From the batch's first row being pushed until its results were delivered (or its failure), seconds. */
  latencySeconds: number;
}

/** Per-batch notifications (metrics, request bookkeeping). Called on the event loop; never per row. */
export interface BatchObserver {
  /** A batch of `rowCount` rows went to the pool. */
  batchSent(rowCount: number): void;
  /** A batch's turn came (in push order): its results were delivered, or it failed. */
  batchSettled(report: BatchReport): void;
}

export interface MicroBatcherOptions {
  pool: SaeEncoder;
  /** Values per row (the SAE's d_in). */
  dIn: number;
  /** Most rows per batch. Default 256. */
  maxBatchRows?: number;
  /** Longest an urgent row (see `isUrgent`) waits for its batch to fill, milliseconds. Default 2. */
  maxDelayMs?: number;
  /**
   * Longest a row nobody waits on waits for its batch to fill, milliseconds: rows that only feed
   * monitoring gather into larger batches, which cost far less per row. Default `maxDelayMs`.
   */
  relaxedDelayMs?: number;
  /**
   * Whether someone waits on a push's rows (a conditional policy on one of their requests): asked
   * once per push, not per row; an urgent push cuts the open batch's deadline to `maxDelayMs` from
   * now. Default: every push is urgent. Replaceable later with `setUrgency`.
   */
  isUrgent?: (meta: PushMeta) => boolean;
  /** Most rows waiting for the pool (open batch plus full batches not yet sent); rows beyond are dropped as `queue_full`. Default 8192. */
  maxQueuedRows?: number;
  /**
   * Queued rows above which rows are sampled: admitted with a probability falling linearly from 1
   * here to 0 at `maxQueuedRows`, the others dropped as `sampled`. Equal to `maxQueuedRows` turns
   * sampling off. Default `floor(maxQueuedRows / 2)`.
   */
  sampleAboveRows?: number;
  /** Most batches with the pool at once. Default: the pool's worker count. */
  maxInFlight?: number;
  /** Fills result rows' tokens at delivery. Default: every token unknown (−1, ''). */
  tokens?: TokenLookup;
  /** Told about every batch sent and settled. Default: nobody. */
  observer?: BatchObserver;
}

/**
 * Where pushed rows come from, in the tap frame's compact form (an `ActivationsFrame` is one):
 * row `i` belongs to `requestIds[rowRequestIndexes[i]]` at token position `positions[i]`.
 */
export interface PushMeta {
  /** Hook point the rows were read at. */
  hook: string;
  /** The request table: each request id the rows belong to (once each, normally). */
  requestIds: readonly string[];
  /** Index into `requestIds` of each row's request. */
  rowRequestIndexes: RequestIndexColumn;
  /** Token position of each row. */
  positions: Int32Array;
}

/**
 * Encoded rows of one batch. Row `r` belongs to request `requestIds[rowRequestIndexes[r]]` at
 * `positions[r]`; every other per-row array is aligned with `positions`.
 */
export interface SaeResultBatch {
  hook: string;
  rowCount: number;
  /**
   * Feature slots per row in this batch: its largest L0 (at least 1), so every row lists every
   * active feature, or the SAE's list cap when that is smaller. It changes from batch to batch.
   */
  topK: number;
  /** The batch's request table: each request with rows in the batch, once, in order of its first row. */
  requestIds: string[];
  /** [rowCount] index into `requestIds` of each row's request. */
  rowRequestIndexes: RequestIndexColumn;
  /** [rowCount] token position of each row. */
  positions: Int32Array;
  /** [rowCount] token id at each row's position; −1 when unknown. */
  tokenIds: Int32Array;
  /** [rowCount] text piece of that token; '' when unknown (or when the piece is empty). */
  tokenTexts: string[];
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

/** `saegate:sae:batch-sent`: a batch went to the worker pool. */
export interface SaeBatchSentEvent {
  hook: string;
  /** The batch's number in push order (per micro-batcher, from 0). */
  batchSeq: number;
  /** Rows in the batch (the batch size). */
  rowCount: number;
  /** Distinct requests among its rows. */
  requestCount: number;
  /** Batches with the pool now, this one included. */
  inFlight: number;
  /** Rows still waiting for the pool after this one left (open batch plus queued batches). */
  queuedRows: number;
}

/** `saegate:sae:batch-settled`: a batch's turn came, in push order: delivered or failed. */
export interface SaeBatchSettledEvent {
  hook: string;
  batchSeq: number;
  rowCount: number;
  requestCount: number;
  /** True when its results were delivered. */
  ok: boolean;
  /** Why its rows were dropped when `ok` is false; null otherwise. */
  dropReason: 'worker_exited' | 'encode_failed' | null;
  /** From sending the batch to the pool until the pool answered, seconds. */
  encodeSeconds: number;
  /** From the batch's first row being pushed until its results were delivered (or its failure), seconds. */
  latencySeconds: number;
}

const batchSentChannel = diagnostics.channel(SAE_BATCH_SENT_CHANNEL);
const batchSettledChannel = diagnostics.channel(SAE_BATCH_SETTLED_CHANNEL);

export interface MicroBatcherStats {
  /** Rows pushed. Once drained, `rowsIn` = `rowsEncoded` + the sum of `rowsDropped`. */
  rowsIn: number;
  rowsEncoded: number;
  rowsDropped: Record<DropReason, number>;
  /** Batches sent to the pool. */
  batches: number;
  /** Rows per batch sent, on average (0 before the first). */
  meanBatchRows: number;
  /** Batches whose deadline was `maxDelayMs` because an urgent push reached them (see `isUrgent`). */
  urgentBatches: number;
}

interface Batch {
  seq: number;
  hook: string;
  /** f32 values, or f16 bits; a view over a buffer of `maxBatchRows × dIn × 4` bytes either way. */
  rows: Float32Array | Uint16Array;
  rowCount: number;
  /** The batch's request table: each request once, in order of its first row. */
  requestIds: string[];
  /** Index of each request id in `requestIds`. */
  requestIndex: Map<string, number>;
  /** [maxBatchRows] index into `requestIds` of each row. */
  rowRequestIndexes: RequestIndexColumn;
  positions: Int32Array;
  /** performance.now() when the first row was pushed. */
  openedAt: number;
  /** An urgent push reached it (its deadline is `maxDelayMs` from that push at the latest). */
  urgent: boolean;
  /** performance.now() when the batch went to the pool. */
  sentAt: number;
}

/** A batch back from the pool, waiting for its turn: its encoder output, or null when it failed. */
interface Settled {
  batch: Batch;
  result: EncodeOutput | null;
  /** Why the batch failed; null when it was encoded. */
  dropReason: 'worker_exited' | 'encode_failed' | null;
  encodeSeconds: number;
}

type EncodeOutput = Pick<SaeResultBatch, 'topK' | 'indices' | 'values' | 'l0' | 'sqError' | 'fvu'>;

/** Marks every token unknown. */
const NO_TOKENS: TokenLookup = {
  fill(_requestIds, _rowRequestIndexes, _positions, tokenIds) {
    tokenIds.fill(-1);
  },
};

const NO_OBSERVER: BatchObserver = {
  batchSent() {},
  batchSettled() {},
};

export class MicroBatcher {
  readonly stats: MicroBatcherStats = {
    rowsIn: 0,
    rowsEncoded: 0,
    rowsDropped: { queue_full: 0, sampled: 0, worker_exited: 0, encode_failed: 0 },
    batches: 0,
    meanBatchRows: 0,
    urgentBatches: 0,
  };
  private readonly pool: SaeEncoder;
  private readonly dIn: number;
  private readonly maxBatchRows: number;
  private readonly maxDelayMs: number;
  private readonly relaxedDelayMs: number;
  private isUrgent: ((meta: PushMeta) => boolean) | null;
  private readonly maxQueuedRows: number;
  private readonly sampleAboveRows: number;
  private readonly maxInFlight: number;
  private readonly tokens: TokenLookup;
  private readonly observer: BatchObserver;
  private readonly listeners = new Set<SaeResultListener>();
  /** Row buffers (`maxBatchRows × dIn × 4` bytes) returned by the pool, reused for later batches. */
  private readonly freeBuffers: ArrayBuffer[] = [];
  private open: Batch | null = null;
  private timer: NodeJS.Timeout | null = null;
  /** performance.now() at which the open batch's timer fires (Infinity with no timer). */
  private deadlineAt = Infinity;
  /** The open batch's deadline passed while the pool had no room: it goes as soon as there is. */
  private overdue = false;
  private readonly waiting: Batch[] = [];
  private waitingRows = 0;
  private inFlight = 0;
  private nextSeq = 0;
  private nextDeliver = 0;
  private readonly settled = new Map<number, Settled>();
  private idleWaiters: (() => void)[] = [];
  private rowsSent = 0;
  /** Error-diffusion credit of the sampler, in [0, 1) between rows. */
  private admitCredit = 0;
  private closed = false;
  /**
   * Push request index → open batch request index, valid where `remapEpoch[k]` equals `epoch`.
   * The epoch moves on with every push and every new batch, which invalidates the whole map in
   * one step; float64 epochs never wrap.
   */
  private remap = new Uint32Array(64);
  private remapEpoch = new Float64Array(64);
  private epoch = 0;

  constructor(options: MicroBatcherOptions) {
    this.pool = options.pool;
    this.dIn = options.dIn;
    this.maxBatchRows = options.maxBatchRows ?? 256;
    this.maxDelayMs = options.maxDelayMs ?? 2;
    this.relaxedDelayMs = options.relaxedDelayMs ?? this.maxDelayMs;
    this.isUrgent = options.isUrgent ?? null;
    this.maxQueuedRows = options.maxQueuedRows ?? 8192;
    this.sampleAboveRows = options.sampleAboveRows ?? Math.floor(this.maxQueuedRows / 2);
    this.maxInFlight = options.maxInFlight ?? options.pool.workers;
    this.tokens = options.tokens ?? NO_TOKENS;
    this.observer = options.observer ?? NO_OBSERVER;
    for (const [name, value] of [['dIn', this.dIn], ['maxBatchRows', this.maxBatchRows], ['maxQueuedRows', this.maxQueuedRows], ['maxInFlight', this.maxInFlight]] as const) {
      if (!Number.isInteger(value) || value < 1) throw err('SAEGATE_ERR_CONFIG', name, `a positive integer, got ${value}`);
    }
    if (!Number.isInteger(this.sampleAboveRows) || this.sampleAboveRows < 0 || this.sampleAboveRows > this.maxQueuedRows) {
      throw err('SAEGATE_ERR_CONFIG', 'sampleAboveRows', `an integer from 0 to maxQueuedRows (${this.maxQueuedRows}), got ${this.sampleAboveRows}`);
    }
    if (!(this.maxDelayMs >= 0)) throw err('SAEGATE_ERR_CONFIG', 'maxDelayMs', `a non-negative number, got ${this.maxDelayMs}`);
    if (!(this.relaxedDelayMs >= this.maxDelayMs)) throw err('SAEGATE_ERR_CONFIG', 'relaxedDelayMs', `a number of at least maxDelayMs (${this.maxDelayMs}), got ${this.relaxedDelayMs}`);
  }

  /** Replaces the urgency test (`MicroBatcherOptions.isUrgent`); null makes every push urgent. Batches already open keep their deadline. */
  setUrgency(isUrgent: ((meta: PushMeta) => boolean) | null): void {
    this.isUrgent = isUrgent;
  }

  /** Subscribes to result batches; returns the unsubscribe function. */
  onResult(listener: SaeResultListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Rows waiting for the pool now: the open batch plus full batches not yet sent. */
  get queuedRows(): number {
    return this.waitingRows + (this.open?.rowCount ?? 0);
  }

  /**
   * Batches that hold rows pushed so far (the open one included). Every row pushed up to now has
   * been delivered or dropped once `settledBatches` reaches this number.
   */
  get pushedBatches(): number {
    return this.nextSeq + (this.open !== null && this.open.rowCount > 0 ? 1 : 0);
  }

  /** Batches delivered or failed, in push order. */
  get settledBatches(): number {
    return this.nextDeliver;
  }

  /**
   * Queues `rowCount` rows (`rowCount × dIn` values: f32, or f16 bits as a Uint16Array). The rows are
   * copied; the caller keeps its buffers. Above `sampleAboveRows` queued rows, rows are sampled;
   * at `maxQueuedRows` they are dropped (see the module comment); drops are counted by reason.
   * Throws only for malformed arguments (wrong lengths), never for overload.
   */
  push(rows: Float32Array | Uint16Array, rowCount: number, meta: PushMeta): void {
    const dIn = this.dIn;
    if (!Number.isInteger(rowCount) || rowCount < 0 || rows.length < rowCount * dIn || meta.rowRequestIndexes.length < rowCount || meta.positions.length < rowCount) {
      throw err(
        'SAEGATE_ERR_ARGUMENT',
        `MicroBatcher.push: ${rowCount} rows of ${dIn} need ${rowCount * dIn} values, request indexes and positions; got ${rows.length}, ${meta.rowRequestIndexes.length}, ${meta.positions.length}`,
      );
    }
    const tableSize = meta.requestIds.length;
    const indexes = meta.rowRequestIndexes;
    let maxIndex = -1;
    for (let r = 0; r < rowCount; r++) if (indexes[r] > maxIndex) maxIndex = indexes[r];
    if (maxIndex >= tableSize) throw err('SAEGATE_ERR_BAD_REQUEST', `MicroBatcher.push: request index ${maxIndex} outside a request table of ${tableSize}`);
    if (tableSize > this.remap.length) {
      const size = Math.max(tableSize, 2 * this.remap.length);
      this.remap = new Uint32Array(size);
      this.remapEpoch = new Float64Array(size);
    }
    // A new push brings a new request table: forget the previous one's translations.
    this.epoch++;
    this.stats.rowsIn += rowCount;
    if (this.closed) {
      this.stats.rowsDropped.queue_full += rowCount;
      return;
    }
    if (this.open !== null && (this.open.hook !== meta.hook || this.open.rows instanceof Uint16Array !== rows instanceof Uint16Array)) this.flush();
    const urgent = this.isUrgent === null || this.isUrgent(meta);
    const max = this.maxQueuedRows;
    const mark = this.sampleAboveRows;
    const span = max - mark;
    const dropped = this.stats.rowsDropped;
    // Admitted rows are gathered into runs of consecutive rows and copied a run at a time. A run
    // ends at a rejected row or when it fills the open batch: the batch is flushed then, and may go
    // to the pool at once, which shrinks the queue the next decisions see.
    let queued = this.queuedRows;
    let room = this.maxBatchRows - (this.open?.rowCount ?? 0);
    let runStart = 0;
    let runLength = 0;
    const commit = (): void => {
      if (runLength === 0) return;
      this.append(rows, runStart, runLength, meta, urgent);
      runLength = 0;
      queued = this.queuedRows;
      room = this.maxBatchRows - (this.open?.rowCount ?? 0);
    };
    let r = 0;
    while (r < rowCount) {
      if (queued >= max) {
        dropped.queue_full += rowCount - r;
        break;
      }
      let admitted: number;
      if (queued < mark) {
        // Below the mark: take every row that fits in the batch without crossing the mark.
        admitted = Math.min(rowCount - r, room - runLength, mark - queued);
      } else {
        // Rejected rows leave the queue as it is, so the probability changes only with admissions.
        this.admitCredit += (max - queued) / span;
        if (this.admitCredit < 1) {
          commit();
          dropped.sampled++;
          r++;
          continue;
        }
        this.admitCredit -= 1;
        admitted = 1;
      }
      if (runLength === 0) runStart = r;
      runLength += admitted;
      queued += admitted;
      r += admitted;
      if (runLength === room) commit();
    }
    commit();
  }

  /** Copies rows [start, start + count) into the open batch (opening one); `count` fits in it. */
  private append(rows: Float32Array | Uint16Array, start: number, count: number, meta: PushMeta, urgent: boolean): void {
    const dIn = this.dIn;
    const batch = this.open ?? this.openBatch(meta.hook, rows instanceof Uint16Array);
    // The deadline starts with the batch's first row (relaxed or urgent) and an urgent push cuts it
    // to maxDelayMs from now; a full batch flushes before it fires.
    if (batch.rowCount === 0) this.arm(urgent ? this.maxDelayMs : this.relaxedDelayMs);
    else if (urgent && !batch.urgent) this.arm(this.maxDelayMs);
    if (urgent) batch.urgent = true;
    const at = batch.rowCount;
    // Same element type on both sides (push() closes a batch of the other type): a byte copy.
    batch.rows.set(rows.subarray(start * dIn, (start + count) * dIn), at * dIn);
    // Translate each row's request index from the push's table to the batch's. The map is valid
    // for this push and this batch (openBatch moves the epoch on too), so the Map lookup and the
    // table insert happen once per request, and the loop is typed-array reads and writes (no
    // subarray views: under sampling a run is often one row).
    const from = meta.rowRequestIndexes;
    const fromPositions = meta.positions;
    const to = batch.rowRequestIndexes;
    const toPositions = batch.positions;
    const remap = this.remap;
    const remapEpoch = this.remapEpoch;
    const epoch = this.epoch;
    for (let i = 0; i < count; i++) {
      const k = from[start + i];
      if (remapEpoch[k] !== epoch) {
        remap[k] = this.batchRequestIndex(batch, meta.requestIds[k]);
        remapEpoch[k] = epoch;
      }
      to[at + i] = remap[k];
      toPositions[at + i] = fromPositions[start + i];
    }
    batch.rowCount += count;
    if (batch.rowCount === this.maxBatchRows) this.flush();
  }

  /** The index of `requestId` in the batch's request table, adding it when new. */
  private batchRequestIndex(batch: Batch, requestId: string): number {
    let index = batch.requestIndex.get(requestId);
    if (index === undefined) {
      index = batch.requestIds.length;
      batch.requestIds.push(requestId);
      batch.requestIndex.set(requestId, index);
    }
    return index;
  }

  private openBatch(hook: string, f16: boolean): Batch {
    const buffer = this.freeBuffers.pop() ?? new ArrayBuffer(this.maxBatchRows * this.dIn * 4);
    const rows = f16 ? new Uint16Array(buffer) : new Float32Array(buffer);
    const size = this.maxBatchRows;
    // A batch has at most maxBatchRows requests, so indexes below 65536 fit 16 bits.
    const rowRequestIndexes = size <= 0x10000 ? new Uint16Array(size) : new Uint32Array(size);
    const batch: Batch = { seq: -1, hook, rows, rowCount: 0, requestIds: [], requestIndex: new Map(), rowRequestIndexes, positions: new Int32Array(size), openedAt: performance.now(), sentAt: 0, urgent: false };
    // The translation map of the current push points into the previous batch's table.
    this.epoch++;
    this.open = batch;
    return batch;
  }

  /** Sets the open batch's deadline to `delayMs` from now, unless it already falls earlier. */
  private arm(delayMs: number): void {
    const at = performance.now() + delayMs;
    if (at >= this.deadlineAt) return;
    if (this.timer !== null) clearTimeout(this.timer);
    this.deadlineAt = at;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.deadlineAt = Infinity;
      if (this.inFlight >= this.maxInFlight) this.overdue = true;
      else this.flush();
    }, delayMs);
  }

  /** Closes the open batch (if any) and sends it, or queues it when `maxInFlight` batches are out. */
  flush(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    this.deadlineAt = Infinity;
    this.overdue = false;
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
    if (batch.urgent) this.stats.urgentBatches++;
    this.rowsSent += batch.rowCount;
    this.stats.meanBatchRows = this.rowsSent / this.stats.batches;
    batch.sentAt = performance.now();
    this.observer.batchSent(batch.rowCount);
    if (batchSentChannel.hasSubscribers) {
      batchSentChannel.publish({
        hook: batch.hook,
        batchSeq: batch.seq,
        rowCount: batch.rowCount,
        requestCount: batch.requestIds.length,
        inFlight: this.inFlight,
        queuedRows: this.queuedRows,
      } satisfies SaeBatchSentEvent);
    }
    this.pool.encode(batch.rows, batch.rowCount).then(
      (result) => {
        const returned = result.rows.buffer;
        if (returned instanceof ArrayBuffer && returned.byteLength === this.maxBatchRows * this.dIn * 4) this.freeBuffers.push(returned);
        this.stats.rowsEncoded += batch.rowCount;
        this.settle({ batch, result, dropReason: null, encodeSeconds: (performance.now() - batch.sentAt) / 1000 });
      },
      (error: unknown) => {
        const reason = (error as { code?: unknown }).code === 'SAEGATE_ERR_WORKER_EXITED' ? 'worker_exited' : 'encode_failed';
        this.stats.rowsDropped[reason] += batch.rowCount;
        this.settle({ batch, result: null, dropReason: reason, encodeSeconds: (performance.now() - batch.sentAt) / 1000 });
      },
    );
  }

  /** Records a finished batch and delivers every batch that is now next in order. */
  private settle(outcome: Settled): void {
    this.inFlight--;
    this.settled.set(outcome.batch.seq, outcome);
    while (this.settled.has(this.nextDeliver)) {
      const ready = this.settled.get(this.nextDeliver)!;
      this.settled.delete(this.nextDeliver);
      this.nextDeliver++;
      if (ready.result !== null) this.deliver(ready.batch, ready.result);
      const report: BatchReport = {
        rowCount: ready.batch.rowCount,
        ok: ready.result !== null,
        encodeSeconds: ready.encodeSeconds,
        latencySeconds: (performance.now() - ready.batch.openedAt) / 1000,
      };
      this.observer.batchSettled(report);
      if (batchSettledChannel.hasSubscribers) {
        batchSettledChannel.publish({
          hook: ready.batch.hook,
          batchSeq: ready.batch.seq,
          rowCount: report.rowCount,
          requestCount: ready.batch.requestIds.length,
          ok: report.ok,
          dropReason: ready.dropReason,
          encodeSeconds: report.encodeSeconds,
          latencySeconds: report.latencySeconds,
        } satisfies SaeBatchSettledEvent);
      }
    }
    this.pump();
    if (this.overdue && this.inFlight < this.maxInFlight) this.flush();
    if (this.isIdle()) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const resolve of waiters) resolve();
    }
  }

  /** Attaches the rows' tokens (known by now, normally) and hands the batch to every listener. */
  private deliver(batch: Batch, result: EncodeOutput): void {
    const rowCount = batch.rowCount;
    const positions = batch.positions.subarray(0, rowCount);
    const rowRequestIndexes = batch.rowRequestIndexes.subarray(0, rowCount);
    const tokenIds = new Int32Array(rowCount);
    const tokenTexts = new Array<string>(rowCount).fill('');
    this.tokens.fill(batch.requestIds, rowRequestIndexes, positions, tokenIds, tokenTexts);
    const delivered: SaeResultBatch = {
      hook: batch.hook,
      rowCount,
      topK: result.topK,
      requestIds: batch.requestIds,
      rowRequestIndexes,
      positions,
      tokenIds,
      tokenTexts,
      indices: result.indices,
      values: result.values,
      l0: result.l0,
      sqError: result.sqError,
      fvu: result.fvu,
    };
    for (const listener of this.listeners) listener(delivered);
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
