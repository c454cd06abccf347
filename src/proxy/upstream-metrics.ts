/**
 * Upstream timing as an interceptor: when the exchange went upstream and when it came back (for
 * `saegate_upstream_duration_seconds` and, by the forwarder, `saegate_overhead_seconds`), and the
 * gaps between a stream's chunks (`saegate_inter_token_seconds`). It sits outermost, so its clock
 * covers retries and its end sees what the timeouts decided.
 */
import { performance } from 'node:perf_hooks';
import type { IncomingHttpHeaders } from 'node:http';
import { DelegatingHandler, exchangeOf, type DispatchController, type DispatchHandler, type Exchange, type Interceptor } from './dispatch.js';
import type { ProxyMetrics } from './metrics.js';

/** Times every exchange that carries an Exchange; others pass untouched. */
export function upstreamMetricsInterceptor(metrics: ProxyMetrics): Interceptor {
  return (dispatch) => (options, handler) => {
    const exchange = exchangeOf(options);
    if (exchange === undefined) return dispatch(options, handler);
    exchange.upstreamStartedAt = performance.now();
    return dispatch(options, new UpstreamMetricsHandler(handler, metrics, exchange));
  };
}

class UpstreamMetricsHandler extends DelegatingHandler {
  private lastChunkAt = 0;

  constructor(
    next: DispatchHandler,
    private readonly metrics: ProxyMetrics,
    private readonly exchange: Exchange,
  ) {
    super(next);
  }

  override onResponseData(controller: DispatchController, chunk: Buffer): void {
    if (this.exchange.stream) {
      const now = performance.now();
      if (this.lastChunkAt !== 0) this.metrics.interToken.observe((now - this.lastChunkAt) / 1000);
      this.lastChunkAt = now;
    }
    this.next.onResponseData?.(controller, chunk);
  }

  override onResponseEnd(controller: DispatchController, trailers: IncomingHttpHeaders): void {
    this.ended();
    this.next.onResponseEnd?.(controller, trailers);
  }

  override onResponseError(controller: DispatchController, error: Error): void {
    this.ended();
    this.next.onResponseError?.(controller, error);
  }

  private ended(): void {
    const exchange = this.exchange;
    exchange.upstreamEndedAt = performance.now();
    this.metrics.upstreamDuration.observe({ route: exchange.route }, (exchange.upstreamEndedAt - exchange.upstreamStartedAt) / 1000);
  }
}
