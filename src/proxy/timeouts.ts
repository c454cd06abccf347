/**
 * The timeout layers of an upstream exchange as one interceptor (docs/proxy.md, "Timeouts"):
 *
 * - connect: the Pool's connect timeout (undici raises UND_ERR_CONNECT_TIMEOUT);
 * - headers: undici's `headersTimeout`, from the request being sent to the response headers;
 * - first token (streams): from the response headers to the first body chunk;
 * - idle: the longest gap between body chunks (non-streaming responses: also headers to first chunk);
 * - total: from the first dispatch to the end of the response, retries included.
 *
 * undici's own `bodyTimeout` is switched off: it cannot tell a first token from an idle gap.
 * Each expiry aborts the exchange with a 504 SaegateError naming the layer.
 *
 * The idle timer is not re-armed on every chunk (that would be a timer-list operation per token):
 * chunks only record their time, and the timer, when it fires, re-arms itself for what is left.
 * Time spent paused (the client is slow, so we stopped reading the upstream) is not idle time.
 */
import { performance } from 'node:perf_hooks';
import type { IncomingHttpHeaders } from 'node:http';
import { ControllerFacade, DelegatingHandler, exchangeOf, type DispatchController, type DispatchHandler, type FlowListener, type Interceptor } from './dispatch.js';
import { timeoutError } from './errors.js';

/** Timeout settings in ms; 0 disables a layer. The connect timeout belongs to the Pool. */
export interface TimeoutSettings {
  headersTimeoutMs: number;
  firstTokenTimeoutMs: number;
  idleTimeoutMs: number;
  totalTimeoutMs: number;
}

/** Applies the headers, first-token, idle and total timeouts to every exchange. */
export function timeoutsInterceptor(settings: TimeoutSettings): Interceptor {
  return (dispatch) => (options, handler) => {
    const stream = exchangeOf(options)?.stream ?? false;
    return dispatch({ ...options, headersTimeout: settings.headersTimeoutMs, bodyTimeout: 0 }, new TimeoutHandler(handler, settings, stream));
  };
}

class TimeoutHandler extends DelegatingHandler implements FlowListener {
  private readonly facade: ControllerFacade;
  private finished = false;
  private totalTimer: NodeJS.Timeout | null = null;
  private chunkTimer: NodeJS.Timeout | null = null;
  /** Which limit the chunk timer enforces now. */
  private chunkLayer: 'first_token' | 'idle' = 'idle';
  private lastActivityAt = 0;
  private isPaused = false;

  constructor(
    next: DispatchHandler,
    private readonly settings: TimeoutSettings,
    private readonly stream: boolean,
  ) {
    super(next);
    this.facade = new ControllerFacade((reason) => this.finish(reason), this);
    if (settings.totalTimeoutMs > 0) this.totalTimer = setTimeout(this.onTotalTimeout, settings.totalTimeoutMs);
  }

  override onRequestStart(controller: DispatchController, context: unknown): void {
    // After a timeout that fired while the request waited for a socket, attach() aborts at once.
    this.facade.attach(controller);
    if (!this.finished) this.next.onRequestStart?.(this.facade, context);
  }

  override onResponseStart(_controller: DispatchController, statusCode: number, headers: IncomingHttpHeaders, statusMessage?: string): void {
    if (this.finished) return;
    if (this.stream && this.settings.firstTokenTimeoutMs > 0) this.armChunkTimer('first_token', this.settings.firstTokenTimeoutMs);
    else if (this.settings.idleTimeoutMs > 0) this.armChunkTimer('idle', this.settings.idleTimeoutMs);
    this.next.onResponseStart?.(this.facade, statusCode, headers, statusMessage);
  }

  override onResponseData(_controller: DispatchController, chunk: Buffer): void {
    if (this.finished) return;
    if (this.chunkTimer !== null) {
      if (this.chunkLayer === 'first_token') {
        clearTimeout(this.chunkTimer);
        this.chunkTimer = null;
        if (this.settings.idleTimeoutMs > 0) this.armChunkTimer('idle', this.settings.idleTimeoutMs);
      } else {
        this.lastActivityAt = performance.now();
      }
    }
    this.next.onResponseData?.(this.facade, chunk);
  }

  override onResponseEnd(_controller: DispatchController, trailers: IncomingHttpHeaders): void {
    if (this.finished) return;
    this.finished = true;
    this.clearTimers();
    this.facade.detach();
    this.next.onResponseEnd?.(this.facade, trailers);
  }

  override onResponseError(_controller: DispatchController, error: Error): void {
    if (this.finished) return;
    this.finish(error);
  }

  onPause(): void {
    this.isPaused = true;
  }

  onResume(): void {
    this.isPaused = false;
    this.lastActivityAt = performance.now();
  }

  private finish(error: Error): void {
    if (this.finished) return;
    this.finished = true;
    this.clearTimers();
    this.facade.detach();
    this.next.onResponseError?.(this.facade, error);
  }

  private armChunkTimer(layer: 'first_token' | 'idle', ms: number): void {
    this.chunkLayer = layer;
    this.lastActivityAt = performance.now();
    this.chunkTimer = setTimeout(this.onChunkTimer, ms);
  }

  private clearTimers(): void {
    if (this.totalTimer !== null) clearTimeout(this.totalTimer);
    if (this.chunkTimer !== null) clearTimeout(this.chunkTimer);
    this.totalTimer = null;
    this.chunkTimer = null;
  }

  private readonly onTotalTimeout = (): void => {
    this.totalTimer = null;
    this.expire('total', this.settings.totalTimeoutMs);
  };

  private readonly onChunkTimer = (): void => {
    this.chunkTimer = null;
    if (this.finished) return;
    if (this.chunkLayer === 'first_token') {
      this.expire('first_token', this.settings.firstTokenTimeoutMs);
      return;
    }
    const limit = this.settings.idleTimeoutMs;
    if (this.isPaused) {
      this.chunkTimer = setTimeout(this.onChunkTimer, limit);
      return;
    }
    const idleFor = performance.now() - this.lastActivityAt;
    // Timers may fire a fraction of a millisecond early; do not re-arm for less than 1 ms.
    if (idleFor >= limit - 1) this.expire('idle', limit);
    else this.chunkTimer = setTimeout(this.onChunkTimer, limit - idleFor);
  };

  /** Aborts the exchange; the abort comes back through onResponseError (or onDetachedAbort without a socket). */
  private expire(layer: 'first_token' | 'idle' | 'total', ms: number): void {
    if (this.finished) return;
    this.facade.abort(timeoutError(layer, ms));
  }
}
