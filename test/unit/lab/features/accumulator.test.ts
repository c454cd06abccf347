import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FeatureAccumulator, type FeatureDocument } from '../../../../src/lab/features/accumulator.js';
import { expectSaegateError } from '../../../helpers/errors.js';
import { reportMeta, sparseDocument } from './fixtures.js';

describe('FeatureAccumulator statistics', () => {
  // 4 features over 2 documents, 5 tokens in all:
  //   feature 0 fires on every token (dense), 1 on two tokens, 2 on one, 3 never (dead).
  const docs = [
    sparseDocument('a', [{ 0: 1, 1: 2 }, { 0: 3 }, { 0: 2, 2: 0.5 }]),
    sparseDocument('b', [{ 0: 4, 1: 6 }, { 0: 5 }]),
  ];
  const accumulator = new FeatureAccumulator({ dSae: 4, denseThreshold: 0.5 });
  for (const doc of docs) accumulator.addDocument(doc);
  const report = accumulator.finish(reportMeta(4));

  it('counts firing rows, frequency, mean over firing rows and max per feature', () => {
    const [f0, f1, f2, f3] = report.features;
    expect([f0.firing, f1.firing, f2.firing, f3.firing]).toEqual([5, 2, 1, 0]);
    expect([f0.frequency, f1.frequency, f2.frequency, f3.frequency]).toEqual([1, 0.4, 0.2, 0]);
    expect([f0.meanActivation, f1.meanActivation, f2.meanActivation, f3.meanActivation]).toEqual([3, 4, 0.5, 0]);
    expect([f0.maxActivation, f1.maxActivation, f2.maxActivation, f3.maxActivation]).toEqual([5, 6, 0.5, 0]);
    expect(report.features.map((f) => f.index)).toEqual([0, 1, 2, 3]);
  });

  it('flags never-firing features dead and features above the threshold dense, and counts both', () => {
    expect(report.features.map((f) => f.dead)).toEqual([false, false, false, true]);
    // frequency 0.4 and 0.2 are not above 0.5; 1.0 is.
    expect(report.features.map((f) => f.dense)).toEqual([true, false, false, false]);
    expect(report.summary).toEqual({ dead: 1, dense: 1, meanL0: 8 / 5 });
  });

  it('records corpus size, settings and metadata in the report', () => {
    expect(report.corpus).toEqual({ path: 'corpus.jsonl', documents: 2, tokens: 5 });
    expect(report.version).toBe(1);
    expect(report.denseThreshold).toBe(0.5);
    expect(report.examples).toEqual({ perFeature: 10, perDocument: 2, windowBefore: 12, windowAfter: 4 });
    expect(report.sae.hookName).toBe('blocks.1.hook_resid_post');
    expect(report.createdAt).toBe('2026-01-02T03:04:05.000Z');
    expect(accumulator.documentCount).toBe(2);
    expect(accumulator.tokenCount).toBe(5);
  });

  it('treats a frequency equal to the dense threshold as not dense', () => {
    const acc = new FeatureAccumulator({ dSae: 2, denseThreshold: 0.5 });
    acc.addDocument(sparseDocument('d', [{ 0: 1 }, { 1: 1 }]));
    expect(acc.finish(reportMeta(2)).features.map((f) => f.dense)).toEqual([false, false]);
  });

  it('ignores padding slots and non-positive activations', () => {
    const acc = new FeatureAccumulator({ dSae: 3 });
    acc.addDocument({
      id: 'pad',
      tokens: [{ id: 0, text: 'x' }, { id: 1, text: 'y' }],
      indices: Int32Array.from([0, -1, 1, 2]),
      values: Float32Array.from([2, 7, 0, -1]),
      k: 2,
    });
    const r = acc.finish(reportMeta(3));
    expect(r.features.map((f) => f.firing)).toEqual([1, 0, 0]);
    expect(r.summary.meanL0).toBe(0.5);
  });

  it('reports an empty corpus as all dead with zero frequencies', () => {
    const r = new FeatureAccumulator({ dSae: 2 }).finish(reportMeta(2));
    expect(r.summary).toEqual({ dead: 2, dense: 0, meanL0: 0 });
    expect(r.features[0]).toMatchObject({ frequency: 0, firing: 0, dead: true, histogram: { max: 0, counts: new Array(16).fill(0) }, examples: [] });
  });
});

