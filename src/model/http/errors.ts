/**
 * The one place where errors of any origin (fastify, the engine, bugs) become the SaegateError a
 * client sees, so every error body is OpenAI-shaped and every status comes from the codes table.
 */
import { SaegateError } from '../../common/errors.js';

interface FastifyLikeError {
  code?: unknown;
  statusCode?: unknown;
  message?: unknown;
}

/** Translates anything thrown while serving a request into a SaegateError. */
export function toSaegateError(error: unknown, options: { bodyLimit: number }): SaegateError {
  if (error instanceof SaegateError) return error;
  const e = (typeof error === 'object' && error !== null ? error : {}) as FastifyLikeError;
  const message = typeof e.message === 'string' ? e.message : String(error);
  if (e.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return new SaegateError('SAEGATE_ERR_BODY_TOO_LARGE', [options.bodyLimit], { cause: error });
  if (e.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || e.code === 'FST_ERR_CTP_EMPTY_JSON_BODY') {
    return new SaegateError('SAEGATE_ERR_INVALID_JSON', [message], { cause: error });
  }
  // Other fastify/HTTP client errors (bad content-length, malformed URL, …) are the client's fault.
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    return new SaegateError('SAEGATE_ERR_BAD_REQUEST', [message], { cause: error });
  }
  return new SaegateError('SAEGATE_ERR_RUNTIME', [message], { cause: error });
}
