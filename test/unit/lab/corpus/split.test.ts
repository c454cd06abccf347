import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { splitCorpus, splitScore } from '../../../../src/lab/corpus/split.js';

const corpus = (n: number, offset = 0) => Array.from({ length: n }, (_, i) => ({ id: `doc-${i + offset}`, text: `text ${i + offset}` }));
const ids = (docs: readonly { id: string }[]) => docs.map((d) => d.id);

describe('splitCorpus', () => {
  it('holds out about the asked fraction, keeps input order in both sets, and loses no document', () => {
    const docs = corpus(4000);
    const { train, heldOut } = splitCorpus(docs, { heldOutFraction: 0.1, seed: 0 });
    expect(train.length + heldOut.length).toBe(4000);
    // Binomial(4000, 0.1): mean 400, sd 19; ±100 is over five sd.
    expect(heldOut.length).toBeGreaterThan(300);
    expect(heldOut.length).toBeLessThan(500);
    const position = new Map(docs.map((d, i) => [d.id, i]));
    for (const set of [train, heldOut]) {
      const positions = set.map((d) => position.get(d.id)!);
      expect(positions).toEqual([...positions].sort((a, b) => a - b));
    }
    expect(new Set([...ids(train), ...ids(heldOut)]).size).toBe(4000);
  });

  it('gives the same split for the same seed and a different one for another seed', () => {
    const docs = corpus(500);
    const a = splitCorpus(docs, { heldOutFraction: 0.3, seed: 7 });
    const b = splitCorpus([...docs], { heldOutFraction: 0.3, seed: 7 });
    const c = splitCorpus(docs, { heldOutFraction: 0.3, seed: 8 });
    expect(ids(b.heldOut)).toEqual(ids(a.heldOut));
    expect(ids(c.heldOut)).not.toEqual(ids(a.heldOut));
  });

  it('never moves an existing document when documents are added, removed or reordered', () => {
    const before = splitCorpus(corpus(300), { heldOutFraction: 0.25, seed: 3 });
    const grown = [...corpus(200, 1000), ...corpus(300)].reverse().filter((_, i) => i % 7 !== 0);
    const after = splitCorpus(grown, { heldOutFraction: 0.25, seed: 3 });
    const heldAfter = new Set(ids(after.heldOut));
    const trainAfter = new Set(ids(after.train));
    for (const id of ids(before.heldOut)) expect(trainAfter.has(id)).toBe(false);
    for (const id of ids(before.train)) expect(heldAfter.has(id)).toBe(false);
  });

  it('only moves documents from train to held-out as the fraction grows; 0 and 1 are the extremes', () => {
    const docs = corpus(300);
    fc.assert(
      fc.property(fc.double({ min: 0, max: 1, noNaN: true }), fc.double({ min: 0, max: 1, noNaN: true }), fc.integer(), (f1, f2, seed) => {
        const [low, high] = f1 <= f2 ? [f1, f2] : [f2, f1];
        const small = new Set(ids(splitCorpus(docs, { heldOutFraction: low, seed }).heldOut));
        const large = new Set(ids(splitCorpus(docs, { heldOutFraction: high, seed }).heldOut));
        for (const id of small) expect(large.has(id)).toBe(true);
      }),
      { numRuns: 50 },
    );
    expect(splitCorpus(docs, { heldOutFraction: 0, seed: 1 }).heldOut).toEqual([]);
    expect(splitCorpus(docs, { heldOutFraction: 1, seed: 1 }).train).toEqual([]);
  });

  it('scores by the documented rule: SHA-256 of "seed:id", top 53 bits of the first 8 bytes', () => {
    const digest = createHash('sha256').update('42:doc-1').digest();
    const expected = Number(BigInt(`0x${digest.subarray(0, 8).toString('hex')}`) >> 11n) / 2 ** 53;
    expect(splitScore('doc-1', 42)).toBe(expected);
    expect(splitScore('doc-1', 42)).toBeGreaterThanOrEqual(0);
    expect(splitScore('doc-1', 42)).toBeLessThan(1);
  });

  it.each([
    [{ heldOutFraction: -0.1, seed: 0 }, /heldOutFraction/],
    [{ heldOutFraction: 1.5, seed: 0 }, /heldOutFraction/],
    [{ heldOutFraction: Number.NaN, seed: 0 }, /heldOutFraction/],
    [{ heldOutFraction: 0.5, seed: 0.5 }, /seed/],
  ])('refuses bad options %o with SAEGATE_ERR_CONFIG', (options, message) => {
    expect(() => splitCorpus(corpus(3), options)).toThrow(message);
    try {
      splitCorpus(corpus(3), options);
    } catch (error) {
      expect(error).toMatchObject({ code: 'SAEGATE_ERR_CONFIG' });
    }
  });
});
