import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { KeyedWaiters } from '../../../src/common/keyed-waiters.js';

const timeoutError = (): Error => new Error('timed out');

describe('KeyedWaiters', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('resolves every waiter on a key with the value, leaves other keys waiting, and clears the timers', async () => {
    const waiters = new KeyedWaiters<string, number>();
    const a1 = waiters.wait('a', { timeoutMs: 1000, timeoutError });
    const a2 = waiters.wait('a', { timeoutMs: 1000, timeoutError });
    const b = waiters.wait('b', { timeoutMs: 1000, timeoutError });
    expect(vi.getTimerCount()).toBe(3);
    expect(waiters.resolve('a', 7)).toBe(2);
    expect(await a1).toBe(7);
    expect(await a2).toBe(7);
    expect(waiters.has('a')).toBe(false);
    expect(waiters.has('b')).toBe(true);
    expect(vi.getTimerCount()).toBe(1);
    expect(waiters.resolve('a', 8)).toBe(0);
    waiters.resolve('b', 9);
    expect(await b).toBe(9);
    expect(waiters.size).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('rejects with the timeout error exactly at the deadline and forgets the waiter', async () => {
    const waiters = new KeyedWaiters<string, number>();
    const settled = vi.fn();
    const waiting = waiters.wait('k', { timeoutMs: 500, timeoutError }).then(settled, (e: unknown) => {
      settled(e);
      return e;
    });
    await vi.advanceTimersByTimeAsync(499);
    expect(settled).not.toHaveBeenCalled();
    await vi.advanceTimersByTimeAsync(1);
    expect(await waiting).toEqual(new Error('timed out'));
    expect(waiters.has('k')).toBe(false);
    // A late value finds nobody.
    expect(waiters.resolve('k', 1)).toBe(0);
  });

  it('rejects the waiters of one key with reject(key, error) and clears their timers', async () => {
    const waiters = new KeyedWaiters<string, number>();
    const k = waiters.wait('k', { timeoutMs: 1000, timeoutError });
    const other = waiters.wait('other', { timeoutMs: 1000, timeoutError });
    expect(waiters.reject('k', new Error('refused'))).toBe(1);
    await expect(k).rejects.toThrow('refused');
    expect(vi.getTimerCount()).toBe(1);
    waiters.resolve('other', 1);
    expect(await other).toBe(1);
  });

  it('rejects everyone on close, later waits at once, and leaves no timer or listener behind', async () => {
    const waiters = new KeyedWaiters<string, number>();
    const controller = new AbortController();
    const a = waiters.wait('a', { timeoutMs: 1000, timeoutError, signal: controller.signal });
    const b = waiters.wait('b', { timeoutMs: 1000, timeoutError });
    waiters.close(new Error('closed'));
    await expect(a).rejects.toThrow('closed');
    await expect(b).rejects.toThrow('closed');
    expect(vi.getTimerCount()).toBe(0);
    expect(waiters.size).toBe(0);
    expect(waiters.closed).toBe(true);
    await expect(waiters.wait('c', { timeoutMs: 1000, timeoutError })).rejects.toThrow('closed');
    expect(vi.getTimerCount()).toBe(0);
    // The abort listener was removed: aborting now settles nothing twice and throws nothing.
    controller.abort(new Error('late abort'));
    waiters.close(new Error('second close'));
    await expect(waiters.wait('d', { timeoutMs: 1, timeoutError })).rejects.toThrow('closed');
  });

  it('rejects with the signal reason on abort, before or during the wait', async () => {
    const waiters = new KeyedWaiters<string, number>();
    const controller = new AbortController();
    const waiting = waiters.wait('k', { timeoutMs: 1000, timeoutError, signal: controller.signal });
    controller.abort(new Error('client gone'));
    await expect(waiting).rejects.toThrow('client gone');
    expect(vi.getTimerCount()).toBe(0);
    expect(waiters.has('k')).toBe(false);
    await expect(waiters.wait('k', { timeoutMs: 1000, timeoutError, signal: controller.signal })).rejects.toThrow('client gone');
    expect(vi.getTimerCount()).toBe(0);
  });

  it('uses abortError when the abort reason is not an Error', async () => {
    const waiters = new KeyedWaiters<string, number>();
    const controller = new AbortController();
    const waiting = waiters.wait('k', { timeoutMs: 1000, timeoutError, signal: controller.signal, abortError: () => new Error('wait aborted') });
    controller.abort('a string');
    await expect(waiting).rejects.toThrow('wait aborted');
  });

  it('does not fire the timeout of a waiter that was resolved', async () => {
    const waiters = new KeyedWaiters<string, number>();
    const timeout = vi.fn(timeoutError);
    const waiting = waiters.wait('k', { timeoutMs: 100, timeoutError: timeout });
    waiters.resolve('k', 3);
    await vi.advanceTimersByTimeAsync(1000);
    expect(await waiting).toBe(3);
    expect(timeout).not.toHaveBeenCalled();
  });
});