describe('FeatureAccumulator examples', () => {
  it('keeps the top N examples by activation, best first, ties going to the earlier document', () => {
    const acc = new FeatureAccumulator({ dSae: 2, contextsPerFeature: 3 });
    const activations = [2, 9, 4, 9, 1, 7];
    activations.forEach((v, d) => acc.addDocument(sparseDocument(`doc${d}`, [{}, { 1: v }])));
    const examples = acc.finish(reportMeta(2)).features[1].examples;
    expect(examples.map((e) => [e.document, e.activation])).toEqual([
      ['doc1', 9],
      ['doc3', 9],
      ['doc5', 7],
    ]);
    expect(examples.every((e) => e.position === 1 && e.marked === 1)).toBe(true);
  });

  it('takes at most maxExamplesPerDocument examples per document, its strongest', () => {
    const acc = new FeatureAccumulator({ dSae: 1, contextsPerFeature: 5, maxExamplesPerDocument: 2 });
    // One long document where the feature fires on every token, increasingly; then a weaker one.
    acc.addDocument(sparseDocument('long', Array.from({ length: 10 }, (_, p) => ({ 0: p + 1 }))));
    acc.addDocument(sparseDocument('short', [{ 0: 0.5 }, { 0: 0.25 }, { 0: 0.125 }]));
    const examples = acc.finish(reportMeta(1)).features[0].examples;
    expect(examples.map((e) => [e.document, e.position, e.activation])).toEqual([
      ['long', 9, 10],
      ['long', 8, 9],
      ['short', 0, 0.5],
      ['short', 1, 0.25],
    ]);
  });

  it('clips the window at the start and end of the document and marks the activating token', () => {
    const acc = new FeatureAccumulator({ dSae: 2, windowBefore: 3, windowAfter: 2 });
    const texts = ['A', ' b', '\n', ' d', ' e', ' f'];
    // Feature 1 fires on tokens 1 and 5; feature 0 on token 2, which sits in both windows.
    acc.addDocument(sparseDocument('edges', [{}, { 1: 2 }, { 0: 9 }, {}, { 1: 0.5 }, { 1: 3 }], { texts }));
    const [strong, weak] = acc.finish(reportMeta(2)).features[1].examples;
    expect(strong).toEqual({ document: 'edges', position: 5, activation: 3, tokens: ['\n', ' d', ' e', ' f'], activations: [0, 0, 0.5, 3], marked: 3 });
    expect(weak).toEqual({ document: 'edges', position: 1, activation: 2, tokens: ['A', ' b', '\n', ' d'], activations: [0, 2, 0, 0], marked: 1 });
  });

  it('keeps the full window in the middle of a document', () => {
    const acc = new FeatureAccumulator({ dSae: 1, windowBefore: 2, windowAfter: 1, contextsPerFeature: 1 });
    acc.addDocument(sparseDocument('mid', [{}, {}, {}, { 0: 1 }, {}, {}]));
    const [example] = acc.finish(reportMeta(1)).features[0].examples;
    expect(example).toMatchObject({ position: 3, tokens: ['t1', 't2', 't3', 't4'], activations: [0, 0, 1, 0], marked: 2 });
  });

  it('keeps no examples when contextsPerFeature is 0 but still counts', () => {
    const acc = new FeatureAccumulator({ dSae: 1, contextsPerFeature: 0 });
    acc.addDocument(sparseDocument('x', [{ 0: 1 }]));
    const [feature] = acc.finish(reportMeta(1)).features;
    expect(feature.examples).toEqual([]);
    expect(feature.firing).toBe(1);
  });

  it('rounds activations to six significant digits in the report', () => {
    const acc = new FeatureAccumulator({ dSae: 1 });
    acc.addDocument(sparseDocument('r', [{ 0: 0.3 }]));
    const [feature] = acc.finish(reportMeta(1)).features;
    expect(Math.fround(0.3)).not.toBe(0.3);
    expect(feature.maxActivation).toBe(0.3);
    expect(feature.examples[0].activations).toEqual([0.3]);
  });
});

