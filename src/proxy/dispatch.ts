/**
 * The building blocks of the upstream path, in undici's own terms: one `dispatch(options, handler)`
 * and interceptors that wrap it (`(dispatch) => dispatch`), each adding one concern by wrapping the
 * handler: timeouts, retries, metrics. The innermost dispatch is the undici Pool's; the outermost
 * handler is the one that writes to the client (forward.ts).
 *
 * A wrapper that may finish an exchange on its own (a timeout firing while the request still
 * waits for a socket, a retry waiting out a Retry-After) hands its inner handler a
 * ControllerFacade instead of undici's controller: the facade outlives one attempt and remembers a
 * pause or an abort that came before there was a socket to apply it to.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { Dispatcher } from 'undici';
import type { RouteLabel } from './metrics.js';

export type DispatchHandler = Dispatcher.DispatchHandler;
export type DispatchController = Dispatcher.DispatchController;
export type Dispatch = Dispatcher.Dispatch;
export type Interceptor = Dispatcher.DispatcherComposeInterceptor;

/** What the interceptors need to know about one exchange; written back as it progresses. */
export interface Exchange {
  route: RouteLabel;
  /** The client asked for a stream: the first-token timeout applies and chunk gaps are measured. */
  stream: boolean;
  /** performance.now() when the request was first dispatched upstream; 0 before. */
  upstreamStartedAt: number;
  /** performance.now() when the upstream response ended or failed; 0 before. */
  upstreamEndedAt: number;
}

/** Dispatch options carrying the exchange (undici ignores fields it does not know). */
export interface ExchangeDispatchOptions extends Dispatcher.DispatchOptions {
  exchange: Exchange;
}

/** The exchange riding on `options`, if the caller put one there. */
export function exchangeOf(options: Dispatcher.DispatchOptions): Exchange | undefined {
  return (options as Partial<ExchangeDispatchOptions>).exchange;
}

/** Notified when the handler below pauses or resumes the response. */
export interface FlowListener {
  onPause(): void;
  onResume(): void;
}

/**
 * A controller that stands for "the current attempt, whichever it is". Aborts and pauses are
 * applied to the attempt's undici controller when there is one, and replayed on the next one.
 */
export class ControllerFacade implements DispatchController {
  private target: DispatchController | null = null;
  private abortReason: Error | null = null;
  private isPaused = false;

  /**
   * @param onDetachedAbort called when abort() comes while no attempt is attached (waiting for a
   *   socket, or between retries): the owner must then finish the exchange itself.
   * @param flow told about pauses and resumes (the idle timer must not run while we are paused).
   */
  constructor(
    private readonly onDetachedAbort: ((reason: Error) => void) | null = null,
    private readonly flow: FlowListener | null = null,
  ) {}

  get aborted(): boolean {
    return this.abortReason !== null;
  }

  get paused(): boolean {
    return this.isPaused;
  }

  get reason(): Error | null {
    return this.abortReason;
  }

  /** Makes `target` the current attempt, applying an abort or pause that came first. */
  attach(target: DispatchController): void {
    this.target = target;
    if (this.abortReason !== null) target.abort(this.abortReason);
    else if (this.isPaused) target.pause();
  }

  /** The current attempt is over (its response ended or failed). */
  detach(): void {
    this.target = null;
  }

  abort(reason: Error): void {
    if (this.abortReason !== null) return;
    this.abortReason = reason;
    if (this.target !== null) this.target.abort(reason);
    else this.onDetachedAbort?.(reason);
  }

  pause(): void {
    if (this.isPaused) return;
    this.isPaused = true;
    this.target?.pause();
    this.flow?.onPause();
  }

  resume(): void {
    if (!this.isPaused) return;
    this.isPaused = false;
    this.target?.resume();
    this.flow?.onResume();
  }
}

/** A handler that passes everything to `next`; wrappers override what they change. */
export class DelegatingHandler implements DispatchHandler {
  constructor(protected readonly next: DispatchHandler) {}

  onRequestStart(controller: DispatchController, context: unknown): void {
    this.next.onRequestStart?.(controller, context);
  }

  onResponseStart(controller: DispatchController, statusCode: number, headers: IncomingHttpHeaders, statusMessage?: string): void {
    this.next.onResponseStart?.(controller, statusCode, headers, statusMessage);
  }

  onResponseData(controller: DispatchController, chunk: Buffer): void {
    this.next.onResponseData?.(controller, chunk);
  }

  onResponseEnd(controller: DispatchController, trailers: IncomingHttpHeaders): void {
    this.next.onResponseEnd?.(controller, trailers);
  }

  onResponseError(controller: DispatchController, error: Error): void {
    this.next.onResponseError?.(controller, error);
  }
}
