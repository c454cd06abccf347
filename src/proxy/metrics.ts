/**
 * The proxy's Prometheus metrics on an explicit Registry (never prom-client's global one), plus the
 * default Node.js metrics (event-loop lag included). Names, units and labels are listed in
 * docs/metrics.md. Every label has a fixed, small set of values: routes are named by the proxy,
 * not taken from URLs; status codes are HTTP's.
 *
 * Tap counters live in TapServer (it counts before any listener runs); they are read at scrape
 * time instead of being mirrored on every frame.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { TapServerStats } from '../tap/server.js';
import { ArrayHistogram, type HistogramRecorder } from '../monitor/array-histogram.js';

/** Route label values. */
export type RouteLabel = 'chat_completions' | 'completions' | 'passthrough' | 'tap' | 'ops' | 'admin' | 'ui' | 'not_found';

/** Which side ended a stream early. */
export type AbortSide = 'client' | 'upstream' | 'timeout' | 'shutdown' | 'policy';

/** Upstream failure kinds (`saegate_upstream_failures_total{kind}`). */
export type UpstreamFailureKind =
  | 'unavailable'
  | 'stream'
  | 'connect_timeout'
  | 'headers_timeout'
  | 'first_token_timeout'
  | 'idle_timeout'
  | 'total_timeout';

/** Why an attempt was retried. */
export type RetryReason = 'status_429' | 'status_502' | 'status_503' | 'connection';

/** What happened to a request's steering plan. */
export type PlanOutcome = 'sent' | 'skipped' | 'refused';

/** Latency buckets for whole requests and upstream time, seconds: 1 ms to 10 min. */
const REQUEST_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];
/** saegate's own time, seconds: 50 µs to 1 s. */
const OVERHEAD_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];
/** Gaps between chunks, seconds: 0.5 ms to 10 s. */
const TOKEN_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export interface ProxyMetricsOptions {
  /** Registry to register on. Default: a new one. */
  registry?: Registry;
  /** Also collect prom-client's default Node.js metrics. Default true. */
  defaultMetrics?: boolean;
  /** Tap counters to expose, read at scrape time. */
  tapStats?: () => TapServerStats;
  /** Rows the sink dropped so far, read at scrape time. */
  sinkDroppedRows?: () => number;
}

/** Every metric the proxy exports. */
export class ProxyMetrics {
  readonly registry: Registry;
  readonly requests: Counter<'route' | 'status'>;
  readonly requestDuration: Histogram<'route'>;
  readonly upstreamDuration: Histogram<'route'>;
  readonly overhead: Histogram<'route'>;
  readonly timeToFirstToken: Histogram<'route'>;
  /** Observed once per streamed chunk: counted in a typed array (see ArrayHistogram). */
  readonly interToken: HistogramRecorder;
  readonly inFlight: Gauge;
  readonly activeStreams: Gauge;
  readonly streamAborts: Counter<'side'>;
  readonly upstreamFailures: Counter<'kind'>;
  readonly retries: Counter<'reason'>;
  readonly plans: Counter<'outcome'>;

