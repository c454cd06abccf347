/**
 * The drift monitor's admin routes (behind the admin token; docs/monitor.md, "Admin API"):
 *
 * - `GET /admin/drift`: per SAE/hook and window, scores, thresholds, which are exceeded, the top
 *   drifting features with their labels (labels live here, in JSON, never in metric labels), watched
 *   features, alert states, the recording. `?assess=1` assesses the windows first.
 * - `PUT /admin/baselines/:sae`: `{"path": FILE}` or `{"baseline": {...}}` replaces the SAE's
 *   baseline (`:sae` is its id, or `id@hook`); a refused one is a 400 naming why, and the last good
 *   baseline stays.
 * - `POST /admin/baselines/record`: `{"action": "start", "file": FILE, "durationSeconds": N}` or
 *   `{"action": "stop"}`; answers the recording's status.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { SaegateError } from '../common/errors.js';
import type { MonitorService } from '../monitor/service.js';

const replaceSchema = z.union([z.strictObject({ path: z.string().min(1) }), z.strictObject({ baseline: z.unknown() })]);
const recordSchema = z.discriminatedUnion('action', [
  z.strictObject({ action: z.literal('start'), file: z.string().min(1), durationSeconds: z.number().positive().optional() }),
  z.strictObject({ action: z.literal('stop') }),
]);

function parse<T>(schema: z.ZodType<T>, body: unknown): T {
  const parsed = schema.safeParse(body);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new SaegateError('SAEGATE_ERR_BAD_REQUEST', [`${issue.path.join('.') || 'body'}: ${issue.message}`], { param: issue.path.join('.') || undefined });
  }
  return parsed.data;
}

export function registerMonitorRoutes(admin: FastifyInstance, monitor: MonitorService, parseJsonBody: (request: FastifyRequest) => unknown): void {
  const config = { metricsRoute: 'admin' } as const;

  admin.get('/admin/drift', { config }, async (request) => {
    const query = request.query as Record<string, string | undefined>;
    if (query.assess === '1' || query.assess === 'true') monitor.assess();
    return monitor.driftReport();
  });

  admin.put<{ Params: { sae: string } }>('/admin/baselines/:sae', { config }, async (request) => {
    const input = parse(replaceSchema, parseJsonBody(request));
    try {
      const loaded = monitor.replaceBaseline(request.params.sae, 'path' in input ? { path: input.path } : { baseline: input.baseline });
      return { sae: request.params.sae, baseline: { source: loaded.source, id: loaded.id, tokens: loaded.tokens, documents: loaded.documents, createdAt: loaded.createdAt } };
    } catch (error) {
      // The operator's input was refused (the server-side default of these codes is 500: files read at start).
      if (error instanceof SaegateError && (error.code === 'SAEGATE_ERR_BASELINE_FILE' || error.code === 'SAEGATE_ERR_BASELINE_MISMATCH')) {
        throw new SaegateError('SAEGATE_ERR_BAD_REQUEST', [`${error.code}: ${error.message}; the previous baseline is kept`], { param: 'baseline' });
      }
      throw error;
    }
  });

  admin.post('/admin/baselines/record', { config }, async (request) => {
    const input = parse(recordSchema, parseJsonBody(request));
    if (input.action === 'stop') return monitor.stopRecording();
    if (monitor.recordingStatus().state === 'recording') throw new SaegateError('SAEGATE_ERR_BAD_REQUEST', ['a baseline is already being recorded; stop it first'], { param: 'action' });
    return monitor.startRecording(input.file, input.durationSeconds === undefined ? null : input.durationSeconds * 1000);
  });
}
