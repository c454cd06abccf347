/**
 * The main-thread half of every saegate worker thread (the model runtime, the SAE pool's encoders,
 * the SAE trainer, the splice evaluation). One `WorkerHost` owns one worker slot:
 *
 * - spawn (through `spawnWorker`, so workers run from source under tsx too) and the handshake:
 *   `start()` resolves when the worker answers `ready`, and rejects with the worker's init error
 *   (or SAEGATE_ERR_WORKER_EXITED if it dies first), leaving no thread behind;
 * - requests with ids and transfer lists: `request()` resolves with the worker's answer to that id;
 * - loss: when the thread throws or exits while the host is open, every request in flight on it
 *   rejects with SAEGATE_ERR_WORKER_EXITED (their state went with the thread's memory), once;
 * - the restart policy: `'never'` leaves the host failed (later requests reject with the same
 *   error); `'always'` starts a replacement at once from a fresh `init()` and counts it. Requests
 *   posted while the replacement starts are sent at once: the worker side (`serveWorker`) holds
 *   them until its init is done, and answers them with the init error if it fails;
 * - `terminate()`, an unexpected exit on demand (tests exercise crash recovery with it), and
 *   `close()`, the intentional stop.
 *
 * The envelope is in worker-protocol.ts; a worker's own protocol only names its payloads.
 */
import type { TransferListItem, Worker } from 'node:worker_threads';
import { SaegateError } from './errors.js';
import { spawnWorker } from './worker.js';
import type { FromWorkerEnvelope, ToWorkerEnvelope, WorkerProtocol } from './worker-protocol.js';

/** What the host does when its worker throws or exits while the host is open. */
export type RestartPolicy = 'never' | 'always';

/** An init message and the buffers it transfers. */
export interface WorkerInit<I> {
  init: I;
  transfer?: TransferListItem[];
}

export interface WorkerHostOptions<P extends WorkerProtocol> {
  /** The worker entry module, usually `siblingModule(import.meta.url, 'x-worker')`. */
  entry: URL;
  /** How errors name the worker: `'SAE worker'` gives "worker thread exited: SAE worker: exit code 1". */
  name: string;
  /**
   * Builds the init message. Called once per start, so a replacement gets fresh buffers to transfer
   * (a transferred buffer is detached on this side).
   */
  init: () => WorkerInit<P['init']>;
  /** Unsolicited messages from the worker (decode steps, training progress), in arrival order. */
  onEvent?: (event: P['event']) => void;
  /** Default `'never'`. A worker that dies before its first handshake is never restarted: `start()` rejects. */
  restart?: RestartPolicy;
  /** Called after a replacement was spawned, with the error that ended its predecessor. */
  onRestart?: (error: SaegateError) => void;
  /** Called once when the worker is lost for good (policy `'never'`), after its requests rejected. Not called by `close()`. */
  onExit?: (error: SaegateError) => void;
}

interface Pending {
  resolve: (response: never) => void;
  reject: (error: Error) => void;
}

/** One thread of the slot: the first worker, or a replacement. */
interface Incarnation {
  worker: Worker;
  /** Settles with the handshake; a rejection is always handled (see `spawn`). */
  ready: Promise<void>;
  inFlight: Map<number, Pending>;
  /** Set once its loss is handled, so 'error' followed by 'exit' counts once. */
  lost: boolean;
  /** Set by `terminate()`: from then on its answers are ignored, as if it had already died. */
  doomed: boolean;
}

export class WorkerHost<P extends WorkerProtocol> {
  private current!: Incarnation;
  private nextId = 1;
  private closed = false;
  /** Set on the first handshake; before it, a loss fails `start()` instead of restarting. */
  private started = false;
  private failure: SaegateError | null = null;
  private restartCount = 0;

  private constructor(private readonly options: WorkerHostOptions<P>) {}

  /** Spawns the worker and resolves once it answered `ready`; rejects with its init error otherwise. */
  static async start<P extends WorkerProtocol>(options: WorkerHostOptions<P>): Promise<WorkerHost<P>> {
    const host = new WorkerHost<P>(options);
    host.current = host.spawn();
    try {
      await host.current.ready;
    } catch (error) {
      await host.close();
      throw error;
    }
    host.started = true;
    return host;
  }

  /** Requests in flight on the current thread. */
  get inFlight(): number {
    return this.current.inFlight.size;
  }

  /** Replacements started so far. */
  get restarts(): number {
    return this.restartCount;
  }

  /** The error that ended the worker for good (policy `'never'`), or null while it is usable. */
  get exitError(): SaegateError | null {
    return this.failure;
  }

