/**
 * The request headers this server reads: `x-request-id` (echoed back, used as the engine request
 * id, so tap frames, logs and saegate's records of a request share one id),
 * `x-saegate-plan-id` (the steering plan saegate announced for the request) and
 * `x-saegate-tap-max-delay-ms` (how long the tap may hold the request's rows, tokens and end).
 */
import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { SaegateError } from '../../common/errors.js';
import { MAX_TAP_HOLD_MS } from '../../tap/messages.js';

/** 1–128 characters of [A-Za-z0-9._:-]: safe in logs, headers and tap frames without escaping. */
const ID_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;

/** Request id header, read and echoed on every response. */
export const REQUEST_ID_HEADER = 'x-request-id';
/** Steering plan id header, set by saegate. */
export const PLAN_ID_HEADER = 'x-saegate-plan-id';
/** Per-request tap hold header, set by saegate (docs/tap-protocol.md §5.1). */
export const TAP_MAX_DELAY_HEADER = 'x-saegate-tap-max-delay-ms';

/** Whether `value` is a usable request or plan id. */
export function isValidId(value: unknown): value is string {
  return typeof value === 'string' && ID_PATTERN.test(value);
}

/** The client's `x-request-id` when valid, else a fresh UUID (an invalid one is replaced, not refused). */
export function requestIdFrom(headers: IncomingHttpHeaders): string {
  const given = headers[REQUEST_ID_HEADER];
  return isValidId(given) ? given : randomUUID();
}

/**
 * The `x-saegate-plan-id` header, or null when absent. An invalid one is refused with a 400:
 * running the request without the plan saegate meant to apply would be a silent policy bypass.
 */
export function planIdFrom(headers: IncomingHttpHeaders): string | null {
  const given = headers[PLAN_ID_HEADER];
  if (given === undefined) return null;
  if (!isValidId(given)) {
    throw new SaegateError('SAEGATE_ERR_BAD_REQUEST', [`header ${PLAN_ID_HEADER} must be 1–128 characters of [A-Za-z0-9._:-]`], { param: PLAN_ID_HEADER });
  }
  return given;
}

/**
 * The `x-saegate-tap-max-delay-ms` header: how long the tap may hold this request's rows, tokens
 * and end before sending them, in place of the subscription's `maxDelayMs`; null when absent. A
 * value that is not an integer from 0 to 60000 is refused with a 400 naming the header.
 */
export function tapMaxDelayFrom(headers: IncomingHttpHeaders): number | null {
  const given = headers[TAP_MAX_DELAY_HEADER];
  if (given === undefined) return null;
  const value = typeof given === 'string' && /^\d{1,5}$/.test(given) ? Number(given) : Number.NaN;
  if (!(value <= MAX_TAP_HOLD_MS)) {
    throw new SaegateError('SAEGATE_ERR_BAD_REQUEST', [`header ${TAP_MAX_DELAY_HEADER} must be an integer number of milliseconds from 0 to ${MAX_TAP_HOLD_MS}, got ${JSON.stringify(given)}`], { param: TAP_MAX_DELAY_HEADER });
  }
  return value;
}
