/**
 * Headers across the proxy: the request id, what is forwarded upstream, what goes back to the
 * client. Hop-by-hop headers (RFC 9110 §7.6.1) stop here in both directions; everything else
 * passes unchanged, in the client's spelling.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';

/** Request id header: read from the client, sent upstream, returned to the client. */
export const REQUEST_ID_HEADER = 'x-request-id';
/** Steering plan id header: set by saegate on forwarded requests (docs/tap-protocol.md §5). */
export const PLAN_ID_HEADER = 'x-saegate-plan-id';
/** How long the tap may hold a forwarded request's rows, tokens and end: set by saegate (docs/tap-protocol.md §5.1). */
export const TAP_MAX_DELAY_HEADER = 'x-saegate-tap-max-delay-ms';
/** What saegate did to a response (ARCHITECTURE decision 8). */
export const APPLIED_HEADER = 'x-saegate-applied';

/** 1–128 characters of [A-Za-z0-9._:-]: safe in logs, headers and tap frames without escaping. */
const ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;

/** Whether `value` is usable as a request id. */
export function isValidRequestId(value: unknown): value is string {
  return typeof value === 'string' && ID_PATTERN.test(value);
}

/** The client's `x-request-id` when valid, else a fresh UUID (an invalid one is replaced, not refused). */
export function requestIdFrom(headers: IncomingHttpHeaders): string {
  const given = headers[REQUEST_ID_HEADER];
  return isValidRequestId(given) ? given : randomUUID();
}

/** RFC 9110 §7.6.1 hop-by-hop headers (plus the legacy ones proxies still see), never forwarded either way. */
const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade'];

/**
 * Lower-case names never forwarded: hop-by-hop headers, plus, upstream, `host` and
 * `content-length` (undici sets both for the upstream request), and the headers saegate owns.
 * A client cannot pick the steering plan by sending `x-saegate-plan-id` itself, nor let its
 * rows reach saegate later than its policies need by sending `x-saegate-tap-max-delay-ms`.
 */
const DROPPED_REQUEST_HEADERS = new Set([...HOP_BY_HOP, 'host', 'content-length', 'expect', REQUEST_ID_HEADER, PLAN_ID_HEADER, TAP_MAX_DELAY_HEADER]);

const DROPPED_RESPONSE_HEADERS = new Set([...HOP_BY_HOP, REQUEST_ID_HEADER, APPLIED_HEADER]);

/** Extra names listed in a `Connection` header are hop-by-hop too. */
function connectionTokens(value: string | string[] | undefined): Set<string> | null {
  if (value === undefined) return null;
  const text = Array.isArray(value) ? value.join(',') : value;
  if (text.trim() === '' || /^\s*(keep-alive|close)\s*$/i.test(text)) return null;
  return new Set(text.split(',').map((t) => t.trim().toLowerCase()));
}

/**
 * The upstream request's headers as a flat `[name, value, ...]` list built from the client's raw
 * headers (spelling and order kept), minus hop-by-hop ones, plus the request id, the plan id and
 * the tap hold when given.
 */
export function upstreamRequestHeaders(rawHeaders: readonly string[], requestId: string, planId: string | null, tapMaxDelayMs: number | null = null): string[] {
  const out: string[] = [];
  let extra: Set<string> | null = null;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i].length === 10 && rawHeaders[i].toLowerCase() === 'connection') extra = connectionTokens(rawHeaders[i + 1]);
  }
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const lower = rawHeaders[i].toLowerCase();
    if (DROPPED_REQUEST_HEADERS.has(lower) || (extra !== null && extra.has(lower))) continue;
    out.push(rawHeaders[i], rawHeaders[i + 1]);
  }
  out.push(REQUEST_ID_HEADER, requestId);
  if (planId !== null) out.push(PLAN_ID_HEADER, planId);
  if (tapMaxDelayMs !== null) out.push(TAP_MAX_DELAY_HEADER, String(tapMaxDelayMs));
  return out;
}

/** The client response's headers: the upstream's minus hop-by-hop ones, plus the request id and `x-saegate-applied`. */
export function clientResponseHeaders(upstream: IncomingHttpHeaders, requestId: string, applied: string): OutgoingHttpHeaders {
  const extra = connectionTokens(upstream.connection);
  const out: OutgoingHttpHeaders = {};
  for (const name in upstream) {
    if (DROPPED_RESPONSE_HEADERS.has(name) || (extra !== null && extra.has(name))) continue;
    out[name] = upstream[name];
  }
  out[REQUEST_ID_HEADER] = requestId;
  out[APPLIED_HEADER] = applied;
  return out;
}

/** True for `text/event-stream` (any parameters). */
export function isEventStream(contentType: string | string[] | undefined): boolean {
  return typeof contentType === 'string' && contentType.toLowerCase().startsWith('text/event-stream');
}

/**
 * Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date), in ms; null when
 * absent or unreadable. A date in the past means 0.
 */
export function retryAfterMs(value: string | string[] | undefined, nowMs = Date.now()): number | null {
  if (typeof value !== 'string') return null;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const date = Date.parse(text);
  if (Number.isNaN(date)) return null;
  return Math.max(0, date - nowMs);
}
