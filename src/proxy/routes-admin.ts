/**
 * The admin API under `/admin/`. Off (every path 404) unless an admin token is configured; with
 * one, every admin request must carry `Authorization: Bearer <token>` (401 otherwise).
 *
 * - `GET /admin/status`: configuration without secrets, tap connections, counters.
 * - `PUT /admin/tap/subscription`: `{"hooks": [...], "dtype": "f16", "includePrompt": false}`
 *   subscribes every tap connection, now and later (what the SAE pipeline will do itself).
 * - With the drift monitor on, its routes (routes-monitor.ts): `GET /admin/drift`,
 *   `PUT /admin/baselines/:sae`, `POST /admin/baselines/record`.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { SaegateError } from '../common/errors.js';
import { subscribeSchema } from '../tap/messages.js';
import { redactConfig, type ProxyConfig } from './config.js';
import type { InFlightExchanges, StreamSlots } from './limits.js';
import type { ProxyState } from './routes-openai.js';
import type { TapHost } from '../tap/host.js';
import type { MonitorService } from '../monitor/service.js';
import { registerMonitorRoutes } from './routes-monitor.js';

export interface AdminRoutesOptions {
  config: ProxyConfig;
  tap: TapHost;
  streams: StreamSlots;
  inFlight: InFlightExchanges;
  state: ProxyState;
  /** performance.now() when the app was built. */
  startedAt: number;
  /** The drift monitor, whose admin routes are added when present. */
  monitor?: MonitorService;
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

/** Constant-time check of `Authorization: Bearer <token>` (both sides hashed, so lengths do not leak). */
function bearerMatches(header: string | undefined, expected: Buffer): boolean {
  const match = header === undefined ? null : /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
  return match !== null && timingSafeEqual(digest(match[1]), expected);
}

const POISONED = 'the body contains a "__proto__" or "constructor.prototype" key';

/**
 * Refuses the keys fastify's JSON parser refuses on the model server (prototype poisoning), with
 * the same code and message, so the admin API is no more lenient than the OpenAI routes.
 */
function refusePrototypeKeys(key: string, value: unknown): unknown {
  if (key === '__proto__' || (key === 'constructor' && typeof value === 'object' && value !== null && Object.hasOwn(value, 'prototype'))) {
    throw new SaegateError('SAEGATE_ERR_INVALID_JSON', [POISONED]);
  }
  return value;
}

export function parseJsonBody(request: FastifyRequest): unknown {
  const body = request.body;
  if (!Buffer.isBuffer(body) || body.length === 0) throw new SaegateError('SAEGATE_ERR_INVALID_JSON', ['the body is empty']);
  const text = body.toString('utf8');
  try {
    // A leading byte order mark is accepted, as fastify's parser does.
    return JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text, refusePrototypeKeys);
  } catch (error) {
    if (error instanceof SaegateError) throw error;
    throw new SaegateError('SAEGATE_ERR_INVALID_JSON', [(error as Error).message]);
  }
}

export function registerAdminRoutes(app: FastifyInstance, options: AdminRoutesOptions): void {
  const token = options.config.adminToken;
  if (token === null) return;
  const expected = digest(token);
  const config = { metricsRoute: 'admin' } as const;

  app.register(async (admin) => {
    admin.addHook('onRequest', async (request, reply) => {
      if (!bearerMatches(request.headers.authorization, expected)) {
        reply.header('www-authenticate', 'Bearer');
        throw new SaegateError('SAEGATE_ERR_ADMIN_AUTH', [request.headers.authorization === undefined ? 'no bearer token' : 'wrong bearer token']);
      }
    });

    admin.get('/admin/status', { config }, async () => {
      const { tap, streams, inFlight, state } = options;
      return {
        phase: state.phase,
        uptimeSeconds: Math.round((performance.now() - options.startedAt) / 1000),
        config: redactConfig(options.config),
        requests: { inFlight: inFlight.size, activeStreams: streams.active, maxStreams: streams.limit },
        tap: {
          subscription: tap.currentSubscription,
          connections: tap.summary(),
          stats: { ...tap.stats, rowsDroppedBySink: tap.sinkDroppedRows },
        },
      };
    });

    admin.put('/admin/tap/subscription', { config }, async (request) => {
      const parsed = subscribeSchema.safeParse(parseJsonBody(request));
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        throw new SaegateError('SAEGATE_ERR_BAD_REQUEST', [`${issue.path.join('.') || 'body'}: ${issue.message}`], { param: issue.path.join('.') || undefined });
      }
      return { subscription: parsed.data, connections: options.tap.subscribeAll(parsed.data) };
    });

    if (options.monitor) registerMonitorRoutes(admin, options.monitor, parseJsonBody);
  });
}
