/**
 * The SAE worker pool: the one owner of SAE onnxruntime sessions (ARCHITECTURE decisions 2–4). Each
 * worker thread holds one session of the same encoder graph; `encode()` transfers a rows buffer to
 * the least-busy worker and resolves with typed arrays.
 *
 * Crash recovery: a worker that errors or exits while the pool is open is replaced at once from the
 * graph bytes the pool keeps. The batches it held reject with SAEGATE_ERR_WORKER_EXITED (their rows
 * are gone with the thread's memory) and are counted in `stats.rowsLost`; batches sent to the
 * replacement wait for its session to be ready.
 */
import type { Worker } from 'node:worker_threads';
import { SaegateError } from '../common/errors.js';
import type { Device } from '../common/ort.js';
import { siblingModule, spawnWorker } from '../common/worker.js';
import { buildSaeEncoderGraph, fitsFloat16 } from './graph.js';
import type { FromPoolWorker, ToPoolWorker } from './pool-protocol.js';
import type { SaeWeights } from './types.js';

export interface SaePoolOptions {
  sae: SaeWeights;
  /** Most active features reported per row (see `SaeEncoderGraphOptions.topK`). */
  topK: number;
  /** Worker threads, each with its own session. Default 1. */
  workers?: number;
  /** Default 'cpu'. */
  device?: Device;
  /**
   * onnxruntime intra-op threads per worker; 0 leaves the count to onnxruntime. Default: 1 for an SAE
   * of at most `SMALL_SAE_WEIGHTS` encoder weights on the CPU, else 0 (see `defaultIntraOpThreads`).
   * The choice is in `SaePool.intraOpThreads`.
   */
  intraOpThreads?: number;
  /**
   * Weight precision (`SaeEncoderGraphOptions.weights`). Default: `f16` on CUDA when the weights fit
   * float16, else `f32`. The choice is in `SaePool.weights`.
   */
  weights?: 'f32' | 'f16';
}

/** `d_in × d_sae` at or below which an SAE's session gets one intra-op thread by default. */
export const SMALL_SAE_WEIGHTS = 1 << 20;

/**
 * Intra-op threads for an SAE session when the caller sets none: 1 for a small SAE on the CPU,
 * otherwise 0, onnxruntime's choice (one thread per physical core, the extra ones pinned to cores
 * and spin-waiting between operators). A small SAE's operators last microseconds, too short to
 * pay for waking and joining other threads, and a spinning pool competes with the main thread and
 * with anything else on the machine. Measured on 2 shared cores with d_in × d_sae = 64 × 1024
 * (test/bench/sae.ts, interleaved): the pipeline ran 1.5×, 2.1× and 1.5× the rows/s at batch 1, 64
 * and 256 with one thread, on 35–55% less CPU per row, with lower main-thread event-loop lag.
 */
export function defaultIntraOpThreads(sae: SaeWeights, device: Device): number {
  return device === 'cpu' && sae.config.dIn * sae.config.dSae <= SMALL_SAE_WEIGHTS ? 1 : 0;
}

/** Encoder outputs for `rowCount` rows, row-major. Each array is the whole of its own ArrayBuffer. */
export interface EncodeResult {
  rowCount: number;
  topK: number;
  /** [rowCount · topK] feature indices by value, descending; −1 pads unused slots. */
  indices: Int32Array;
  /** [rowCount · topK] feature activations matching `indices`; 0 pads. */
  values: Float32Array;
  /** [rowCount] active features per row. */
  l0: Int32Array;
  /** [rowCount] squared error of the top-K reconstruction. */
  sqError: Float32Array;
  /** [rowCount] fraction of variance unexplained. */
  fvu: Float32Array;
  /** The (transferred) input buffer, handed back so the caller can reuse it. */
  rows: Float32Array | Uint16Array;
  /** Time inside onnxruntime, milliseconds. */
  runMs: number;
}

/** What the micro-batcher needs from a pool; the pool implements it, tests may fake it. */
export interface SaeEncoder {
  readonly workers: number;
  readonly topK: number;
  /** `rows`: float32 values, or float16 bits (a Uint16Array) that the worker widens. */
  encode(rows: Float32Array | Uint16Array, rowCount: number): Promise<EncodeResult>;
}

