/**
 * The model server's view of what saegate asked for over the tap: registered vectors (by content
 * id) and per-request plans. A request forwarded with `x-saegate-plan-id` waits here, bounded, until
 * its plan has arrived, so steering is in place before prefill whatever order the HTTP request and
 * the tap message take.
 */
import { SaegateError } from '../common/errors.js';
import type { WorkerSteeringEntry } from './runtime-protocol.js';

export interface PlanEntryRef {
  hook: string;
  vectorId: string;
  scale: number;
  fromPosition: number;
  untilPosition: number | null;
}

interface StoredPlan {
  planId: string;
  entries: WorkerSteeringEntry[];
  receivedAt: number;
}

interface Waiter {
  planId: string;
  resolve: (entries: WorkerSteeringEntry[]) => void;
}

export interface SteeringStoreOptions {
  /** How long a request waits for its plan. Default 2000 ms. */
  planWaitTimeoutMs?: number;
  /** Plans for requests that never arrive are forgotten after this long. Default 60 000 ms. */
  planTtlMs?: number;
  /** Most vectors kept; the least recently registered go first. Default 4096. */
  maxVectors?: number;
}

export class SteeringStore {
  private readonly vectors = new Map<string, Float32Array>();
  private readonly plans = new Map<string, StoredPlan>();
  private readonly waiters = new Map<string, Waiter[]>();
  private readonly planWaitTimeoutMs: number;
  private readonly planTtlMs: number;
  private readonly maxVectors: number;

  constructor(options: SteeringStoreOptions = {}) {
    this.planWaitTimeoutMs = options.planWaitTimeoutMs ?? 2000;
    this.planTtlMs = options.planTtlMs ?? 60_000;
    this.maxVectors = options.maxVectors ?? 4096;
  }

  addVector(id: string, values: Float32Array): void {
    this.vectors.delete(id);
    this.vectors.set(id, values);
    while (this.vectors.size > this.maxVectors) this.vectors.delete(this.vectors.keys().next().value as string);
  }

  get vectorCount(): number {
    return this.vectors.size;
  }

  /** Resolves vector ids; returns the reason when one is unknown. */
  resolveEntries(entries: readonly PlanEntryRef[]): { entries: WorkerSteeringEntry[] } | { reason: string } {
    const resolved: WorkerSteeringEntry[] = [];
    for (const e of entries) {
      const vector = this.vectors.get(e.vectorId);
      if (!vector) return { reason: `unknown vector id '${e.vectorId}'` };
      resolved.push({ hook: e.hook, vector, scale: e.scale, fromPosition: e.fromPosition, untilPosition: e.untilPosition });
    }
    return { entries: resolved };
  }

  /** Stores a plan whose vectors are already resolved and wakes any request waiting for it. */
  setPlan(requestId: string, planId: string, entries: WorkerSteeringEntry[]): void {
    this.expire();
    this.plans.set(requestId, { planId, entries, receivedAt: Date.now() });
    const waiting = this.waiters.get(requestId);
    if (!waiting) return;
    for (const w of waiting.filter((x) => x.planId === planId)) w.resolve(entries);
    const rest = waiting.filter((x) => x.planId !== planId);
    if (rest.length > 0) this.waiters.set(requestId, rest);
    else this.waiters.delete(requestId);
  }

  /** Waits up to the configured timeout for plan `planId` of `requestId`. */
  waitForPlan(requestId: string, planId: string, signal?: AbortSignal): Promise<WorkerSteeringEntry[]> {
    const stored = this.plans.get(requestId);
    if (stored && stored.planId === planId) return Promise.resolve(stored.entries);
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        planId,
        resolve: (entries) => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
          resolve(entries);
        },
      };
      const remove = (): void => {
        const list = (this.waiters.get(requestId) ?? []).filter((w) => w !== waiter);
        if (list.length > 0) this.waiters.set(requestId, list);
        else this.waiters.delete(requestId);
      };
      const timer = setTimeout(() => {
        remove();
        signal?.removeEventListener('abort', onAbort);
        reject(new SaegateError('SAEGATE_ERR_PLAN_TIMEOUT', [planId, requestId, this.planWaitTimeoutMs]));
      }, this.planWaitTimeoutMs);
      const onAbort = (): void => {
        clearTimeout(timer);
        remove();
        reject(new SaegateError('SAEGATE_ERR_BAD_REQUEST', ['request aborted while waiting for its steering plan']));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.set(requestId, [...(this.waiters.get(requestId) ?? []), waiter]);
    });
  }

  /** Forgets a finished request's plan. */
  release(requestId: string): void {
    this.plans.delete(requestId);
  }

  private expire(): void {
    const cutoff = Date.now() - this.planTtlMs;
    for (const [id, plan] of this.plans) {
      if (plan.receivedAt >= cutoff) break; // insertion order = arrival order
      this.plans.delete(id);
    }
  }
}
