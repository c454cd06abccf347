/** The conditional trigger of `eval steer`: where a projection condition first holds. */
import { describe, expect, it } from 'vitest';
import { firstTrigger } from '../../../../src/lab/eval/condition.js';

describe('firstTrigger', () => {
  it('returns the first position strictly above the threshold with forTokens 1', () => {
    expect(firstTrigger([0.1, 0.5, 0.9, 2], { above: 0.5, forTokens: 1 })).toBe(2);
    expect(firstTrigger([0.6, 0], { above: 0.5, forTokens: 1 })).toBe(0);
  });

  it('returns the last position of the first run of forTokens consecutive positions above it', () => {
    expect(firstTrigger([1, 0, 1, 1, 0, 1, 1, 1], { above: 0.5, forTokens: 3 })).toBe(7);
    expect(firstTrigger([1, 1, 0, 1, 1], { above: 0.5, forTokens: 2 })).toBe(1);
  });

  it('treats a missing row (NaN) as not above, ending a run', () => {
    expect(firstTrigger([1, Number.NaN, 1], { above: 0, forTokens: 2 })).toBeNull();
    expect(firstTrigger(new Float32Array([Number.NaN, 1, 1]), { above: 0, forTokens: 2 })).toBe(2);
  });

  it('returns null when the condition never holds', () => {
    expect(firstTrigger([0.1, 0.2], { above: 0.5, forTokens: 1 })).toBeNull();
    expect(firstTrigger([], { above: 0.5, forTokens: 1 })).toBeNull();
  });
});
