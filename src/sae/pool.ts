/**
 * The SAE worker pool: the one owner of SAE onnxruntime sessions (ARCHITECTURE decisions 2–4). Each
 * worker thread holds one session of the same encoder graph; `encode()` transfers a rows buffer to
 * the least-busy worker and resolves with typed arrays.
 *
 * Crash recovery: each worker is a `WorkerHost` with restart policy `'always'`. A worker that errors
 * or exits while the pool is open is replaced at once from the graph bytes the pool keeps. The
 * batches it held reject with SAEGATE_ERR_WORKER_EXITED (their rows are gone with the thread's
 * memory) and are counted in `stats.rowsLost`; batches sent to the replacement wait for its session
 * to be ready.
 */
import { isSaegateError, SaegateError } from '../common/errors.js';
import type { Device } from '../common/ort.js';
import { siblingModule } from '../common/worker.js';
import { WorkerHost } from '../common/worker-host.js';
import { buildSaeEncoderGraph, fitsFloat16 } from './graph.js';
import type { PoolWorkerProtocol } from './pool-protocol.js';
import type { SaeWeights } from './types.js';

export interface SaePoolOptions {
  sae: SaeWeights;
  /**
   * Most features listed per row, a display cap (`SaeEncoderGraphOptions.topK`): L0 and the errors
   * are exact either way. Default: none, every active feature of every row is listed.
   */
  topK?: number;
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
  /**
   * Feature slots per row in this batch, chosen by the graph per batch: the batch's largest L0 (at
   * least 1), so every row's list is its full active set; or the pool's cap when that is smaller.
   */
  topK: number;
  /** [rowCount · topK] feature indices by value, descending; −1 pads unused slots. */
  indices: Int32Array;
  /** [rowCount · topK] feature activations matching `indices`; 0 pads. */
  values: Float32Array;
  /** [rowCount] active features per row. */
  l0: Int32Array;
  /** [rowCount] squared error of the reconstruction from every active feature. */
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

export class SaePool implements SaeEncoder {
  readonly workers: number;
  /** The list cap; null: every active feature is listed. */
  readonly topK: number | null;
  readonly dIn: number;
  /** Precision the encoder graph holds its weights in. */
  readonly weights: 'f32' | 'f16';
  /** onnxruntime intra-op threads per worker; 0: onnxruntime's choice. */
  readonly intraOpThreads: number;
  readonly stats: SaePoolStats = { batches: 0, rowsEncoded: 0, workerRestarts: 0, rowsLost: 0, runMs: 0 };
  /**
   * One host per worker; a host keeps its place when its thread is replaced. Exposed so tests can
   * end a worker unexpectedly (`hosts[i].terminate()`) and watch the pool recover.
   */
  readonly hosts: WorkerHost<PoolWorkerProtocol>[] = [];
  private closed = false;

  private constructor(
    /** Graph bytes kept for replacements; each worker gets a copy. */
    private readonly model: Uint8Array,
    private readonly options: SaePoolOptions,
    weights: 'f32' | 'f16',
  ) {
    this.weights = weights;
    this.workers = options.workers ?? 1;
    this.topK = options.topK ?? null;
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
    const model = buildSaeEncoderGraph(options.sae, { ...(options.topK !== undefined && { topK: options.topK }), weights });
    const pool = new SaePool(model, options, weights);
    const started = await Promise.allSettled(Array.from({ length: workers }, () => pool.startWorker()));
    for (const result of started) if (result.status === 'fulfilled') pool.hosts.push(result.value);
    const failed = started.find((result): result is PromiseRejectedResult => result.status === 'rejected');
    if (failed) {
      await pool.close();
      throw failed.reason;
    }
    return pool;
  }

  private startWorker(): Promise<WorkerHost<PoolWorkerProtocol>> {
    return WorkerHost.start<PoolWorkerProtocol>({
      entry: siblingModule(import.meta.url, 'pool-worker'),
      name: 'SAE worker',
      init: () => {
        // Each worker (and each replacement) gets its own copy of the graph bytes to take over.
        const model = this.model.slice();
        return {
          init: {
            model,
            dIn: this.dIn,
            device: this.options.device ?? 'cpu',
            intraOpThreads: this.intraOpThreads === 0 ? undefined : this.intraOpThreads,
          },
          transfer: [model.buffer],
        };
      },
      restart: 'always',
      onRestart: () => {
        this.stats.workerRestarts++;
      },
    });
  }

  /** The worker with the fewest batches in flight (ties: the lowest index). */
  private pickHost(): WorkerHost<PoolWorkerProtocol> {
    let best = this.hosts[0];
    for (const host of this.hosts) if (host.inFlight < best.inFlight) best = host;
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
    // Sent at once even while a replacement is still starting: the worker runs encodes only after
    // its session is ready, and answers with its init error if it never becomes ready.
    return this.pickHost()
      .request({ rows, rowCount }, [rows.buffer as ArrayBuffer])
      .then(
        (msg) => {
          this.stats.batches++;
          this.stats.rowsEncoded += msg.rowCount;
          this.stats.runMs += msg.runMs;
          return msg;
        },
        (error: unknown) => {
          // The rows went with a thread that died; closing the pool loses nothing worth counting.
          if (!this.closed && isSaegateError(error, 'SAEGATE_ERR_WORKER_EXITED')) this.stats.rowsLost += rowCount;
          throw error;
        },
      );
  }

  /** Stops every worker; batches still in flight reject with SAEGATE_ERR_WORKER_EXITED. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all(this.hosts.map((host) => host.close()));
  }
}
