import { describe, expect, it } from 'vitest';
import { seededUniform } from '../../../src/common/random.js';
import { ReconnectBackoff } from '../../../src/tap/backoff.js';

describe('ReconnectBackoff', () => {
  it('doubles the delay base per attempt up to the cap: d/2 with random 0, just under d with random near 1', () => {
    const low = new ReconnectBackoff({ initialDelayMs: 100, maxDelayMs: 1000, random: () => 0 });
    expect(Array.from({ length: 6 }, () => low.next())).toEqual([50, 100, 200, 400, 500, 500]);
    const high = new ReconnectBackoff({ initialDelayMs: 100, maxDelayMs: 1000, random: () => 0.999 });
    expect(Array.from({ length: 6 }, () => high.next())).toEqual([99.95, 199.9, 399.8, 799.6, 999.5, 999.5]);
  });

  it('keeps every jittered delay within [d/2, d) of its attempt, over a seeded draw', () => {
    const backoff = new ReconnectBackoff({ initialDelayMs: 10, maxDelayMs: 5000, random: seededUniform(42) });
    const fractions: number[] = [];
    for (let attempt = 0; attempt < 200; attempt++) {
      const base = Math.min(5000, 10 * 2 ** attempt);
      const delay = backoff.next();
      expect(delay).toBeGreaterThanOrEqual(base / 2);
      expect(delay).toBeLessThan(base);
      fractions.push((delay - base / 2) / (base / 2));
    }
    // The jitter is spread, not stuck at one end: both halves of the range are used.
    expect(fractions.some((f) => f < 0.25)).toBe(true);
    expect(fractions.some((f) => f > 0.75)).toBe(true);
  });

  it('gives the same delays for the same seed', () => {
    const a = new ReconnectBackoff({ initialDelayMs: 100, maxDelayMs: 5000, random: seededUniform(7) });
    const b = new ReconnectBackoff({ initialDelayMs: 100, maxDelayMs: 5000, random: seededUniform(7) });
    const delaysA = Array.from({ length: 10 }, () => a.next());
    expect(Array.from({ length: 10 }, () => b.next())).toEqual(delaysA);
    expect(new Set(delaysA).size).toBe(10);
  });

  it('starts over from the initial delay after reset (a welcome)', () => {
    const backoff = new ReconnectBackoff({ initialDelayMs: 100, maxDelayMs: 5000, random: () => 0 });
    backoff.next();
    backoff.next();
    backoff.next();
    expect(backoff.attempt).toBe(3);
    backoff.reset();
    expect(backoff.attempt).toBe(0);
    expect(backoff.next()).toBe(50);
  });

  it('raises a cap below the initial delay to the initial delay, and stays finite over a long outage', () => {
    const backoff = new ReconnectBackoff({ initialDelayMs: 300, maxDelayMs: 100, random: () => 0 });
    expect(backoff.next()).toBe(150);
    const long = new ReconnectBackoff({ initialDelayMs: 1, maxDelayMs: Number.MAX_VALUE, random: () => 0 });
    let last = 0;
    for (let i = 0; i < 2000; i++) last = long.next();
    expect(last).toBe(2 ** 30 / 2);
  });
});