  private spawn(): Incarnation {
    const worker = spawnWorker(this.options.entry);
    let settleReady: { resolve: () => void; reject: (error: Error) => void } | null = null;
    const ready = new Promise<void>((resolve, reject) => {
      settleReady = { resolve, reject };
    });
    // A replacement whose init fails must not raise an unhandled rejection; its requests see the error.
    ready.catch(() => undefined);
    const inc: Incarnation = { worker, ready, inFlight: new Map(), lost: false, doomed: false };
    const settle = (error: Error | null): void => {
      if (!settleReady) return;
      if (error) settleReady.reject(error);
      else settleReady.resolve();
      settleReady = null;
    };
    worker.on('message', (msg: FromWorkerEnvelope<P>) => {
      switch (msg.kind) {
        case 'ready':
          settle(null);
          break;
        case 'init_error':
          settle(SaegateError.fromWire(msg));
          break;
        case 'response':
        case 'error': {
          if (inc.doomed) return;
          const pending = inc.inFlight.get(msg.id);
          if (!pending) return;
          inc.inFlight.delete(msg.id);
          if (msg.kind === 'response') pending.resolve(msg.body as never);
          else pending.reject(SaegateError.fromWire(msg));
          break;
        }
        case 'event':
          if (!inc.doomed) this.options.onEvent?.(msg.body);
          break;
      }
    });
    worker.on('error', (error) => {
      settle(new SaegateError('SAEGATE_ERR_WORKER_EXITED', [`${this.options.name}: ${error.message} before it was ready`], { cause: error }));
      this.onLost(inc, error.message);
    });
    worker.on('exit', (code) => {
      settle(new SaegateError('SAEGATE_ERR_WORKER_EXITED', [`${this.options.name}: exit code ${code} before it was ready`]));
      this.onLost(inc, `exit code ${code}`);
    });
    const { init, transfer } = this.options.init();
    const message: ToWorkerEnvelope<P> = { kind: 'init', init };
    worker.postMessage(message, transfer);
    return inc;
  }

  /** Rejects the lost thread's requests, then replaces it or marks the host failed. */
  private onLost(inc: Incarnation, reason: string): void {
    if (inc.lost) return;
    inc.lost = true;
    const error = new SaegateError('SAEGATE_ERR_WORKER_EXITED', [this.closed ? `${this.options.name} closed` : `${this.options.name}: ${reason}`]);
    for (const pending of inc.inFlight.values()) pending.reject(error);
    inc.inFlight.clear();
    if (this.closed || inc !== this.current) return;
    // After 'error' the thread may still be running its event loop; it must not answer anything.
    void inc.worker.terminate();
    if (this.started && this.options.restart === 'always') {
      this.restartCount++;
      this.current = this.spawn();
      this.options.onRestart?.(error);
    } else if (this.started) {
      this.failure = error;
      this.options.onExit?.(error);
    }
  }

  /**
   * Sends `body` to the worker, transferring `transfer`, and resolves with its answer. Rejects with
   * the worker's error, or SAEGATE_ERR_WORKER_EXITED when the thread is lost first or the host is
   * closed or failed.
   */
  request(body: P['request'], transfer: TransferListItem[] = []): Promise<P['response']> {
    if (this.closed) return Promise.reject(new SaegateError('SAEGATE_ERR_WORKER_EXITED', [`${this.options.name} closed`]));
    if (this.failure) return Promise.reject(this.failure);
    const inc = this.current;
    const id = this.nextId++;
    return new Promise<P['response']>((resolve, reject) => {
      // Registered before the post, so a thread that dies before answering rejects this request.
      inc.inFlight.set(id, { resolve: resolve as (response: never) => void, reject });
      const message: ToWorkerEnvelope<P> = { kind: 'request', id, body };
      try {
        inc.worker.postMessage(message, transfer);
      } catch (error) {
        inc.inFlight.delete(id);
        reject(error instanceof Error ? error : new SaegateError('SAEGATE_ERR_INTERNAL', [String(error)]));
      }
    });
  }

  /** Fire-and-forget message to the worker; dropped once the host is closed or failed. */
  notify(body: P['notice'], transfer: TransferListItem[] = []): void {
    if (this.closed || this.failure) return;
    const message: ToWorkerEnvelope<P> = { kind: 'notice', body };
    this.current.worker.postMessage(message, transfer);
  }

  /**
   * Kills the thread as an unexpected exit would: from this call on its answers are ignored; its
   * requests (including any posted before the thread is gone) reject with SAEGATE_ERR_WORKER_EXITED
   * and the restart policy applies. Resolves once the thread is gone and, under `'always'`, the
   * replacement's handshake has settled. For tests of crash recovery, and for a supervisor that
   * gives up on a stuck worker.
   */
  async terminate(): Promise<void> {
    if (this.closed) return;
    const inc = this.current;
    inc.doomed = true;
    const code = await inc.worker.terminate();
    this.onLost(inc, `terminated (exit code ${code})`);
    if (this.current !== inc) await this.current.ready.catch(() => undefined);
  }

  /** Stops the worker for good; requests in flight reject with SAEGATE_ERR_WORKER_EXITED ("<name> closed"). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const inc = this.current;
    await inc.worker.terminate();
    this.onLost(inc, 'closed');
  }
}
