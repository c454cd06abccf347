/**
 * The math of `vectors build` against brute-force references: summary rows, mean difference, the
 * first component of paired differences (against the eigenvector of DᵀD found by exhaustive
 * search over a 2-D circle), Cohen's d and AUROC, and the build loop's split, errors and report.
 */
import { describe, expect, it } from 'vitest';
import { SeededRandom } from '../../../../src/common/random.js';
import type { CollectedDocument } from '../../../../src/lab/collect.js';
import { buildVectors, type BuildVectorsOptions } from '../../../../src/lab/vectors/build.js';
import { auroc, buildDirection, holdOut, separation, summaryRow, type RowSet } from '../../../../src/lab/vectors/direction.js';
import { expectSaegateRejection } from '../../../helpers/errors.js';

function rowSet(rows: number[][]): RowSet {
  return { rows: Float64Array.from(rows.flat()), count: rows.length, dModel: rows[0].length };
}

describe('summaryRow', () => {
  const rows = Float32Array.from([9, 9, 1, 2, 3, 6]); // positions 0 (BOS), 1, 2 of width 2
  it('takes the last position, or the mean over positions after BOS', () => {
    const out = new Float64Array(2);
    summaryRow(rows, 3, 2, 'last', out);
    expect([...out]).toEqual([3, 6]);
    summaryRow(rows, 3, 2, 'mean', out);
    expect([...out]).toEqual([2, 4]);
    summaryRow(rows, 1, 2, 'mean', out);
    expect([...out]).toEqual([9, 9]);
  });
});

describe('buildDirection', () => {
  it('mean-diff is the raw difference of the centroids', () => {
    const pos = rowSet([
      [1, 2],
      [3, 4],
    ]);
    const neg = rowSet([
      [0, 0],
      [1, -2],
      [2, 2],
    ]);
    expect([...buildDirection(pos, neg, 'mean-diff', 0)]).toEqual([2 - 1, 3 - 0]);
  });

  it('pca is the first component of the paired differences, scaled to the centroid difference projected on it', () => {
    const random = new SeededRandom(4);
    const pos: number[][] = [];
    const neg: number[][] = [];
    for (let i = 0; i < 30; i++) {
      const base = [random.next() * 4, random.next() * 4];
      // Pairs differ mostly along (3, 1), with some noise.
      const t = 0.5 + random.next();
      pos.push([base[0] + 3 * t + 0.1 * (random.next() - 0.5), base[1] + t + 0.1 * (random.next() - 0.5)]);
      neg.push(base);
    }
    const P = rowSet(pos);
    const N = rowSet(neg);
    const v = buildDirection(P, N, 'pca', 1);
    // Brute force: the unit u maximising Σ (u · d_i)² over a fine circle.
    let best = { score: -1, u: [0, 0] };
    for (let k = 0; k < 200_000; k++) {
      const a = (Math.PI * k) / 200_000;
      const u = [Math.cos(a), Math.sin(a)];
      let score = 0;
      for (let i = 0; i < 30; i++) score += ((pos[i][0] - neg[i][0]) * u[0] + (pos[i][1] - neg[i][1]) * u[1]) ** 2;
      if (score > best.score) best = { score, u };
    }
    const meanDiff = buildDirection(P, N, 'mean-diff', 0);
    const sign = best.u[0] * meanDiff[0] + best.u[1] * meanDiff[1] > 0 ? 1 : -1;
    const u = best.u.map((x) => sign * x);
    const length = u[0] * meanDiff[0] + u[1] * meanDiff[1];
    expect(v[0]).toBeCloseTo(u[0] * length, 4);
    expect(v[1]).toBeCloseTo(u[1] * length, 4);
    // Another seed only moves the power iteration's start.
    const w = buildDirection(P, N, 'pca', 99);
    expect(w[0]).toBeCloseTo(v[0], 9);
    expect(w[1]).toBeCloseTo(v[1], 9);
  });
});

