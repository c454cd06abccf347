/**
 * Waiting for something a test cannot subscribe to (a counter on another server, a field on a
 * client) without sleeping a guessed time: poll a predicate until it holds, and fail with a message
 * that says what was awaited once a deadline passes. The deadline is there so a test that waits
 * for something that never happens fails by name instead of hanging until vitest's own timeout.
 */

export interface WaitForOptions {
  /** How long to keep polling before failing. Default 10 000 ms. */
  deadlineMs?: number;
  /** Pause between polls. Default 5 ms. */
  intervalMs?: number;
  /** What was observed instead, added to the timeout message (e.g. the current counter value). */
  observed?: () => unknown;
}

/** The error `waitFor` rejects with when the deadline passes; `label` says what was awaited. */
export class WaitForTimeout extends Error {
  constructor(
    readonly label: string,
    readonly deadlineMs: number,
    observed: string | null,
  ) {
    super(`timed out after ${deadlineMs} ms waiting for ${label}${observed === null ? '' : ` (observed: ${observed})`}`);
    this.name = 'WaitForTimeout';
  }
}

function describeObserved(observed: (() => unknown) | undefined): string | null {
  if (!observed) return null;
  try {
    const value = observed();
    return typeof value === 'string' ? value : JSON.stringify(value);
  } catch (error) {
    return `observer threw: ${String(error)}`;
  }
}

/**
 * Resolves once `predicate` returns true (it may be async; it is never called twice at once).
 * Rejects with `WaitForTimeout` naming `label` when it still does not hold after `deadlineMs`,
 * and with the predicate's own error if it throws.
 */
export async function waitFor(label: string, predicate: () => boolean | Promise<boolean>, options: WaitForOptions = {}): Promise<void> {
  const deadlineMs = options.deadlineMs ?? 10_000;
  const intervalMs = options.intervalMs ?? 5;
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    if (await predicate()) return;
    if (Date.now() >= deadline) throw new WaitForTimeout(label, deadlineMs, describeObserved(options.observed));
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
