/**
 * The one place where errors of any origin (fastify, the engine, bugs) become the SaegateError a
 * client sees, so every error body is OpenAI-shaped and every status comes from the codes table.
 * The translation itself is the shared one in src/common/errors-fastify.ts; unexpected errors are
 * SAEGATE_ERR_RUNTIME here.
 */
import type { SaegateError } from '../../common/errors.js';
import { fromFastifyError } from '../../common/errors-fastify.js';

/** Translates anything thrown while serving a request into a SaegateError. */
export function toSaegateError(error: unknown, options: { bodyLimit: number }): SaegateError {
  return fromFastifyError(error, { maxBodyBytes: options.bodyLimit, unexpected: 'SAEGATE_ERR_RUNTIME' });
}
