/**
 * The saegate proxy as a fastify app factory. No `listen` here: server.ts listens and wires the tap
 * upgrade; tests use `inject()` or port 0.
 *
 * Wiring only: each concern lives in its own file (routes-*.ts for the endpoints, forward.ts for
 * the response path, upstream.ts with timeouts.ts, retry.ts and upstream-metrics.ts for the
 * upstream path; the tap is a TapHost from src/tap/host.ts). Every error a client can see leaves through the handlers
 * below as an OpenAI-shaped body with a SAEGATE_ERR_* code.
 */
import { performance } from 'node:perf_hooks';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import type { Registry } from 'prom-client';
import { SaegateError } from '../common/errors.js';
import { clientErrorHandler, frameworkErrorHandler, prepareErrorReply } from '../common/errors-fastify.js';
import { applyConnectionCap, fastifyLimitOptions } from '../common/http-server.js';
import type { MonitorService } from '../monitor/service.js';
import type { ProxyConfig } from './config.js';
import { toClientError } from './errors.js';
import { Forwarder } from './forward.js';
import { APPLIED_HEADER, REQUEST_ID_HEADER, requestIdFrom } from './headers.js';
import { InFlightExchanges, StreamSlots } from './limits.js';
import { ProxyMetrics, type RouteLabel } from './metrics.js';
import { emptyPlanResolver, type GenerationAbort, type PlanResolver, type RequestAborter } from './plan.js';
import { Readiness } from './readiness.js';
import { registerAdminRoutes } from './routes-admin.js';
import { registerOpenAIRoutes, type ProxyState } from './routes-openai.js';
import { registerOpsRoutes } from './routes-ops.js';
import type { LiveView } from './live/routes.js';
import { TapHost } from '../tap/host.js';
import { CountingSink, type ActivationSink } from '../tap/sink.js';
import { UpstreamClient } from './upstream.js';
import { createSteeringStrategy, type SteeringStrategy } from './upstream-steering.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The `route` label of this route's request metrics. */
    metricsRoute?: RouteLabel;
  }
  interface FastifyRequest {
    /** Set when the request was handed to the forwarder, which then records its metrics itself. */
    saegateForwarded: boolean;
  }
}

/** Options of {@link buildProxyApp}. */
export interface ProxyAppOptions {
  /** A validated configuration (resolveProxyConfig). */
  config: ProxyConfig;
  /** Decides each generation request's plan. Default: the empty plan for every request. */
  planResolver?: PlanResolver;
  /** Receives tap activation rows. Default: a CountingSink. */
  sink?: ActivationSink;
  /** Registry for the metrics. Default: a new one. */
  registry?: Registry;
  /** Fastify logger option. Default: `config.log`. */
  logger?: FastifyServerOptions['logger'];
  /** The drift monitor: `/readyz` details and the admin API's drift and baseline routes. Default none. */
  monitor?: MonitorService;
  /** The live view (`/ui`, src/proxy/live), when there is one; startProxy attaches its WebSocket. */
  liveView?: LiveView;
}

/** The app and the parts server.ts and tests reach into. */
export interface ProxyApp extends RequestAborter {
  app: FastifyInstance;
  config: ProxyConfig;
  tap: TapHost;
  sink: ActivationSink;
  upstream: UpstreamClient;
  metrics: ProxyMetrics;
  readiness: Readiness;
  inFlight: InFlightExchanges;
  streams: StreamSlots;
  state: ProxyState;
  /** How steering reaches the model server (`upstreamSteering`). */
  steering: SteeringStrategy;
  /** Closes the tap and the upstream sockets (idempotent); also run by `app.close()`. */
  closeResources(): Promise<void>;
}

