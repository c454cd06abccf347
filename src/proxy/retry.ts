/**
 * Retries as an interceptor. Off by default (`retries: 0` installs no wrapper at all). When on, an
 * attempt is retried only while nothing has gone to the client: the wrapper decides at the
 * upstream's response headers, before passing them on, so a retried response never reaches the
 * client and a passed-on one is never retried.
 *
 * Retried: 502, 503 and 429 responses, and attempts that failed without a response (refused,
 * reset, unreachable, connect timeout). Not retried: a headers timeout (the upstream is slow, not
 * gone; a second copy of a slow request makes it slower) and anything after the headers.
 *
 * The wait before a retry is the upstream's `Retry-After` when it sent one, else an exponential
 * backoff; the waits of one request add up to at most `retryMaxDelayMs`, and a `Retry-After`
 * longer than what is left ends the retrying (the client gets that response). The discarded
 * response's body is read to its end so the socket goes back to the pool.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { ControllerFacade, type Dispatch, type DispatchController, type DispatchHandler, type Interceptor } from './dispatch.js';
import { isRetryableError } from './errors.js';
import { retryAfterMs } from './headers.js';
import type { Dispatcher } from 'undici';
import type { RetryReason } from './metrics.js';

export interface RetrySettings {
  /** Retries per request; 0 = off. */
  retries: number;
  /** Sum of waits between the attempts of one request, ms. */
  retryMaxDelayMs: number;
  /** First backoff without Retry-After, ms; doubles per retry. */
  retryBackoffMs: number;
  /** Called once per retry (metrics). */
  onRetry?: (reason: RetryReason) => void;
}

const RETRY_STATUSES = new Set([429, 502, 503]);

/** Retries failed attempts before any byte reached the client; see the module comment. */
export function retryInterceptor(settings: RetrySettings): Interceptor {
  if (settings.retries <= 0) return (dispatch) => dispatch;
  return (dispatch) => (options, handler) => {
    new RetryHandler(dispatch, options, handler, settings).start();
    return true;
  };
}

class RetryHandler implements DispatchHandler {
  private readonly facade: ControllerFacade;
  private attempt = 0;
  private waitedMs = 0;
  /** onRequestStart has been passed on (once, for the first attempt that got a socket). */
  private started = false;
  /** Response headers have been passed on: no more retries. */
  private committed = false;
  /** The current attempt's response is being read and dropped; its retry is scheduled at its end. */
  private discarding = false;
  private pendingDelayMs = 0;
  private pendingReason: RetryReason = 'connection';
  private timer: NodeJS.Timeout | null = null;
  private finished = false;

  constructor(
    private readonly dispatch: Dispatch,
    private readonly options: Dispatcher.DispatchOptions,
    private readonly next: DispatchHandler,
    private readonly settings: RetrySettings,
  ) {
    this.facade = new ControllerFacade((reason) => this.onAbortBetweenAttempts(reason));
  }

  start(): void {
    this.dispatch(this.options, this);
  }

  onRequestStart(controller: DispatchController, context: unknown): void {
    this.facade.attach(controller);
    if (this.started) return;
    this.started = true;
    this.next.onRequestStart?.(this.facade, context);
  }

  onResponseStart(_controller: DispatchController, statusCode: number, headers: IncomingHttpHeaders, statusMessage?: string): void {
    if (!this.committed && RETRY_STATUSES.has(statusCode)) {
      const delay = this.nextDelay(retryAfterMs(headers['retry-after']));
      if (delay !== null) {
        this.discarding = true;
        this.pendingDelayMs = delay;
        this.pendingReason = `status_${statusCode as 429 | 502 | 503}`;
        return;
      }
    }
    this.committed = true;
    this.next.onResponseStart?.(this.facade, statusCode, headers, statusMessage);
  }

  onResponseData(_controller: DispatchController, chunk: Buffer): void {
    if (!this.discarding) this.next.onResponseData?.(this.facade, chunk);
  }

  onResponseEnd(_controller: DispatchController, trailers: IncomingHttpHeaders): void {
    if (this.discarding) {
      this.discarding = false;
      this.schedule(this.pendingDelayMs, this.pendingReason);
      return;
    }
    this.finished = true;
    this.next.onResponseEnd?.(this.facade, trailers);
  }

  onResponseError(_controller: DispatchController, error: Error): void {
    if (!this.facade.aborted) {
      if (this.discarding) {
        // The response we were dropping broke off: retry as planned.
        this.discarding = false;
        this.schedule(this.pendingDelayMs, this.pendingReason);
        return;
      }
      if (!this.committed && isRetryableError(error)) {
        const delay = this.nextDelay(null);
        if (delay !== null) {
          this.schedule(delay, 'connection');
          return;
        }
      }
    }
    this.fail(error);
  }

  /** The wait before the next attempt, or null when the budget (count or time) is spent. */
  private nextDelay(retryAfter: number | null): number | null {
    if (this.attempt >= this.settings.retries) return null;
    const delay = retryAfter ?? this.settings.retryBackoffMs * 2 ** this.attempt;
    if (this.waitedMs + delay > this.settings.retryMaxDelayMs) return null;
    return delay;
  }

  private schedule(delayMs: number, reason: RetryReason): void {
    this.attempt++;
    this.waitedMs += delayMs;
    this.facade.detach();
    this.settings.onRetry?.(reason);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.dispatch(this.options, this);
    }, delayMs);
  }

  /** abort() while no attempt was attached: between retries, or before the first socket. */
  private onAbortBetweenAttempts(reason: Error): void {
    if (this.timer === null) return; // an attempt is queued in the pool: it is aborted when it starts
    clearTimeout(this.timer);
    this.timer = null;
    this.fail(reason);
  }

  private fail(error: Error): void {
    if (this.finished) return;
    this.finished = true;
    this.next.onResponseError?.(this.facade, error);
  }
}
