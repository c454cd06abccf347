import { describe, expect, it } from 'vitest';
import { pairedBootstrapMean, wilson } from '../../../../src/lab/eval/stats.js';

describe('wilson', () => {
  // Reference values from the closed form (Wilson 1927; Newcombe 1998, method 3), z = 1.96.
  it.each([
    [0, 10, 0, 0.27753],
    [5, 10, 0.23659, 0.76341],
    [27, 100, 0.19270, 0.36432],
    [10, 10, 0.72247, 1],
  ])('gives the score interval of %i of %i', (hits, n, low, high) => {
    const rate = wilson(hits, n);
    expect(rate.value).toBeCloseTo(hits / n, 12);
    expect(rate.low).toBeCloseTo(low, 4);
    expect(rate.high).toBeCloseTo(high, 4);
  });

  it('is empty at n = 0 rather than NaN', () => {
    expect(wilson(0, 0)).toEqual({ hits: 0, n: 0, value: 0, low: 0, high: 0 });
  });
});

describe('pairedBootstrapMean', () => {
  const differences = Array.from({ length: 30 }, (_, i) => 0.05 + 0.01 * Math.sin(i));

  it('brackets the mean, and gives the same bounds for the same seed', () => {
    const a = pairedBootstrapMean(differences, 7);
    expect(a.value).toBeCloseTo(differences.reduce((s, d) => s + d, 0) / differences.length, 12);
    expect(a.low).toBeLessThan(a.value);
    expect(a.high).toBeGreaterThan(a.value);
    expect(pairedBootstrapMean(differences, 7)).toEqual(a);
    expect(pairedBootstrapMean(differences, 8)).not.toEqual(a);
  });

  it('has a zero-width interval when every difference is the same', () => {
    expect(pairedBootstrapMean([0.1, 0.1, 0.1], 0)).toMatchObject({ value: expect.closeTo(0.1, 12), low: expect.closeTo(0.1, 12), high: expect.closeTo(0.1, 12) });
  });
});