describe('separation', () => {
  it("gives projection means, sample standard deviations, Cohen's d and AUROC on the unit direction", () => {
    const pos = rowSet([[2, 0], [4, 0], [6, 0]]);
    const neg = rowSet([[1, 5], [3, 5], [0, 5]]);
    const s = separation(pos, neg, Float64Array.from([10, 0]));
    expect(s.positive).toEqual({ count: 3, mean: 4, std: 2 });
    expect(s.negative.mean).toBeCloseTo(4 / 3, 12);
    const nsd = Math.sqrt(((1 - 4 / 3) ** 2 + (3 - 4 / 3) ** 2 + (0 - 4 / 3) ** 2) / 2);
    expect(s.negative.std).toBeCloseTo(nsd, 12);
    expect(s.cohensD).toBeCloseTo((4 - 4 / 3) / Math.sqrt((4 + nsd ** 2) / 2), 12);
    // Pairs (p > n): 2>{1,0}, 4>{1,3,0}, 6>{1,3,0} = 8 of 9.
    expect(s.auroc).toBeCloseTo(8 / 9, 12);
  });

  it('counts ties as one half in AUROC and gives no d when nothing varies', () => {
    expect(auroc([1, 1], [1, 0])).toBe(0.75);
    expect(separation(rowSet([[1], [1]]), rowSet([[1], [1]]), Float64Array.from([1])).cohensD).toBeNull();
  });
});

describe('holdOut', () => {
  it('holds out ⌊n × f⌋ prompts (at least one), both parts ascending and disjoint, the same for the same seed', () => {
    const a = holdOut(40, 0.25, new SeededRandom(3));
    expect(a.heldOut).toHaveLength(10);
    expect([...a.heldOut, ...a.train].sort((x, y) => x - y)).toEqual([...Array(40).keys()]);
    expect([...a.train]).toEqual([...a.train].sort((x, y) => x - y));
    expect(holdOut(40, 0.25, new SeededRandom(3))).toEqual(a);
    expect(holdOut(3, 0.1, new SeededRandom(3)).heldOut).toHaveLength(1);
    expect(holdOut(1, 0.5, new SeededRandom(3)).heldOut).toHaveLength(0);
  });
});

/** A collect function serving fixed rows: prompt text "v0,v1" is its last row; ids in `tooLong` are skipped. */
function fakeCollect(tooLong: ReadonlySet<string> = new Set()): BuildVectorsOptions['collect'] {
  return async function* (_hook, documents) {
    for (const [index, doc] of documents.entries()) {
      if (tooLong.has(doc.id)) continue;
      const row = doc.text.split(',').map(Number);
      const rows = Float32Array.from([0, 0, ...row]);
      yield { id: doc.id, index, rows, dModel: 2, tokenCount: 2, promptTokens: 2, tokenIds: new Int32Array(0), tokenTexts: [] } satisfies CollectedDocument;
    }
  };
}

const docs = (rows: string[]) => rows.map((text, i) => ({ id: String(i), text }));

describe('buildVectors', () => {
  const positive = { source: 'pos.txt', documents: docs(['3,1', '4,0', '5,1', '4,2']) };
  const negative = { source: 'neg.txt', documents: docs(['0,1', '1,0', '-1,1', '0,2']) };

  it('writes the all-prompt mean difference and reports on a held-out prompt per set', async () => {
    const result = await buildVectors({ hooks: ['blocks.0.hook_resid_post'], positive, negative, heldOut: 0.25, collect: fakeCollect() });
    expect([...result.hooks[0].direction]).toEqual([4, 0]);
    expect(result.hooks[0].norm).toBe(4);
    expect(result.heldOut).toEqual({ positive: 1, negative: 1 });
    expect(result.hooks[0].evaluatedOn).toBe('held-out');
    expect(result.hooks[0].separation.auroc).toBe(1);
    expect(result.counts).toEqual({ positive: 4, negative: 4 });
  });

  it('reports on the training prompts, and says so, when nothing is held out', async () => {
    const result = await buildVectors({ hooks: ['blocks.0.hook_resid_post'], positive, negative, heldOut: 0, collect: fakeCollect() });
    expect(result.hooks[0].evaluatedOn).toBe('training');
    expect(result.hooks[0].separation.positive.count).toBe(4);
  });

  it('refuses an empty set and names prompts the server skipped as too long', async () => {
    await expectSaegateRejection(() => buildVectors({ hooks: ['h'], positive, negative: { source: 'none.txt', documents: [] }, collect: fakeCollect() }), 'SAEGATE_ERR_PROMPT_SET_EMPTY', 'none.txt');
    await expectSaegateRejection(
      () => buildVectors({ hooks: ['blocks.0.hook_resid_post'], positive, negative, collect: fakeCollect(new Set(['negative:2', 'negative:3'])) }),
      'SAEGATE_ERR_PROMPT_TOO_LONG',
      'neg.txt',
      "2 negative prompt(s) do not fit the model's context: '2', '3'",
    );
  });
});
