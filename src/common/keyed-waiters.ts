/**
 * Waiting for a value that arrives by key, with a deadline: "resolve when plan P arrives, or fail
 * after 2 s", "resolve when the ack of plan P arrives". Every such wait has the same four ways to
 * end (the value arrives, the key is rejected, the deadline passes, the caller aborts) plus one
 * for all of them at once (the owner closes), and every one of those paths must clear the timer
 * and the abort listener, or a closed client keeps the event loop alive for the length of the
 * deadline. This class is the one place that gets that bookkeeping right.
 *
 * Values are not remembered: a value offered for a key nobody waits on is returned to the caller
 * as "not delivered" (`resolve` returns 0) so the owner can keep it (see PlanBook) or drop it.
 */

/** How one `wait` ends if the value does not arrive. */
export interface KeyedWaitOptions {
  /** Deadline, in ms from the call. Must be finite and ≥ 0; callers validate their own options. */
  timeoutMs: number;
  /** The error a timed-out wait rejects with; built only when the deadline passes. */
  timeoutError: () => Error;
  /** Aborting rejects the wait with `signal.reason` (or `abortError()` when the reason is not an Error). */
  signal?: AbortSignal;
  /** The error for an abort whose reason is not an Error. Default: a plain `Error('aborted')`. */
  abortError?: () => Error;
}

interface Waiter<V> {
  resolve: (value: V) => void;
  reject: (error: Error) => void;
}

/** Waiters grouped by key; several may wait on one key and all of them get the value. */
export class KeyedWaiters<K, V> {
  private readonly byKey = new Map<K, Waiter<V>[]>();
  private closedError: Error | null = null;

  /** Keys with at least one waiter. */
  get size(): number {
    return this.byKey.size;
  }

  /** True once `close` was called; later waits reject at once. */
  get closed(): boolean {
    return this.closedError !== null;
  }

  /** Whether anyone waits on `key`. */
  has(key: K): boolean {
    return this.byKey.has(key);
  }

  /**
   * Resolves with the value `resolve(key, value)` delivers, or rejects: `reject(key, e)`, the
   * deadline (`timeoutError()`), the signal, or `close(e)`. Rejects at once when already closed or
   * when the signal is already aborted.
   */
  wait(key: K, options: KeyedWaitOptions): Promise<V> {
    if (this.closedError !== null) return Promise.reject(this.closedError);
    const signal = options.signal;
    const abortReason = (): Error => {
      const reason: unknown = signal?.reason;
      if (reason instanceof Error) return reason;
      return options.abortError?.() ?? new Error('aborted');
    };
    if (signal?.aborted) return Promise.reject(abortReason());
    return new Promise<V>((resolve, reject) => {
      // Runs on every way out, exactly once: the waiter leaves the map and nothing of it stays armed.
      const settle = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        const list = this.byKey.get(key);
        if (list === undefined) return;
        const i = list.indexOf(waiter);
        if (i >= 0) list.splice(i, 1);
        if (list.length === 0) this.byKey.delete(key);
      };
      const waiter: Waiter<V> = {
        resolve: (value) => {
          settle();
          resolve(value);
        },
        reject: (error) => {
          settle();
          reject(error);
        },
      };
      const onAbort = (): void => waiter.reject(abortReason());
      const timer = setTimeout(() => waiter.reject(options.timeoutError()), options.timeoutMs);
      signal?.addEventListener('abort', onAbort, { once: true });
      const list = this.byKey.get(key);
      if (list === undefined) this.byKey.set(key, [waiter]);
      else list.push(waiter);
    });
  }

  /** Hands `value` to every waiter on `key`. Returns how many there were (0: nobody waited). */
  resolve(key: K, value: V): number {
    const list = this.byKey.get(key);
    if (list === undefined) return 0;
    // Copy: each settle splices the live list.
    const waiters = [...list];
    for (const w of waiters) w.resolve(value);
    return waiters.length;
  }

  /** Rejects every waiter on `key` with `error`. Returns how many there were. */
  reject(key: K, error: Error): number {
    const list = this.byKey.get(key);
    if (list === undefined) return 0;
    const waiters = [...list];
    for (const w of waiters) w.reject(error);
    return waiters.length;
  }

  /** Rejects every waiter on every key with `error`, and every later `wait` too. Idempotent. */
  close(error: Error): void {
    if (this.closedError !== null) return;
    this.closedError = error;
    for (const list of [...this.byKey.values()]) for (const w of [...list]) w.reject(error);
    this.byKey.clear();
  }
}