  constructor(options: ProxyMetricsOptions = {}) {
    const registry = options.registry ?? new Registry();
    this.registry = registry;
    const registers = [registry];
    if (options.defaultMetrics !== false) collectDefaultMetrics({ register: registry });

    this.requests = new Counter({ name: 'saegate_requests_total', help: 'HTTP requests answered, by route and status code.', labelNames: ['route', 'status'], registers });
    this.requestDuration = new Histogram({
      name: 'saegate_request_duration_seconds',
      help: 'Time from request arrival to the last byte of the response (streams: the whole stream).',
      labelNames: ['route'],
      buckets: REQUEST_BUCKETS,
      registers,
    });
    this.upstreamDuration = new Histogram({
      name: 'saegate_upstream_duration_seconds',
      help: 'Time from forwarding a request upstream to the last byte of its response, retries included.',
      labelNames: ['route'],
      buckets: REQUEST_BUCKETS,
      registers,
    });
    this.overhead = new Histogram({
      name: 'saegate_overhead_seconds',
      help: 'Request duration minus upstream duration: the time saegate itself added.',
      labelNames: ['route'],
      buckets: OVERHEAD_BUCKETS,
      registers,
    });
    this.timeToFirstToken = new Histogram({
      name: 'saegate_time_to_first_token_seconds',
      help: 'Streams: time from request arrival to the first body chunk written to the client.',
      labelNames: ['route'],
      buckets: REQUEST_BUCKETS,
      registers,
    });
    this.interToken = new ArrayHistogram({
      name: 'saegate_inter_token_seconds',
      help: 'Streams: time between consecutive body chunks from the upstream.',
      buckets: TOKEN_BUCKETS,
      labelNames: [],
      registers,
    }).recorder({});
    this.inFlight = new Gauge({ name: 'saegate_requests_in_flight', help: 'Proxied requests being served.', registers });
    this.activeStreams = new Gauge({ name: 'saegate_active_streams', help: 'Streaming requests being served.', registers });
    this.streamAborts = new Counter({
      name: 'saegate_stream_aborts_total',
      help: 'Streams that ended early, by the side that ended them (client, upstream, timeout, shutdown, policy).',
      labelNames: ['side'],
      registers,
    });
    this.upstreamFailures = new Counter({
      name: 'saegate_upstream_failures_total',
      help: 'Upstream attempts that failed, by kind (unavailable, stream, <layer>_timeout).',
      labelNames: ['kind'],
      registers,
    });
    this.retries = new Counter({ name: 'saegate_upstream_retries_total', help: 'Upstream attempts retried, by reason.', labelNames: ['reason'], registers });
    this.plans = new Counter({
      name: 'saegate_steering_plans_total',
      help: 'Requests with steering, by outcome (sent: plan over the tap, upstream: written into the body for a server without the tap, skipped: nothing could apply it, refused: fail-closed).',
      labelNames: ['outcome'],
      registers,
    });

    const tapStats = options.tapStats;
    const sinkDropped = options.sinkDroppedRows ?? (() => 0);
    if (tapStats !== undefined) this.registerTapMetrics(registers, tapStats, sinkDropped);
  }

  /** The exposition text and its content type. */
  async scrape(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }

  private registerTapMetrics(registers: Registry[], tapStats: () => TapServerStats, sinkDropped: () => number): void {
    // TapServer.stats is a cheap snapshot; each collect callback reads its own at scrape time.
    const stats = tapStats;
    const counter = (name: string, help: string, read: (s: TapServerStats) => number): void => {
      new Counter({
        name,
        help,
        registers,
        collect() {
          this.reset();
          this.inc(read(stats()));
        },
      });
    };
    new Gauge({
      name: 'saegate_tap_connections',
      help: 'Model-server tap connections open now.',
      registers,
      collect() {
        this.set(stats().connections.current);
      },
    });
    counter('saegate_tap_connections_total', 'Tap connections that completed the handshake.', (s) => s.connections.total);
    counter('saegate_tap_frames_total', 'Tap frames received and decoded.', (s) => s.framesReceived);
    counter('saegate_tap_rows_total', 'Activation rows received on the tap.', (s) => s.rowsReceived);
    counter('saegate_tap_bytes_total', 'Bytes of decoded tap frames.', (s) => s.bytesReceived);
    counter('saegate_tap_malformed_frames_total', 'Tap frames that did not decode; each closed its connection.', (s) => s.malformedFrames);
    counter('saegate_tap_protocol_errors_total', 'Tap messages at the wrong time or in the wrong direction; each closed its connection.', (s) => s.protocolErrors);
    counter('saegate_tap_auth_failures_total', 'Tap upgrades refused for a missing or wrong token.', (s) => s.authFailures);
    new Counter({
      name: 'saegate_tap_rows_dropped_total',
      help: 'Activation rows dropped, by reason: model_server (its send queue was full), sink (the SAE pipeline was full).',
      labelNames: ['reason'],
      registers,
      collect() {
        this.reset();
        this.inc({ reason: 'model_server' }, stats().rowsDroppedReported);
        this.inc({ reason: 'sink' }, sinkDropped());
      },
    });
  }
}