describe('FeatureAccumulator histograms', () => {
  function histogramOf(values: number[], bins = 16): { max: number; counts: number[] } {
    const acc = new FeatureAccumulator({ dSae: 1, histogramBins: bins });
    acc.addDocument(sparseDocument('h', values.map((v) => ({ 0: v }))));
    return acc.finish(reportMeta(1)).features[0].histogram;
  }

  it('bins activations over [0, max] with one count per firing row', () => {
    // Bins are [i, i+1) for max 16; 16 itself goes in the last bin.
    const values = [...Array.from({ length: 15 }, (_, i) => i + 0.5), 16];
    expect(histogramOf(values)).toEqual({ max: 16, counts: new Array(16).fill(1) });
    expect(histogramOf([1, 16]).counts).toEqual([0, 1, ...new Array(13).fill(0), 1]);
  });

  it('gives the same bins whatever order the values arrive in (range growth merges bins)', () => {
    const values = [0.001, 0.5, 3, 3.2, 7.9, 8, 12, 15.5, 16, 0.9];
    const forward = histogramOf(values);
    const backward = histogramOf([...values].reverse());
    expect(forward).toEqual(backward);
    expect(forward.max).toBe(16);
    expect(forward.counts.reduce((a, b) => a + b, 0)).toBe(values.length);
    // Bins of width 1: [0,1) holds 0.001, 0.5, 0.9; [3,4) holds 3 and 3.2; [15,16] holds 15.5 and 16.
    expect(forward.counts[0]).toBe(3);
    expect(forward.counts[3]).toBe(2);
    expect(forward.counts[15]).toBe(2);
    expect(forward.counts[7]).toBe(1);
    expect(forward.counts[8]).toBe(1);
  });

  it('uses the number of bins asked for', () => {
    expect(histogramOf([0.5, 1.5, 2.5, 4], 4)).toEqual({ max: 4, counts: [1, 1, 1, 1] });
  });
});

describe('FeatureAccumulator argument checks', () => {
  it('refuses bad options', () => {
    expectSaegateError(() => new FeatureAccumulator({ dSae: 0 }), 'SAEGATE_ERR_FEATURE_ARGUMENT', 'dSae', 'got 0');
    expectSaegateError(() => new FeatureAccumulator({ dSae: 4, contextsPerFeature: 1.5 }), 'SAEGATE_ERR_FEATURE_ARGUMENT', 'contextsPerFeature');
    expectSaegateError(() => new FeatureAccumulator({ dSae: 4, maxExamplesPerDocument: 0 }), 'SAEGATE_ERR_FEATURE_ARGUMENT', 'maxExamplesPerDocument');
    expectSaegateError(() => new FeatureAccumulator({ dSae: 4, denseThreshold: 1.5 }), 'SAEGATE_ERR_FEATURE_ARGUMENT', 'denseThreshold', '1.5');
    expectSaegateError(() => new FeatureAccumulator({ dSae: 4, windowBefore: -1 }), 'SAEGATE_ERR_FEATURE_ARGUMENT', 'windowBefore');
  });

  it('refuses metadata for another SAE width', () => {
    expectSaegateError(() => new FeatureAccumulator({ dSae: 4 }).finish(reportMeta(5)), 'SAEGATE_ERR_FEATURE_ARGUMENT', 'd_sae = 5', '4 features');
  });

  const bad: [string, FeatureDocument, string][] = [
    ['slot count', { ...sparseDocument('short', [{ 0: 1 }, { 1: 1 }]), indices: new Int32Array(1) }, '2 tokens × k 1 needs 2 slots'],
    ['index out of range', sparseDocument('range', [{ 0: 1 }, { 4: 1 }]), "document 'range' token 1: feature index 4 is outside 0…3"],
    ['NaN activation', sparseDocument('nan', [{ 2: Number.NaN }]), 'feature 2 has activation NaN'],
    ['infinite activation', sparseDocument('inf', [{ 2: Infinity }]), 'feature 2 has activation Infinity'],
    [
      'duplicate feature in a row',
      { id: 'dup', tokens: [{ id: 0, text: 'x' }], indices: Int32Array.from([1, 1]), values: Float32Array.from([1, 2]), k: 2 },
      "document 'dup' token 0: feature 1 appears twice in the row",
    ],
    ['k', { ...sparseDocument('k', [{ 0: 1 }]), k: 0 }, 'k must be a positive integer'],
  ];

  it.each(bad)('refuses a document with a bad %s and counts nothing of it', (_name, doc, message) => {
    const acc = new FeatureAccumulator({ dSae: 4 });
    acc.addDocument(sparseDocument('good', [{ 0: 1, 1: 1 }]));
    const before = acc.finish(reportMeta(4));
    expectSaegateError(() => acc.addDocument(doc), 'SAEGATE_ERR_FEATURE_ARGUMENT', message);
    expect(acc.finish(reportMeta(4))).toEqual(before);
    // The refused document left no scratch behind: the next one counts normally.
    acc.addDocument(sparseDocument('after', [{ 1: 2, 2: 1 }]));
    const after = acc.finish(reportMeta(4));
    expect(after.features.map((f) => f.firing)).toEqual([1, 2, 1, 0]);
    expect(after.features[1].examples.map((e) => e.document)).toEqual(['after', 'good']);
  });
});