/** Builds the proxy; call `listen` (or startProxy) or `inject` on `app`. */
export function buildProxyApp(options: ProxyAppOptions): ProxyApp {
  const config = options.config;
  const sink = options.sink ?? new CountingSink();
  const limitOptions = fastifyLimitOptions(config);
  const app = Fastify({
    logger: options.logger ?? config.log,
    bodyLimit: config.maxBodyBytes,
    ...limitOptions,
    http: { ...limitOptions.http, maxHeaderSize: config.maxHeaderBytes },
    // One id follows a request through saegate, the model server and the tap: the client's
    // x-request-id when it is well formed, else a fresh one.
    genReqId: (raw) => requestIdFrom(raw.headers),
    // Shutdown is ours: /readyz answers 503 while draining and requests are refused only at the end.
    return503OnClosing: false,
    exposeHeadRoutes: false,
    // Whatever Node's HTTP parser or fastify's router refuses still gets an OpenAI-shaped body.
    clientErrorHandler: clientErrorHandler({ maxHeaderBytes: config.maxHeaderBytes }),
    frameworkErrors: frameworkErrorHandler,
  });
  applyConnectionCap(app.server, config);

  const tap = new TapHost({ sink, token: config.tapToken, maxFrameBytes: config.tapMaxFrameBytes, logger: app.log });
  const metrics = new ProxyMetrics({ registry: options.registry, tapStats: () => tap.stats, sinkDroppedRows: () => tap.sinkDroppedRows });
  const upstream = new UpstreamClient({ ...config, connections: config.upstreamConnections, metrics });
  const steering = createSteeringStrategy(config.upstreamSteering, { tap, vectorDir: config.upstreamSteeringVectorDir });
  const state: ProxyState = { phase: 'serving' };
  const inFlight = new InFlightExchanges();
  const streams = new StreamSlots(config.maxStreams);
  const readiness = new Readiness({
    upstream,
    probeTimeoutMs: config.readinessProbeTimeoutMs,
    cacheMs: config.readinessCacheMs,
    requireTap: config.requireTap,
    tapConnections: () => tap.connections.length,
    steering,
    draining: () => state.phase !== 'serving',
    ...(options.monitor && { monitor: options.monitor.readiness.bind(options.monitor) }),
  });
  const forwarder = new Forwarder({
    upstream,
    metrics,
    inFlight,
    connectTimeoutMs: config.connectTimeoutMs,
    headersTimeoutMs: config.headersTimeoutMs,
    retryAfterSeconds: config.retryAfterSeconds,
    logger: app.log,
  });

  // Bodies stay bytes: whatever the content type, the route gets the raw Buffer to forward as is.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => done(null, body));

  app.decorateRequest('saegateForwarded', false);
  // Forwarded requests record their own metrics (their end is not always a 'finish': clients go
  // away); this hook counts everything answered by saegate itself.
  app.addHook('onResponse', (request, reply, done) => {
    if (!request.saegateForwarded) {
      const route = request.routeOptions.config.metricsRoute ?? 'not_found';
      metrics.requests.inc({ route, status: String(reply.statusCode) });
      metrics.requestDuration.observe({ route }, reply.elapsedTime / 1000);
    }
    done();
  });

  app.setNotFoundHandler((request, reply) => {
    const error = new SaegateError('SAEGATE_ERR_NOT_FOUND', [request.method, request.url]);
    void reply.code(error.status).header(REQUEST_ID_HEADER, request.id).send(error.toJSON());
  });

  app.setErrorHandler((thrown, request, reply) => {
    const error = toClientError(thrown, { maxBodyBytes: config.maxBodyBytes });
    if (error.status >= 500) request.log.error({ err: thrown }, error.message);
    else request.log.info({ code: error.code, param: error.param }, error.message);
    if (error.status === 429 || error.status === 503) void reply.header('retry-after', String(config.retryAfterSeconds));
    prepareErrorReply(error, request, reply);
    void reply.code(error.status).header(REQUEST_ID_HEADER, request.id).header(APPLIED_HEADER, 'none').send(error.toJSON());
  });

  registerOpsRoutes(app, { readiness, metrics });
  registerOpenAIRoutes(app, { forwarder, streams, planResolver: options.planResolver ?? emptyPlanResolver, steering, metrics, state });
  registerAdminRoutes(app, { config, tap, streams, inFlight, state, startedAt: performance.now(), monitor: options.monitor });
  options.liveView?.register(app, { host: config.host, adminToken: config.adminToken });

  let closing: Promise<void> | null = null;
  const closeResources = (): Promise<void> => {
    options.liveView?.close();
    closing ??= Promise.all([tap.close(1000), upstream.destroy()]).then(() => undefined);
    return closing;
  };
  app.addHook('onClose', async () => {
    await closeResources();
  });

  const abortRequest = (requestId: string, abort: GenerationAbort): boolean => forwarder.abortGeneration(requestId, abort);
  return { app, config, tap, sink, upstream, metrics, readiness, inFlight, streams, state, steering, closeResources, abortRequest };
}
