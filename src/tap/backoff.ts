/**
 * Reconnect delays for the tap client (docs/tap-protocol.md §7): exponential growth capped at
 * `maxDelayMs`, with "equal jitter" — half of each delay fixed, half random — so a fleet of model
 * servers that lost saegate together does not reconnect in lockstep, yet no retry comes sooner
 * than half the backoff. Pure arithmetic: the timer that waits out the delay is the connection's.
 */

/** Backoff between connection attempts: min(maxDelayMs, initialDelayMs × 2^attempt), jittered. */
export interface TapReconnectOptions {
  /** Delay before the first retry, in ms. Default 100. */
  initialDelayMs?: number;
  /** Upper bound on the delay between attempts, in ms. Default 5000. */
  maxDelayMs?: number;
}

export interface ReconnectBackoffOptions {
  /** Delay base of the first retry, in ms. Must be positive. */
  initialDelayMs: number;
  /** Cap on the delay base, in ms (raised to `initialDelayMs` if smaller). */
  maxDelayMs: number;
  /** Uniform numbers in [0, 1) for the jitter. Default `Math.random`. */
  random?: () => number;
}

export class ReconnectBackoff {
  private readonly initialDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly random: () => number;
  private attemptCount = 0;

  constructor(options: ReconnectBackoffOptions) {
    this.initialDelayMs = options.initialDelayMs;
    this.maxDelayMs = Math.max(options.initialDelayMs, options.maxDelayMs);
    this.random = options.random ?? Math.random;
  }

  /** Retries scheduled since the last `reset()`. */
  get attempt(): number {
    return this.attemptCount;
  }

  /** The delay before the next attempt, in ms: in [d/2, d) with d = min(max, initial × 2^attempt). */
  next(): number {
    // The exponent is capped so 2^attempt stays finite over a very long outage.
    const base = Math.min(this.maxDelayMs, this.initialDelayMs * 2 ** Math.min(this.attemptCount, 30));
    this.attemptCount++;
    return base / 2 + this.random() * (base / 2);
  }

  /** A handshake completed: the next outage starts again from `initialDelayMs`. */
  reset(): void {
    this.attemptCount = 0;
  }
}