describe('FeatureAccumulator against a brute-force reference', () => {
  /** Random small corpora: activations are multiples of 1/8 so float32 holds them exactly. */
  const corpus = fc.array(
    fc.array(
      fc.dictionary(
        fc.integer({ min: 0, max: 5 }).map(String),
        fc.integer({ min: 1, max: 64 }).map((n) => n / 8),
        { maxKeys: 4 },
      ),
      { minLength: 0, maxLength: 12 },
    ),
    { minLength: 1, maxLength: 8 },
  );

  it('matches counts, max, mean and the capped top-N examples for any corpus', () => {
    fc.assert(
      fc.property(corpus, fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 3 }), (docs, perFeature, perDocument) => {
        const dSae = 6;
        const windowBefore = 2;
        const windowAfter = 1;
        const acc = new FeatureAccumulator({ dSae, contextsPerFeature: perFeature, maxExamplesPerDocument: perDocument, windowBefore, windowAfter });
        const rows = docs.map((doc) => doc.map((row) => Object.fromEntries(Object.entries(row).map(([f, v]) => [Number(f), v]))));
        rows.forEach((doc, d) => acc.addDocument(sparseDocument(`d${d}`, doc)));
        const report = acc.finish(reportMeta(dSae));

        for (let f = 0; f < dSae; f++) {
          // Every (document, position, activation) where f fires, in corpus order.
          const hits = rows.flatMap((doc, d) => doc.flatMap((row, p) => (row[f] === undefined ? [] : [{ d, p, v: row[f] }])));
          const entry = report.features[f];
          expect(entry.firing).toBe(hits.length);
          expect(entry.maxActivation).toBe(hits.reduce((m, h) => Math.max(m, h.v), 0));
          // The report rounds to six significant digits: a relative error of at most 5e-6.
          const mean = hits.length === 0 ? 0 : hits.reduce((s, h) => s + h.v, 0) / hits.length;
          expect(Math.abs(entry.meanActivation - mean)).toBeLessThanOrEqual(5e-6 * mean + 1e-12);
          expect(entry.histogram.counts.reduce((a, b) => a + b, 0)).toBe(hits.length);
          // Streamed bins put a value at most a quarter bin from its exact place: below each bin
          // edge x lie all values < x − w/4 and none ≥ x + w/4 (w the bin width).
          const { max, counts } = entry.histogram;
          const width = max / counts.length;
          for (let b = 1; b < counts.length; b++) {
            const below = counts.slice(0, b).reduce((a, c) => a + c, 0);
            const edge = b * width;
            expect(below).toBeGreaterThanOrEqual(hits.filter((h) => h.v < edge - width / 4 - 1e-9).length);
            expect(below).toBeLessThanOrEqual(hits.filter((h) => h.v < edge + width / 4 + 1e-9).length);
          }
          // Each document's best `perDocument` hits (ties: earlier position), then the best overall
          // (ties: earlier document, then earlier position).
          const byStrength = (a: { d: number; p: number; v: number }, b: { d: number; p: number; v: number }): number => b.v - a.v || a.d - b.d || a.p - b.p;
          const candidates = rows.flatMap((_, d) => hits.filter((h) => h.d === d).sort(byStrength).slice(0, perDocument));
          const expected = candidates.sort(byStrength).slice(0, perFeature);
          expect(entry.examples.map((e) => [e.document, e.position, e.activation])).toEqual(expected.map((h) => [`d${h.d}`, h.p, h.v]));
          for (const example of entry.examples) {
            const doc = rows[Number(example.document.slice(1))];
            const start = Math.max(0, example.position - windowBefore);
            const end = Math.min(doc.length, example.position + windowAfter + 1);
            expect(example.tokens).toEqual(Array.from({ length: end - start }, (_, i) => `t${start + i}`));
            expect(example.activations).toEqual(doc.slice(start, end).map((row) => row[f] ?? 0));
            expect(example.marked).toBe(example.position - start);
          }
        }
        expect(report.corpus.tokens).toBe(rows.reduce((n, doc) => n + doc.length, 0));
      }),
      { numRuns: 300 },
    );
  });
});
