/**
 * The OpenAI routes: `POST /v1/chat/completions` and `POST /v1/completions` resolve the request's
 * plan and are forwarded with it; every other `/v1/*` route is forwarded as is. Bodies arrive as
 * raw Buffers (app.ts installs a buffer parser) and leave unchanged, except that a steering plan
 * for a server without the tap is written into its JSON body (upstream-steering.ts).
 *
 * The handlers are synchronous while the plan resolver answers synchronously, so the common path
 * allocates no promise of its own.
 */
import { performance } from 'node:perf_hooks';
import type { FastifyInstance, FastifyReply, FastifyRequest, HTTPMethods } from 'fastify';
import { err, SaegateError } from '../common/errors.js';
import type { Forwarder } from './forward.js';
import type { StreamSlots } from './limits.js';
import type { ProxyMetrics } from './metrics.js';
import { appliedValue, type PlanResolver, type RequestPlan } from './plan.js';
import { readRequestFields, type RequestFields } from './request-fields.js';
import type { SteeringStrategy } from './upstream-steering.js';

/** Where the proxy is in its life: serving, draining (readyz 503, still serving) or closing (refusing). */
export interface ProxyState {
  phase: 'serving' | 'draining' | 'closing';
}

export interface OpenAIRoutesOptions {
  forwarder: Forwarder;
  streams: StreamSlots;
  planResolver: PlanResolver;
  /** Delivers a plan's steering: over the tap, or in the body for servers without one. */
  steering: SteeringStrategy;
  metrics: ProxyMetrics;
  state: ProxyState;
}

type GenerationRoute = 'chat_completions' | 'completions';

const PASSTHROUGH_METHODS: HTTPMethods[] = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'];

function isPromise<T>(value: T | Promise<T>): value is Promise<T> {
  return typeof (value as Promise<T>)?.then === 'function';
}

/** The arrival time of a request, from fastify's reply clock. */
function arrivedAt(reply: FastifyReply): number {
  return performance.now() - reply.elapsedTime;
}

export function registerOpenAIRoutes(app: FastifyInstance, options: OpenAIRoutesOptions): void {
  const { forwarder, streams, planResolver, steering, metrics, state } = options;
  const releaseStream = (): void => streams.release();

  function refuseWhenClosing(): void {
    if (state.phase === 'closing') throw err('SAEGATE_ERR_SHUTTING_DOWN');
  }

  /** Delivers the plan's steering (tap or body field) and forwards the request. Throws before the hijack only. */
  function forwardWithPlan(route: GenerationRoute, request: FastifyRequest, reply: FastifyReply, clientBody: Buffer, fields: RequestFields, plan: RequestPlan): void {
    let planId: string | null = null;
    let applied: string | null = null;
    let body = clientBody;
    const outcome = plan.outcome;
    if (plan.steering.length > 0) {
      try {
        ({ planId, applied, body } = steering.deliver(request.id, plan.steering, clientBody));
      } catch (error) {
        outcome?.done();
        throw error;
      }
      if (applied === null && plan.failClosed === true) {
        metrics.plans.inc({ outcome: 'refused' });
        outcome?.done();
        throw new SaegateError('SAEGATE_ERR_STEERING_UNAVAILABLE', [request.id, plan.policies.join(', ') || 'steering']);
      }
      metrics.plans.inc({ outcome: applied === null ? 'skipped' : planId === null ? 'upstream' : 'sent' });
    }
    request.saegateForwarded = true;
    reply.hijack();
    // The client may have gone while the plan was resolved; then there is nobody to forward for.
    if (request.raw.socket?.destroyed === true) {
      if (fields.stream) releaseStream();
      outcome?.done();
      return;
    }
    const steeringItem = applied;
    const onDone = outcome === undefined ? (fields.stream ? releaseStream : undefined) : () => {
      if (fields.stream) releaseStream();
      outcome.done();
    };
    forwarder.forward({
      route,
      method: 'POST',
      path: request.url,
      rawHeaders: request.raw.rawHeaders,
      body,
      requestId: request.id,
      planId,
      tapMaxDelayMs: plan.tapMaxDelayMs ?? null,
      applied: outcome === undefined ? appliedValue(plan, applied) : () => outcome.applied(steeringItem),
      stream: fields.stream,
      res: reply.raw,
      arrivedAt: arrivedAt(reply),
      onDone,
    });
  }

  function generation(route: GenerationRoute) {
    return (request: FastifyRequest, reply: FastifyReply): Promise<void> | void => {
      refuseWhenClosing();
      const body = request.body;
      if (!Buffer.isBuffer(body) || body.length === 0) throw new SaegateError('SAEGATE_ERR_INVALID_JSON', ['the body is empty']);
      const fields = readRequestFields(body);
      if (fields.stream && !streams.tryAcquire()) throw new SaegateError('SAEGATE_ERR_TOO_MANY_STREAMS', [streams.limit]);
      // From here the stream slot is ours until forwardWithPlan hands it to the exchange.
      let plan: RequestPlan | Promise<RequestPlan>;
      try {
        plan = planResolver.resolve({ requestId: request.id, route, model: fields.model, stream: fields.stream, headers: request.headers, body });
        if (!isPromise(plan)) {
          forwardWithPlan(route, request, reply, body, fields, plan);
          return;
        }
      } catch (error) {
        if (fields.stream) releaseStream();
        throw error;
      }
      return plan.then((resolved) => {
        try {
          forwardWithPlan(route, request, reply, body, fields, resolved);
        } catch (error) {
          if (fields.stream) releaseStream();
          throw error;
        }
      }, (error: unknown) => {
        if (fields.stream) releaseStream();
        throw error;
      });
    };
  }

  app.post('/v1/chat/completions', { config: { metricsRoute: 'chat_completions' } }, generation('chat_completions'));
  app.post('/v1/completions', { config: { metricsRoute: 'completions' } }, generation('completions'));

  // Reached only without an Upgrade header: the http server's 'upgrade' event takes real ones.
  app.get('/v1/tap', { config: { metricsRoute: 'tap' } }, async () => {
    throw new SaegateError('SAEGATE_ERR_BAD_REQUEST', ['GET /v1/tap is the tap protocol endpoint: open it as a WebSocket (docs/tap-protocol.md)']);
  });

  app.route({
    method: PASSTHROUGH_METHODS,
    url: '/v1/*',
    config: { metricsRoute: 'passthrough' },
    handler: (request: FastifyRequest, reply: FastifyReply): void => {
      refuseWhenClosing();
      request.saegateForwarded = true;
      reply.hijack();
      forwarder.forward({
        route: 'passthrough',
        method: request.method,
        path: request.url,
        rawHeaders: request.raw.rawHeaders,
        body: Buffer.isBuffer(request.body) ? request.body : null,
        requestId: request.id,
        planId: null,
        applied: 'none',
        stream: false,
        res: reply.raw,
        arrivedAt: arrivedAt(reply),
      });
    },
  });
}