export interface SaePoolStats {
  /** Batches that resolved. */
  batches: number;
  rowsEncoded: number;
  /** Workers replaced after a crash or exit. */
  workerRestarts: number;
  /** Rows in batches that were in flight on a worker that exited. */
  rowsLost: number;
  /** Time inside onnxruntime, milliseconds, summed over workers. */
  runMs: number;
}

interface InFlight {
  rowCount: number;
  resolve: (result: EncodeResult) => void;
  reject: (error: Error) => void;
}

interface Slot {
  worker: Worker;
  ready: Promise<void>;
  inFlight: Map<number, InFlight>;
  /** Set once this worker's loss has been handled, so 'error' followed by 'exit' counts once. */
  dead: boolean;
}

export class SaePool implements SaeEncoder {
  readonly workers: number;
  readonly topK: number;
  readonly dIn: number;
  /** Precision the encoder graph holds its weights in. */
  readonly weights: 'f32' | 'f16';
  /** onnxruntime intra-op threads per worker; 0: onnxruntime's choice. */
  readonly intraOpThreads: number;
  readonly stats: SaePoolStats = { batches: 0, rowsEncoded: 0, workerRestarts: 0, rowsLost: 0, runMs: 0 };
  private readonly slots: Slot[] = [];
  private nextId = 1;
  private closed = false;

  private constructor(
    /** Graph bytes kept for replacements; each worker gets a copy. */
    private readonly model: Uint8Array,
    private readonly options: SaePoolOptions,
    weights: 'f32' | 'f16',
  ) {
    this.weights = weights;
    this.workers = options.workers ?? 1;
    this.topK = options.topK;
    this.dIn = options.sae.config.dIn;
    this.intraOpThreads = options.intraOpThreads ?? defaultIntraOpThreads(options.sae, options.device ?? 'cpu');
  }

  /** Builds the encoder graph once and starts `workers` workers, waiting until every session is ready. */
  static async create(options: SaePoolOptions): Promise<SaePool> {
    const workers = options.workers ?? 1;
    if (!Number.isInteger(workers) || workers < 1) throw new SaegateError('SAEGATE_ERR_CONFIG', ['workers', `a positive integer, got ${workers}`]);
    const threads = options.intraOpThreads;
    if (threads !== undefined && (!Number.isInteger(threads) || threads < 0)) {
      throw new SaegateError('SAEGATE_ERR_CONFIG', ['intraOpThreads', `a positive integer, or 0 for onnxruntime's choice, got ${threads}`]);
    }
    const weights = options.weights ?? (options.device === 'cuda' && fitsFloat16(options.sae) ? 'f16' : 'f32');
    const model = buildSaeEncoderGraph(options.sae, { topK: options.topK, weights });
    const pool = new SaePool(model, options, weights);
    for (let i = 0; i < workers; i++) pool.slots.push(pool.startWorker());
    try {
      await Promise.all(pool.slots.map((s) => s.ready));
    } catch (error) {
      await pool.close();
      throw error;
    }
    return pool;
  }

  private startWorker(): Slot {
    const worker = spawnWorker(siblingModule(import.meta.url, 'pool-worker'));
    const slot: Slot = { worker, ready: Promise.resolve(), inFlight: new Map(), dead: false };
    slot.ready = new Promise<void>((resolve, reject) => {
      const onMessage = (msg: FromPoolWorker): void => {
        if (msg.type === 'ready') resolve();
        else if (msg.type === 'init_error') reject(SaegateError.fromWire(msg));
        else return;
        worker.off('message', onMessage);
      };
      worker.on('message', onMessage);
      worker.once('exit', (code) => reject(new SaegateError('SAEGATE_ERR_WORKER_EXITED', [`exit code ${code} before the SAE session was ready`])));
    });
    // A replacement whose session fails must not raise an unhandled rejection; encode() sees it.
    slot.ready.catch(() => undefined);
    worker.on('message', (msg: FromPoolWorker) => this.onMessage(slot, msg));
    worker.on('error', (error) => this.onWorkerLost(slot, error.message));
    worker.on('exit', (code) => this.onWorkerLost(slot, `exit code ${code}`));
    const model = this.model.slice();
    const init: ToPoolWorker = {
      type: 'init',
      model,
      dIn: this.dIn,
      topK: this.topK,
      device: this.options.device ?? 'cpu',
      intraOpThreads: this.intraOpThreads === 0 ? undefined : this.intraOpThreads,
    };
    worker.postMessage(init, [model.buffer]);
    return slot;
  }

