/**
 * The proxy's error boundary: undici's errors become SaegateErrors in `toUpstreamError`, fastify's
 * in `toClientError`, and nowhere else. Both build on the per-dependency translators beside the
 * error table (src/common/errors-undici.ts, errors-fastify.ts); what is proxy-specific here is the
 * timeout layer bookkeeping for metrics. Clients only ever see OpenAI-shaped bodies with a
 * SAEGATE_ERR_* code (docs/errors.md); docs/proxy.md has the mapping table.
 */
import { SaegateError } from '../common/errors.js';
import { fromFastifyError } from '../common/errors-fastify.js';
import { describeError } from '../common/errors-net.js';
import { isRetryableUndiciError, undiciTimeoutOf } from '../common/errors-undici.js';
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

/**
 * A dependency error as one line (shared with the activation collector's upstream client,
 * src/lab/collect/upstream.ts); the translation lives in src/common/errors-net.ts.
 */
export const describeUpstreamError = describeError;

/** True for errors that mean "this attempt never got a response": a retry may succeed. */
export const isRetryableError = isRetryableUndiciError;

/**
 * Translates whatever ended an upstream exchange into the SaegateError the client sees:
 * timeouts 504 (naming the layer), refused/reset/unreachable before the response 502
 * UPSTREAM_UNAVAILABLE, anything after the response started 502 UPSTREAM_STREAM. SaegateErrors
 * (our own timeouts, shutdown) pass through.
 */
export function toUpstreamError(error: unknown, context: UpstreamErrorContext): SaegateError {
  if (error instanceof SaegateError) return error;
  const timeout = undiciTimeoutOf(error);
  if (timeout === 'connect') return timeoutError('connect', context.connectTimeoutMs);
  if (timeout === 'headers') return timeoutError('headers', context.headersTimeoutMs);
  if (context.responseStarted) {
    const failure = new SaegateError('SAEGATE_ERR_UPSTREAM_STREAM', [describeError(error)], { cause: error });
    streamFailures.add(failure);
    return failure;
  }
  return new SaegateError('SAEGATE_ERR_UPSTREAM_UNAVAILABLE', [context.upstream, describeError(error)], { cause: error });
}

/** Translates an error thrown while handling a request (fastify's or ours) into what the client sees. */
export function toClientError(error: unknown, limits: { maxBodyBytes: number }): SaegateError {
  return fromFastifyError(error, { maxBodyBytes: limits.maxBodyBytes, unexpected: 'SAEGATE_ERR_INTERNAL' });
}
