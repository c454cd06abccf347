/**
 * undici's errors, read in one place: which are worth a retry, and which are undici's own
 * timeouts. The proxy (src/proxy/errors.ts) and the activation collector turn these into their
 * SaegateErrors (SAEGATE_ERR_UPSTREAM_*, SAEGATE_ERR_COLLECT_UPSTREAM).
 */
import { errorCodeOf } from './errors-net.js';

/**
 * Socket-level errors meaning "this attempt never got a response": a retry may succeed. ENOENT is
 * a Unix socket path nobody listens on (yet), the socket's ECONNREFUSED.
 */
const RETRYABLE_CODES = new Set(['ECONNREFUSED', 'ENOENT', 'ECONNRESET', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT']);

/** True for errors that mean "this attempt never got a response" (refused, reset, unresolved, connect timeout). */
export function isRetryableUndiciError(error: unknown): boolean {
  const code = errorCodeOf(error);
  return code !== null && RETRYABLE_CODES.has(code);
}

/** undici's own timeouts: `connect` (UND_ERR_CONNECT_TIMEOUT), `headers` (UND_ERR_HEADERS_TIMEOUT). */
export type UndiciTimeout = 'connect' | 'headers';

/** Which undici timeout `error` is, or null when it is not one. */
export function undiciTimeoutOf(error: unknown): UndiciTimeout | null {
  const code = errorCodeOf(error);
  if (code === 'UND_ERR_CONNECT_TIMEOUT') return 'connect';
  if (code === 'UND_ERR_HEADERS_TIMEOUT') return 'headers';
  return null;
}
