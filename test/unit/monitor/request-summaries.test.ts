import { describe, expect, it } from 'vitest';
import { RequestSummaries } from '../../../src/monitor/request-summaries.js';
import { expectSaegateError } from '../../helpers/errors.js';
import { encodedRows } from '../../helpers/encoded-rows.js';

describe('RequestSummaries', () => {
  it('reports each request’s top features by summed activation and its watched features’ maxima', () => {
    const summaries = new RequestSummaries({ dSae: 10, watchedFeatures: [7, 2], topFeatures: 2 });
    summaries.ingest(encodedRows([
      { request: 'a', features: [[1, 1], [7, 0.5]], fvu: 0.2 },
      { request: 'b', features: [[3, 9]], fvu: 0.4 },
      { request: 'a', features: [[4, 1.5], [1, 1], [7, 0.25]], fvu: 0.4 },
      { request: 'a', features: [[5, 0.1]], fvu: 0 },
    ]));
    const a = summaries.finish('a');
    expect(a).toEqual({
      requestId: 'a',
      tokens: 3,
      meanL0: 2,
      meanFvu: expect.closeTo(0.2, 6),
      topFeatures: [
        { feature: 1, activationSum: 2, maxActivation: 1, firings: 2 },
        { feature: 4, activationSum: 1.5, maxActivation: 1.5, firings: 1 },
      ],
      watched: [{ feature: 7, maxActivation: 0.5 }, { feature: 2, maxActivation: 0 }],
      droppedFeatures: 0,
    });
    expect(summaries.finish('a')).toBeUndefined();
    expect(summaries.summary('b')?.topFeatures).toEqual([{ feature: 3, activationSum: 9, maxActivation: 9, firings: 1 }]);
  });

  it('evicts the least recently seen request when maxOpenRequests are open, and counts it', () => {
    const summaries = new RequestSummaries({ dSae: 4, maxOpenRequests: 2 });
    summaries.ingest(encodedRows([{ request: 'a', features: [[0, 1]] }]));
    summaries.ingest(encodedRows([{ request: 'b', features: [[0, 1]] }]));
    summaries.ingest(encodedRows([{ request: 'a', features: [[0, 1]] }]));
    summaries.ingest(encodedRows([{ request: 'c', features: [[0, 1]] }]));
    expect(summaries.summary('b')).toBeUndefined();
    expect(summaries.summary('a')?.tokens).toBe(2);
    expect(summaries.summary('c')?.tokens).toBe(1);
    expect(summaries.evicted).toBe(1);
    expect(summaries.openRequests).toBe(2);
  });

  it('stops adding new features to a full table and says how many entries it dropped', () => {
    const summaries = new RequestSummaries({ dSae: 100, maxFeaturesPerRequest: 8, topFeatures: 10 });
    // ¾ of 8 = 6 features fit; features 6..9 are dropped, later entries of known features still count.
    summaries.ingest(encodedRows([{ features: Array.from({ length: 10 }, (_, f) => [f, f + 1] as const) }, { features: [[0, 5]] }]));
    const s = summaries.finish('r0');
    expect(s?.droppedFeatures).toBe(4);
    expect(s?.topFeatures.map((f) => f.feature)).toEqual([0, 5, 4, 3, 2, 1]);
    expect(s?.topFeatures[0].activationSum).toBe(6);
  });

  it('holds bounded memory under endless distinct requests and reuses finished states', () => {
    const summaries = new RequestSummaries({ dSae: 1000, maxOpenRequests: 16, maxFeaturesPerRequest: 64, watchedFeatures: [1, 2, 3] });
    for (let i = 0; i < 200; i++) summaries.ingest(encodedRows([{ request: `q${i}`, features: [[i % 1000, 1]] }]));
    const full = summaries.memoryBytes();
    expect(full).toBe(1000 * 4 + 16 * (64 * 16 + 3 * 4));
    for (let i = 200; i < 2000; i++) {
      summaries.ingest(encodedRows([{ request: `q${i}`, features: [[i % 1000, 1]] }]));
      if (i % 2 === 0) summaries.finish(`q${i}`);
    }
    expect(summaries.memoryBytes()).toBe(full);
    expect(summaries.openRequests).toBeLessThanOrEqual(16);
  });

  it('refuses watched features outside d_sae or listed twice', () => {
    expectSaegateError(() => new RequestSummaries({ dSae: 4, watchedFeatures: [4] }), 'SAEGATE_ERR_MONITOR_ARGUMENT', 'watched feature 4');
    expectSaegateError(() => new RequestSummaries({ dSae: 4, watchedFeatures: [1, 1] }), 'SAEGATE_ERR_MONITOR_ARGUMENT', 'listed twice');
    expectSaegateError(() => new RequestSummaries({ dSae: 4, maxFeaturesPerRequest: 100 }), 'SAEGATE_ERR_MONITOR_ARGUMENT', 'power of two');
  });
});
