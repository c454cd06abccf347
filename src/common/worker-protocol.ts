/**
 * The envelope every saegate worker thread speaks (`WorkerHost` on the main thread, `serveWorker` in
 * the worker). A worker's own protocol only names its payloads (`WorkerProtocol`); the envelope adds
 * the handshake, request ids and error transport once, for every worker.
 *
 * - `init` → `ready` | `init_error`: the handshake. Requests posted before `ready` wait in the worker.
 * - `request` (id) → `response` | `error` (same id): one answer per request.
 * - `notice`: fire-and-forget to the worker (a cancel, a subscription change).
 * - `event`: unsolicited from the worker (a decode step, training progress).
 *
 * Errors cross as plain `{code, message}` objects and are rebuilt with `SaegateError.fromWire`.
 */

/** The payload types of one worker's protocol; `never` for a kind it does not use. */
export interface WorkerProtocol {
  /** Sent once per worker start (again to each replacement). */
  init: unknown;
  request: unknown;
  response: unknown;
  notice: unknown;
  event: unknown;
}

/** An error as it crosses the thread boundary. */
export interface WireError {
  code: string;
  message: string;
}

export type ToWorkerEnvelope<P extends WorkerProtocol> =
  | { kind: 'init'; init: P['init'] }
  | { kind: 'request'; id: number; body: P['request'] }
  | { kind: 'notice'; body: P['notice'] };

export type FromWorkerEnvelope<P extends WorkerProtocol> =
  | { kind: 'ready' }
  | ({ kind: 'init_error' } & WireError)
  | { kind: 'response'; id: number; body: P['response'] }
  | ({ kind: 'error'; id: number } & WireError)
  | { kind: 'event'; body: P['event'] };