  private onMessage(slot: Slot, msg: FromPoolWorker): void {
    if (msg.type !== 'result' && msg.type !== 'encode_error') return;
    const pending = slot.inFlight.get(msg.id);
    if (!pending) return;
    slot.inFlight.delete(msg.id);
    if (msg.type === 'encode_error') {
      pending.reject(SaegateError.fromWire(msg));
      return;
    }
    this.stats.batches++;
    this.stats.rowsEncoded += msg.rowCount;
    this.stats.runMs += msg.runMs;
    pending.resolve({
      rowCount: msg.rowCount,
      topK: this.topK,
      indices: msg.indices,
      values: msg.values,
      l0: msg.l0,
      sqError: msg.sqError,
      fvu: msg.fvu,
      rows: msg.rows,
      runMs: msg.runMs,
    });
  }

  /** Rejects the lost worker's batches, counts the loss and puts a fresh worker in its place. */
  private onWorkerLost(slot: Slot, reason: string): void {
    if (slot.dead) return;
    slot.dead = true;
    const error = new SaegateError('SAEGATE_ERR_WORKER_EXITED', [this.closed ? 'SAE pool closed' : `SAE worker: ${reason}`]);
    for (const pending of slot.inFlight.values()) {
      if (!this.closed) this.stats.rowsLost += pending.rowCount;
      pending.reject(error);
    }
    slot.inFlight.clear();
    if (this.closed) return;
    void slot.worker.terminate();
    const index = this.slots.indexOf(slot);
    if (index >= 0) {
      this.stats.workerRestarts++;
      this.slots[index] = this.startWorker();
    }
  }

  /** The worker with the fewest batches in flight (ties: the lowest index). */
  private pickSlot(): Slot {
    let best = this.slots[0];
    for (const slot of this.slots) if (slot.inFlight.size < best.inFlight.size) best = slot;
    return best;
  }

  /**
   * Encodes `rowCount` rows of `dIn` values from the start of `rows`: float32, or float16 bits as a
   * Uint16Array, widened to float32 in the worker. The buffer is transferred to a worker (`rows` is
   * detached when this returns) and comes back as `result.rows`.
   */
  encode(rows: Float32Array | Uint16Array, rowCount: number): Promise<EncodeResult> {
    if (this.closed) return Promise.reject(new SaegateError('SAEGATE_ERR_WORKER_EXITED', ['SAE pool closed']));
    if (!Number.isInteger(rowCount) || rowCount < 1 || rows.length < rowCount * this.dIn) {
      return Promise.reject(new SaegateError('SAEGATE_ERR_ARGUMENT', [`encode: ${rowCount} rows of ${this.dIn} need ${rowCount * this.dIn} values, got ${rows.length}`]));
    }
    const slot = this.pickSlot();
    const id = this.nextId++;
    return new Promise<EncodeResult>((resolve, reject) => {
      // Registered before the post so a worker that dies before answering rejects this batch.
      slot.inFlight.set(id, { rowCount, resolve, reject });
      // Posted at once even while a replacement is still starting: the worker runs encodes only
      // after its session is ready, and answers encode_error if it never becomes ready.
      const msg: ToPoolWorker = { type: 'encode', id, rows, rowCount };
      slot.worker.postMessage(msg, [rows.buffer as ArrayBuffer]);
    });
  }

  /**
   * TEST ONLY: asks worker `index` to exit with code 1, to exercise crash recovery. Resolves when
   * the replacement's session is ready.
   */
  async crashWorkerForTest(index: number): Promise<void> {
    const slot = this.slots[index];
    slot.worker.postMessage({ type: 'crash' } satisfies ToPoolWorker);
    await new Promise<void>((resolve) => slot.worker.once('exit', () => resolve()));
    await this.slots[index].ready;
  }

  /** Stops every worker; batches still in flight reject with SAEGATE_ERR_WORKER_EXITED. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all(
      this.slots.map(async (slot) => {
        await slot.worker.terminate();
        this.onWorkerLost(slot, 'SAE pool closed');
      }),
    );
  }
}
