/**
 * Counting what is in flight: the concurrent-stream limit (429 above it) and the set of forwarded
 * exchanges that a graceful shutdown waits for, and cuts when its deadline passes.
 */

/** A fixed number of stream slots; `tryAcquire` never waits. */
export class StreamSlots {
  private used = 0;

  constructor(readonly limit: number) {}

  get active(): number {
    return this.used;
  }

  /** Takes a slot; false when all are taken. */
  tryAcquire(): boolean {
    if (this.used >= this.limit) return false;
    this.used++;
    return true;
  }

  release(): void {
    if (this.used > 0) this.used--;
  }
}

/** Something in flight that can be cut short. */
export interface Abortable {
  abort(reason: Error): void;
}

/** The exchanges being forwarded now. */
export class InFlightExchanges {
  private readonly active = new Set<Abortable>();
  private idleWaiters: (() => void)[] = [];

  get size(): number {
    return this.active.size;
  }

  add(exchange: Abortable): void {
    this.active.add(exchange);
  }

  delete(exchange: Abortable): void {
    if (!this.active.delete(exchange) || this.active.size > 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const wake of waiters) wake();
  }

  /** Resolves once nothing is in flight. */
  idle(): Promise<void> {
    if (this.active.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Aborts everything in flight with `reason`. */
  abortAll(reason: Error): void {
    for (const exchange of [...this.active]) exchange.abort(reason);
  }
}
