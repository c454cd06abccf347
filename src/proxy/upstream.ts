/**
 * The upstream client: one undici Pool to the model server, composed with the interceptors that
 * make up the upstream path (metrics outermost, then timeouts, then retries, then the Pool).
 * Requests go through `dispatch` with their raw body and headers; nothing here buffers, parses or
 * re-serialises a body.
 */
import { Pool, type Dispatcher } from 'undici';
import type { DispatchHandler, ExchangeDispatchOptions } from './dispatch.js';
import type { ProxyMetrics } from './metrics.js';
import { retryInterceptor, type RetrySettings } from './retry.js';
import { timeoutsInterceptor, type TimeoutSettings } from './timeouts.js';
import { upstreamMetricsInterceptor } from './upstream-metrics.js';

export interface UpstreamClientOptions extends TimeoutSettings, Omit<RetrySettings, 'onRetry'> {
  /** Base URL: origin plus an optional path prefix, without a trailing slash. */
  upstream: string;
  /** Most sockets; 0 = unlimited. */
  connections: number;
  /** Connect to this Unix socket instead of the URL's host and port; null: TCP. */
  upstreamSocket?: string | null;
  /** TCP/TLS connect timeout, ms; 0 disables. */
  connectTimeoutMs: number;
  metrics: ProxyMetrics;
}

/** Result of a readiness probe. */
export interface ProbeResult {
  ok: boolean;
  /** HTTP status of the probe's answer, when there was one. */
  status: number | null;
  /** Why it failed, when it did. */
  error: string | null;
}

export class UpstreamClient {
  /** The upstream base URL, with the Unix socket it goes through when there is one (for errors and /readyz). */
  readonly url: string;
  /** Path prefix prepended to forwarded paths ('' for none). */
  readonly basePath: string;
  private readonly pool: Pool;
  private readonly dispatcher: Dispatcher;

  constructor(options: UpstreamClientOptions) {
    const url = new URL(options.upstream);
    this.url = options.upstreamSocket != null ? `${options.upstream} (unix socket ${options.upstreamSocket})` : options.upstream;
    this.basePath = url.pathname === '/' ? '' : url.pathname.replace(/\/+$/, '');
    this.pool = new Pool(url.origin, {
      connections: options.connections > 0 ? options.connections : null,
      connectTimeout: options.connectTimeoutMs,
      ...(options.upstreamSocket != null && { socketPath: options.upstreamSocket }),
      // The timeouts interceptor sets both per request; these are only the fallbacks for probes.
      headersTimeout: options.headersTimeoutMs,
      bodyTimeout: 0,
    });
    const metrics = options.metrics;
    // compose() wraps in order, so the last interceptor is the outermost.
    this.dispatcher = this.pool.compose(
      retryInterceptor({ ...options, onRetry: (reason) => metrics.retries.inc({ reason }) }),
      timeoutsInterceptor(options),
      upstreamMetricsInterceptor(metrics),
    );
  }

  /**
   * Sends one request upstream. `options.path` is the client's path (and query); the base path is
   * prepended here. The handler gets the response through undici's handler API.
   */
  dispatch(options: ExchangeDispatchOptions, handler: DispatchHandler): void {
    if (this.basePath !== '') options.path = this.basePath + options.path;
    this.dispatcher.dispatch(options, handler);
  }

  /**
   * `GET {upstream}/v1/models` with a short timeout: ok when the upstream answers below 500.
   * Bypasses retries and the request timeouts; never throws.
   */
  async probe(timeoutMs: number): Promise<ProbeResult> {
    try {
      const response = await this.pool.request({
        method: 'GET',
        path: `${this.basePath}/v1/models`,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
        signal: AbortSignal.timeout(timeoutMs),
      });
      await response.body.dump();
      const ok = response.statusCode < 500;
      return { ok, status: response.statusCode, error: ok ? null : `GET /v1/models answered ${response.statusCode}` };
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      return { ok: false, status: null, error: `${(error as Error).message}${typeof code === 'string' ? ` (${code})` : ''}` };
    }
  }

  /** Waits for running requests, then closes the sockets. */
  close(): Promise<void> {
    return this.pool.close();
  }

  /** Closes the sockets now, failing running requests. */
  destroy(): Promise<void> {
    return this.pool.destroy();
  }
}
