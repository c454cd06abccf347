/** The test helper `waitFor`: resolves when its predicate holds, fails by name at its deadline. */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { waitFor, WaitForTimeout } from '../../helpers/wait.js';

describe('waitFor', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('resolves on the poll after the predicate starts to hold, and not before', async () => {
    let ready = false;
    let resolved = false;
    const waiting = waitFor('ready', () => ready, { intervalMs: 10 }).then(() => (resolved = true));
    await vi.advanceTimersByTimeAsync(50);
    expect(resolved).toBe(false);
    ready = true;
    await vi.advanceTimersByTimeAsync(10);
    expect(resolved).toBe(true);
    await waiting;
  });

  it('awaits an async predicate', async () => {
    let polls = 0;
    const waiting = waitFor('three polls', async () => ++polls === 3, { intervalMs: 1 });
    await vi.advanceTimersByTimeAsync(5);
    await waiting;
    expect(polls).toBe(3);
  });

  it('rejects at its deadline with a WaitForTimeout naming what was awaited and what was observed', async () => {
    const counter = { rows: 2 };
    const outcome = waitFor('12 encoded rows', () => counter.rows === 12, { deadlineMs: 1000, intervalMs: 10, observed: () => counter }).catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(990);
    counter.rows = 5;
    await vi.advanceTimersByTimeAsync(20);
    const error = await outcome;
    expect(error).toBeInstanceOf(WaitForTimeout);
    expect((error as WaitForTimeout).message).toBe('timed out after 1000 ms waiting for 12 encoded rows (observed: {"rows":5})');
    expect((error as WaitForTimeout).label).toBe('12 encoded rows');
  });

  it('rejects with the predicate\'s own error when it throws', async () => {
    const outcome = waitFor('a throwing check', () => {
      throw new RangeError('broken check');
    }).catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(0);
    expect(await outcome).toEqual(new RangeError('broken check'));
  });
});
