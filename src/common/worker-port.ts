/**
 * The worker-thread half of `WorkerHost`: `serveWorker` answers the host's handshake, requests and
 * notices on `parentPort`, so a worker entry file holds only its own work.
 *
 * - `init` runs the worker's `init` handler and posts `ready`, or `init_error` with the error's
 *   code (SAEGATE_ERR_RUNTIME for an error without one).
 * - Requests wait for init, start in arrival order and are answered by id; a handler that throws
 *   answers `error`. After a failed init every request is answered with the init error, so a
 *   host that posted before the handshake never waits forever.
 * - With `serial`, a request starts only when the previous one is answered: an onnxruntime
 *   session run blocks the session's threads, and two runs at once on one session only contend.
 * - Notices are handled as they arrive (they do not wait for init).
 */
import { parentPort, type TransferListItem } from 'node:worker_threads';
import { isSaegateError } from './errors.js';
import type { FromWorkerEnvelope, ToWorkerEnvelope, WireError, WorkerProtocol } from './worker-protocol.js';

/** A request's answer and the buffers it transfers back. */
export interface WorkerReply<R> {
  body: R;
  transfer?: TransferListItem[];
}

export interface WorkerHandlers<P extends WorkerProtocol> {
  /** Prepares the worker (onnxruntime, sessions, buffers). A throw becomes the host's `start()` rejection. */
  init(init: P['init']): Promise<void> | void;
  /** Answers one request. */
  request(body: P['request']): Promise<WorkerReply<P['response']>> | WorkerReply<P['response']>;
  /** Handles a fire-and-forget message. Default: ignored. */
  notice?(body: P['notice']): void;
  /** Start a request only after the previous one is answered. Default false: requests overlap. */
  serial?: boolean;
}

/** What a worker can do besides answering: post unsolicited events. */
export interface WorkerPort<P extends WorkerProtocol> {
  emit(event: P['event'], transfer?: TransferListItem[]): void;
}

/** An error as it crosses to the host: its SAEGATE code, or SAEGATE_ERR_RUNTIME. */
export function toWireError(error: unknown): WireError {
  return {
    code: isSaegateError(error) ? error.code : 'SAEGATE_ERR_RUNTIME',
    message: error instanceof Error ? error.message : String(error),
  };
}

/** Serves the host on `parentPort`; throws when not called in a worker thread. */
export function serveWorker<P extends WorkerProtocol>(handlers: WorkerHandlers<P>): WorkerPort<P> {
  const port = parentPort;
  if (!port) throw new Error('serveWorker must run in a worker thread');
  const post = (message: FromWorkerEnvelope<P>, transfer: TransferListItem[] = []): void => port.postMessage(message, transfer);
  let initError: WireError | null = null;
  /** Settles (never rejects) when init is done; requests start after it. */
  let ready: Promise<void> = Promise.resolve();
  /** With `serial`: settles when the last request posted so far has been answered. */
  let queue: Promise<void> = ready;

  const answer = async (id: number, body: P['request']): Promise<void> => {
    if (initError) {
      post({ kind: 'error', id, ...initError });
      return;
    }
    try {
      const reply = await handlers.request(body);
      post({ kind: 'response', id, body: reply.body }, reply.transfer);
    } catch (error) {
      post({ kind: 'error', id, ...toWireError(error) });
    }
  };

  port.on('message', (msg: ToWorkerEnvelope<P>) => {
    switch (msg.kind) {
      case 'init':
        ready = Promise.resolve()
          .then(() => handlers.init(msg.init))
          .then(
            () => post({ kind: 'ready' }),
            (error: unknown) => {
              initError = toWireError(error);
              post({ kind: 'init_error', ...initError });
            },
          );
        queue = ready;
        break;
      case 'request': {
        const task = (handlers.serial ? queue : ready).then(() => answer(msg.id, msg.body));
        if (handlers.serial) queue = task;
        break;
      }
      case 'notice':
        handlers.notice?.(msg.body);
        break;
    }
  });
  return { emit: (event, transfer = []) => post({ kind: 'event', body: event }, transfer) };
}
