import { describe, expect, it } from 'vitest';
import { SeededRandom, shuffledIndices } from '../../../src/common/random.js';

describe('shuffledIndices', () => {
  it('is a permutation of [0, n), the same for the same seed and different for another', () => {
    const a = shuffledIndices(1000, new SeededRandom(7));
    expect([...a].sort((x, y) => x - y)).toEqual(Array.from({ length: 1000 }, (_, i) => i));
    expect(shuffledIndices(1000, new SeededRandom(7))).toEqual(a);
    expect(shuffledIndices(1000, new SeededRandom(8))).not.toEqual(a);
    expect([...shuffledIndices(0, new SeededRandom(1))]).toEqual([]);
    expect([...shuffledIndices(1, new SeededRandom(1))]).toEqual([0]);
  });

  it('puts every index in every place about equally often', () => {
    // 3 items: 6 permutations; 6000 draws give each position/value pair ≈ 2000 times.
    const counts = Array.from({ length: 3 }, () => [0, 0, 0]);
    const random = new SeededRandom(3);
    for (let t = 0; t < 6000; t++) {
      const p = shuffledIndices(3, random);
      for (let i = 0; i < 3; i++) counts[i][p[i]]++;
    }
    for (const row of counts) for (const c of row) expect(Math.abs(c - 2000)).toBeLessThan(150);
  });
});
