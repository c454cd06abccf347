/**
 * Counts generation requests in flight and refuses new ones above the limit. Refusing fast with
 * 429 (and Retry-After) beats queueing without bound: the engine already queues up to its batch
 * size, and a client or saegate can retry elsewhere or later.
 */
import { SaegateError } from '../../common/errors.js';

/** A counter of generation requests in flight with a hard ceiling. */
export class InFlightLimiter {
  private running = 0;

  /** `max`: most requests in flight; a positive integer. */
  constructor(readonly max: number) {
    if (!Number.isInteger(max) || max < 1) throw new SaegateError('SAEGATE_ERR_CONFIG', ['maxConcurrentRequests', `a positive integer, got ${max}`]);
  }

  /** Requests in flight now. */
  get inFlight(): number {
    return this.running;
  }

  /** Takes a slot or throws SAEGATE_ERR_TOO_MANY_REQUESTS (429). Pair with release() in a finally. */
  acquire(): void {
    if (this.running >= this.max) {
      throw new SaegateError('SAEGATE_ERR_TOO_MANY_REQUESTS', [`${this.max} requests are already running; retry shortly`]);
    }
    this.running++;
  }

  /** Gives back a slot taken by acquire(). */
  release(): void {
    this.running--;
  }
}
