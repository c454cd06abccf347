import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { isSaegateError } from '../../../src/common/errors.js';
import { PlanBook, type ResolvedPlan } from '../../../src/tap/plan-book.js';

function plan(planId: string, requestId: string, scale = 1): ResolvedPlan {
  return { planId, requestId, entries: [{ hook: 'layer.0', vectorId: 'v'.repeat(64), scale, fromPosition: 0, untilPosition: null, vector: new Float32Array([scale, -scale]) }] };
}

/** The rejection of `promise`, or a marker when it resolved. */
async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => 'resolved',
    (e: unknown) => e,
  );
}

describe('PlanBook', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('hands a plan to the request already waiting for it and clears the wait timer', async () => {
    const book = new PlanBook();
    const waiting = book.wait('p1', { requestId: 'r1', timeoutMs: 2000 });
    expect(book.waiting).toBe(1);
    expect(vi.getTimerCount()).toBe(1);
    book.offer(plan('p1', 'r1'));
    expect(await waiting).toEqual(plan('p1', 'r1'));
    expect(book.waiting).toBe(0);
    expect(book.size).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('keeps a plan that arrives first until its request takes it, once', async () => {
    const book = new PlanBook();
    book.offer(plan('p1', 'r1', 2));
    expect(book.size).toBe(1);
    expect(await book.wait('p1', { timeoutMs: 2000 })).toEqual(plan('p1', 'r1', 2));
    expect(book.size).toBe(0);
    // Taken: a second wait for the same id has nothing to take and times out.
    const again = rejection(book.wait('p1', { requestId: 'r1', timeoutMs: 100 }));
    await vi.advanceTimersByTimeAsync(100);
    expect(isSaegateError(await again, 'SAEGATE_ERR_PLAN_TIMEOUT')).toBe(true);
  });

  it('times out with SAEGATE_ERR_PLAN_TIMEOUT naming the plan, the request and the wait, not before the deadline', async () => {
    const book = new PlanBook();
    const settled = vi.fn();
    const waiting = rejection(book.wait('p9', { requestId: 'r9', timeoutMs: 750 }).finally(settled));
    await vi.advanceTimersByTimeAsync(749);
    expect(settled).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(1);
    const e = await waiting;
    expect(isSaegateError(e, 'SAEGATE_ERR_PLAN_TIMEOUT')).toBe(true);
    expect((e as Error).message).toBe("steering plan 'p9' for request 'r9' did not arrive on the tap within 750 ms");
    expect(book.waiting).toBe(0);
    // A plan arriving after the deadline is kept for nobody in particular, not delivered to the dead wait.
    book.offer(plan('p9', 'r9'));
    expect(book.size).toBe(1);
  });

  it('does not hand out a plan older than the TTL, and keeps one exactly at the TTL', async () => {
    const book = new PlanBook({ ttlMs: 1000 });
    book.offer(plan('fresh', 'r1'));
    book.offer(plan('stale', 'r2'));
    await vi.advanceTimersByTimeAsync(1000);
    expect(await book.wait('fresh', { timeoutMs: 10 })).toEqual(plan('fresh', 'r1'));
    await vi.advanceTimersByTimeAsync(1);
    const stale = rejection(book.wait('stale', { requestId: 'r2', timeoutMs: 10 }));
    await vi.advanceTimersByTimeAsync(10);
    expect(isSaegateError(await stale, 'SAEGATE_ERR_PLAN_TIMEOUT')).toBe(true);
    expect(book.size).toBe(0);
  });

  it('drops expired plans when a new one is offered', async () => {
    const book = new PlanBook({ ttlMs: 1000 });
    book.offer(plan('old-1', 'r1'));
    book.offer(plan('old-2', 'r2'));
    await vi.advanceTimersByTimeAsync(600);
    book.offer(plan('mid', 'r3'));
    await vi.advanceTimersByTimeAsync(401);
    book.offer(plan('new', 'r4'));
    expect(book.size).toBe(2);
    expect(await book.wait('mid', { timeoutMs: 10 })).toEqual(plan('mid', 'r3'));
  });

  it('keeps at most maxPlans, dropping the oldest first', async () => {
    const book = new PlanBook({ maxPlans: 2 });
    book.offer(plan('a', 'ra'));
    book.offer(plan('b', 'rb'));
    book.offer(plan('c', 'rc'));
    expect(book.size).toBe(2);
    expect((await book.wait('b', { timeoutMs: 10 })).requestId).toBe('rb');
    expect((await book.wait('c', { timeoutMs: 10 })).requestId).toBe('rc');
    const a = rejection(book.wait('a', { timeoutMs: 10 }));
    await vi.advanceTimersByTimeAsync(10);
    expect(isSaegateError(await a, 'SAEGATE_ERR_PLAN_TIMEOUT')).toBe(true);
  });

  it('fails the request with SAEGATE_ERR_TAP_PLAN_REJECTED and the reason, waiting or not', async () => {
    const book = new PlanBook();
    const waiting = rejection(book.wait('p1', { requestId: 'r1', timeoutMs: 2000 }));
    book.offerRejection('p1', 'r1', "unknown vector id 'x'");
    const e = await waiting;
    expect(isSaegateError(e, 'SAEGATE_ERR_TAP_PLAN_REJECTED')).toBe(true);
    expect((e as Error).message).toContain("unknown vector id 'x'");
    expect(vi.getTimerCount()).toBe(0);

    book.offerRejection('p2', 'r2', 'this model server cannot steer');
    const later = await rejection(book.wait('p2', { timeoutMs: 2000 }));
    expect(isSaegateError(later, 'SAEGATE_ERR_TAP_PLAN_REJECTED')).toBe(true);
    expect((later as Error).message).toContain("for request 'r2'");
    expect(vi.getTimerCount()).toBe(0);
  });

  it('folds a plan update into the stored plan of the same request only', async () => {
    const book = new PlanBook();
    book.offer(plan('p1', 'r1', 1));
    book.offer(plan('p2', 'r2', 1));
    book.update(plan('p1.1', 'r1', 5));
    expect((await book.wait('p1', { timeoutMs: 10 })).entries[0].scale).toBe(5);
    expect((await book.wait('p2', { timeoutMs: 10 })).entries[0].scale).toBe(1);
  });

  it('forgets the plans of a request that ended', async () => {
    const book = new PlanBook();
    book.offer(plan('p1', 'r1'));
    book.offer(plan('p2', 'r2'));
    book.forgetRequest('r1');
    expect(book.size).toBe(1);
    expect((await book.wait('p2', { timeoutMs: 10 })).requestId).toBe('r2');
  });

  it('rejects waiting and later requests with SAEGATE_ERR_TAP_CLOSED on close, leaving no timer', async () => {
    const book = new PlanBook();
    book.offer(plan('kept', 'r0'));
    const waiting = rejection(book.wait('p1', { requestId: 'r1', timeoutMs: 2000 }));
    book.close();
    expect(isSaegateError(await waiting, 'SAEGATE_ERR_TAP_CLOSED')).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
    expect(isSaegateError(await rejection(book.wait('kept', { timeoutMs: 2000 })), 'SAEGATE_ERR_TAP_CLOSED')).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('rejects with the signal reason when the request is aborted, and SAEGATE_ERR_TAP_CLOSED for a non-Error reason', async () => {
    const book = new PlanBook();
    const controller = new AbortController();
    const waiting = rejection(book.wait('p1', { timeoutMs: 2000, signal: controller.signal }));
    controller.abort(new Error('client went away'));
    expect(await waiting).toEqual(new Error('client went away'));
    expect(vi.getTimerCount()).toBe(0);

    const other = new AbortController();
    other.abort('gone');
    expect(isSaegateError(await rejection(book.wait('p2', { signal: other.signal })), 'SAEGATE_ERR_TAP_CLOSED')).toBe(true);
  });
});
