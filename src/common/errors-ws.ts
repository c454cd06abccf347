/**
 * ws's errors become SaegateErrors here. ws reports a peer's framing violations (oversized
 * payload, bad opcode, unmasked frame, invalid UTF-8, …) as `WS_ERR_*` codes and then closes the
 * socket itself with the matching close code; anything else on a tap socket (a reset, a refused
 * connection) means the connection is gone.
 */
import { SaegateError } from './errors.js';
import { describeError, errorCodeOf } from './errors-net.js';

/** A ws error as the tap sees it: SAEGATE_ERR_TAP_FRAME for a framing violation, else SAEGATE_ERR_TAP_CLOSED. */
export function fromWsError(error: unknown): SaegateError {
  if (error instanceof SaegateError) return error;
  const code = errorCodeOf(error);
  if (code !== null && code.startsWith('WS_ERR_')) return new SaegateError('SAEGATE_ERR_TAP_FRAME', [describeError(error)], { cause: error });
  return new SaegateError('SAEGATE_ERR_TAP_CLOSED', [describeError(error)], { cause: error });
}
