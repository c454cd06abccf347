/**
 * The proxy's error boundary: undici's errors become SaegateErrors in `toUpstreamError`, fastify's
 * in `toClientError`, and nowhere else. Clients only ever see OpenAI-shaped bodies with a
 * SAEGATE_ERR_* code (docs/errors.md); docs/proxy.md has the mapping table.
 */
import { SaegateError } from '../common/errors.js';
import type { UpstreamFailureKind } from './metrics.js';

/** The timeout layers, outermost last (docs/proxy.md). */
export type TimeoutLayer = 'connect' | 'headers' | 'first_token' | 'idle' | 'total';

/** What each layer's 504 says, and the option that sets it. */
const layerText: Record<TimeoutLayer, { name: string; what: string; option: string }> = {
  connect: { name: 'connect', what: 'no connection to the upstream was established', option: 'connectTimeoutMs' },
  headers: { name: 'response-headers', what: 'the upstream sent no response headers after the request', option: 'headersTimeoutMs' },
  first_token: { name: 'first-token', what: 'the upstream sent no stream data after its response headers', option: 'firstTokenTimeoutMs' },
  idle: { name: 'idle', what: 'the upstream sent nothing between two chunks of its response', option: 'idleTimeoutMs' },
  total: { name: 'total', what: 'the upstream response did not complete', option: 'totalTimeoutMs' },
};

/** Layer of each timeout error this module made, for metrics. */
const timeoutLayers = new WeakMap<SaegateError, TimeoutLayer>();
/** Errors that happened after the response started, for metrics. */
const streamFailures = new WeakSet<SaegateError>();

/** The 504 for an expired timeout layer, e.g. "upstream first-token timeout: … (firstTokenTimeoutMs = 100 ms)". */
export function timeoutError(layer: TimeoutLayer, ms: number): SaegateError {
  const text = layerText[layer];
  const error = new SaegateError('SAEGATE_ERR_UPSTREAM_TIMEOUT', [text.name, text.what, text.option, ms]);
  timeoutLayers.set(error, layer);
  return error;
}

/** The timeout layer of an error made by `timeoutError`, else null. */
export function timeoutLayerOf(error: unknown): TimeoutLayer | null {
  return error instanceof SaegateError ? (timeoutLayers.get(error) ?? null) : null;
}

/** The metrics kind of an upstream failure. */
export function failureKind(error: SaegateError): UpstreamFailureKind {
  const layer = timeoutLayers.get(error);
  if (layer !== undefined) return `${layer}_timeout`;
  return streamFailures.has(error) ? 'stream' : 'unavailable';
}

/** What `toUpstreamError` needs to name things. */
export interface UpstreamErrorContext {
  /** The upstream base URL, for messages. */
  upstream: string;
  /** Whether response headers had arrived (then the failure is mid-response). */
  responseStarted: boolean;
  connectTimeoutMs: number;
  headersTimeoutMs: number;
}

interface CodedError {
  code?: unknown;
  message?: unknown;
  cause?: unknown;
}

function codeOf(error: unknown): string | null {
  if (typeof error !== 'object' || error === null) return null;
  const e = error as CodedError;
  if (typeof e.code === 'string') return e.code;
  return e.cause !== undefined ? codeOf(e.cause) : null;
}

/**
 * A dependency error as one line: its message, plus its code (found on it or on its causes) when
 * the message does not already say it, e.g. `connect ECONNREFUSED 127.0.0.1:9 (ECONNREFUSED)`.
 * Shared with the activation collector's upstream client (src/lab/collect/upstream.ts).
 */
export function describeUpstreamError(error: unknown): string {
  if (error instanceof Error) {
    const code = codeOf(error);
    return code !== null && !error.message.includes(code) ? `${error.message} (${code})` : error.message;
  }
  return String(error);
}

/** Socket-level errors worth a retry when the response has not started. */
const RETRYABLE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT']);

/** True for errors that mean "this attempt never got a response": a retry may succeed. */
export function isRetryableError(error: unknown): boolean {
  const code = codeOf(error);
  return code !== null && RETRYABLE_CODES.has(code);
}

/**
 * Translates whatever ended an upstream exchange into the SaegateError the client sees:
 * timeouts 504 (naming the layer), refused/reset/unreachable before the response 502
 * UPSTREAM_UNAVAILABLE, anything after the response started 502 UPSTREAM_STREAM. SaegateErrors
 * (our own timeouts, shutdown) pass through.
 */
export function toUpstreamError(error: unknown, context: UpstreamErrorContext): SaegateError {
  if (error instanceof SaegateError) return error;
  const code = codeOf(error);
  if (code === 'UND_ERR_CONNECT_TIMEOUT') return timeoutError('connect', context.connectTimeoutMs);
  if (code === 'UND_ERR_HEADERS_TIMEOUT') return timeoutError('headers', context.headersTimeoutMs);
  if (context.responseStarted) {
    const failure = new SaegateError('SAEGATE_ERR_UPSTREAM_STREAM', [describeUpstreamError(error)], { cause: error });
    streamFailures.add(failure);
    return failure;
  }
  return new SaegateError('SAEGATE_ERR_UPSTREAM_UNAVAILABLE', [context.upstream, describeUpstreamError(error)], { cause: error });
}

interface FastifyLikeError {
  code?: unknown;
  statusCode?: unknown;
  message?: unknown;
}

/** Translates an error thrown while handling a request (fastify's or ours) into what the client sees. */
export function toClientError(error: unknown, limits: { maxBodyBytes: number }): SaegateError {
  if (error instanceof SaegateError) return error;
  const e = (typeof error === 'object' && error !== null ? error : {}) as FastifyLikeError;
  const message = typeof e.message === 'string' ? e.message : String(error);
  if (e.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return new SaegateError('SAEGATE_ERR_BODY_TOO_LARGE', [limits.maxBodyBytes], { cause: error });
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    return new SaegateError('SAEGATE_ERR_BAD_REQUEST', [message], { cause: error });
  }
  return new SaegateError('SAEGATE_ERR_INTERNAL', [message], { cause: error });
}
