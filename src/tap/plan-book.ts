/**
 * PlanBook: the model server's record of steering plans received on the tap, per plan id, until
 * the HTTP request that names the plan (`x-saegate-plan-id`) takes it (docs/tap-protocol.md §5).
 *
 * The plan and the HTTP request travel on different connections, so either may come first:
 * - the plan first: it is kept (at most `maxPlans`, for at most `ttlMs`) until `wait` takes it;
 * - the request first: `wait` parks on the plan id, with a deadline, until `offer` delivers.
 * A plan the client rejected is recorded too, so the request fails at once with the reason
 * instead of waiting out its deadline. Plans live across reconnects: a request admitted during
 * an outage still wants its plan.
 *
 * Expiry is lazy: stale plans are dropped when a plan is offered and never handed out by `wait`,
 * so no timer runs for stored plans.
 */
import { err, SaegateError } from '../common/errors.js';
import { KeyedWaiters } from '../common/keyed-waiters.js';
import type { PlanEntry } from './messages.js';

/** A plan entry with its vector looked up, ready to apply. */
export interface ResolvedPlanEntry extends PlanEntry {
  /** dModel values (the vector `vectorId` names). */
  vector: Float32Array;
}

/** A plan or plan update whose vectors and hooks the client has checked. */
export interface ResolvedPlan {
  requestId: string;
  planId: string;
  entries: ResolvedPlanEntry[];
  /** A plan update's new hold for the request's tapped data, ms (`plan_update.maxDelayMs`); absent: unchanged. */
  maxDelayMs?: number;
}

export interface PlanBookOptions {
  /** Plans kept until taken, at most; the oldest go first. Default 1024. */
  maxPlans?: number;
  /** How long a received plan is kept for `wait`, in ms. Default 60000. */
  ttlMs?: number;
  /** Clock for plan ages, in ms. Default `Date.now`. */
  now?: () => number;
}

export interface PlanWaitOptions {
  /** Request that names the plan, for error messages. Default '?'. */
  requestId?: string;
  /** How long to wait for a plan that has not arrived, in ms. Default 2000. */
  timeoutMs?: number;
  /** Aborting rejects the wait with the signal's reason. */
  signal?: AbortSignal;
}

interface StoredPlan {
  receivedAt: number;
  requestId: string;
  /** The plan, or null when the client rejected it. */
  plan: ResolvedPlan | null;
  /** Why the client rejected it, when it did. */
  rejection: string | null;
}

export class PlanBook {
  private readonly maxPlans: number;
  private readonly ttlMs: number;
  private readonly now: () => number;
  // Maps iterate in insertion order (re-offers delete first), so the oldest plans come first.
  private readonly stored = new Map<string, StoredPlan>();
  private readonly waiters = new KeyedWaiters<string, ResolvedPlan>();

  constructor(options: PlanBookOptions = {}) {
    this.maxPlans = options.maxPlans ?? 1024;
    this.ttlMs = options.ttlMs ?? 60_000;
    this.now = options.now ?? Date.now;
  }

  /** Plans received and not yet taken (expired ones may still count until the next offer). */
  get size(): number {
    return this.stored.size;
  }

  /** Plan ids someone is waiting for. */
  get waiting(): number {
    return this.waiters.size;
  }

  /** Delivers a validated plan to its waiters, or keeps it until one asks. */
  offer(plan: ResolvedPlan): void {
    if (this.waiters.resolve(plan.planId, plan) > 0) return;
    this.store(plan.planId, { receivedAt: this.now(), requestId: plan.requestId, plan, rejection: null });
  }

  /** Records that the client rejected plan `planId` (its waiters fail with SAEGATE_ERR_TAP_PLAN_REJECTED). */
  offerRejection(planId: string, requestId: string, reason: string): void {
    if (this.waiters.reject(planId, rejectedError(planId, requestId, reason)) > 0) return;
    this.store(planId, { receivedAt: this.now(), requestId, plan: null, rejection: reason });
  }

  /** A plan update can overtake a request that has not yet taken its plan: fold it into what is stored. */
  update(update: ResolvedPlan): void {
    for (const stored of this.stored.values()) {
      if (stored.plan?.requestId === update.requestId) stored.plan.entries = update.entries;
    }
  }

  /** The request is over: plans nobody took for it can go. */
  forgetRequest(requestId: string): void {
    for (const [planId, stored] of this.stored) {
      if (stored.requestId === requestId) this.stored.delete(planId);
    }
  }

  /**
   * Resolves with plan `planId` once it has arrived, taking it out of the book. Rejects with
   * SAEGATE_ERR_PLAN_TIMEOUT after `timeoutMs`, SAEGATE_ERR_TAP_PLAN_REJECTED when the client
   * rejected the plan, SAEGATE_ERR_TAP_CLOSED after `close()`, or the signal's reason on abort.
   */
  wait(planId: string, options: PlanWaitOptions = {}): Promise<ResolvedPlan> {
    const requestId = options.requestId ?? '?';
    const stored = this.stored.get(planId);
    if (stored !== undefined) {
      this.stored.delete(planId);
      if (this.now() - stored.receivedAt <= this.ttlMs) {
        if (stored.plan !== null) return Promise.resolve(stored.plan);
        return Promise.reject(rejectedError(planId, stored.requestId, stored.rejection ?? 'rejected'));
      }
      // Expired: as if it never came. saegate re-sends plans of requests still waiting after a reconnect.
    }
    const timeoutMs = options.timeoutMs ?? 2000;
    return this.waiters.wait(planId, {
      timeoutMs,
      timeoutError: () => new SaegateError('SAEGATE_ERR_PLAN_TIMEOUT', [planId, requestId, timeoutMs]),
      signal: options.signal,
      abortError: () => err('SAEGATE_ERR_TAP_CLOSED', `wait for plan '${planId}' aborted`),
    });
  }

  /** Rejects every pending and later `wait` with SAEGATE_ERR_TAP_CLOSED. Stored plans are dropped. */
  close(): void {
    this.waiters.close(err('SAEGATE_ERR_TAP_CLOSED', 'the tap client was closed'));
    this.stored.clear();
  }

  private store(planId: string, plan: StoredPlan): void {
    this.stored.delete(planId);
    this.stored.set(planId, plan);
    const now = plan.receivedAt;
    for (const [id, p] of this.stored) {
      if (this.stored.size <= this.maxPlans && now - p.receivedAt <= this.ttlMs) break;
      this.stored.delete(id);
    }
  }
}

function rejectedError(planId: string, requestId: string, reason: string): SaegateError {
  return err('SAEGATE_ERR_TAP_PLAN_REJECTED', planId, requestId, reason);
}
