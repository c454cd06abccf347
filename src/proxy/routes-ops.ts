/**
 * Operations endpoints: `GET /healthz` (the process is up), `GET /readyz` (worth sending traffic
 * to; see readiness.ts) and `GET /metrics` (Prometheus text from the proxy's own Registry).
 */
import type { FastifyInstance } from 'fastify';
import type { ProxyMetrics } from './metrics.js';
import type { Readiness } from './readiness.js';

export interface OpsRoutesOptions {
  readiness: Readiness;
  metrics: ProxyMetrics;
}

export function registerOpsRoutes(app: FastifyInstance, options: OpsRoutesOptions): void {
  const config = { metricsRoute: 'ops' } as const;

  app.get('/healthz', { config }, async () => ({ status: 'ok' }));

  app.get('/readyz', { config }, async (_request, reply) => {
    const report = await options.readiness.check();
    return reply.code(report.ready ? 200 : 503).send(report);
  });

  app.get('/metrics', { config }, async (_request, reply) => {
    const { contentType, body } = await options.metrics.scrape();
    return reply.type(contentType).send(body);
  });
}
