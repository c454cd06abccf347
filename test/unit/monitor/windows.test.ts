import { describe, expect, it } from 'vitest';
import { WindowedStats } from '../../../src/monitor/windows.js';
import { binIndex, histogramEdges } from '../../../src/monitor/histogram.js';
import { expectSaegateError } from '../../helpers/errors.js';
import { encodedRows } from '../../helpers/encoded-rows.js';

/** A clock the test moves by hand. */
function manualClock(start = 0): { now: () => number; advance: (ms: number) => void; set: (ms: number) => void } {
  let t = start;
  return { now: () => t, advance: (ms) => (t += ms), set: (ms) => (t = ms) };
}

const oneWindow = [{ name: '1m', durationMs: 60_000, buckets: 6 }]; // 10 s buckets

describe('histogram bins', () => {
  it('puts values below the first edge in bin 0, on an edge in the bin it opens, NaN in the last', () => {
    const edges = histogramEdges('x', [1, 2, 4]);
    expect([0, 0.99, 1, 1.5, 2, 3.99, 4, 1e9, Number.NaN].map((v) => binIndex(edges, v))).toEqual([0, 0, 1, 1, 2, 2, 3, 3, 3]);
  });

  it('refuses edges that are not strictly increasing', () => {
    expectSaegateError(() => histogramEdges('fvu', [0.1, 0.1]), 'SAEGATE_ERR_MONITOR_ARGUMENT', 'fvu edges must be strictly increasing');
    expectSaegateError(() => histogramEdges('l0', []), 'SAEGATE_ERR_MONITOR_ARGUMENT', 'must not be empty');
  });
});

describe('WindowedStats', () => {
  it('sums firing counts, activations, tokens and histograms of the batches in the window', () => {
    const clock = manualClock(1_000);
    const stats = new WindowedStats({ dSae: 8, windows: oneWindow, l0Edges: [1, 2, 3], fvuEdges: [0.5], now: clock.now });
    stats.ingest(encodedRows([
      { features: [[1, 0.5], [3, 2]], fvu: 0.2 },
      { features: [[1, 1.5]], fvu: 0.7 },
    ]));
    clock.advance(15_000);
    stats.ingest(encodedRows([{ features: [], fvu: 0.1 }]));
    const s = stats.snapshot('1m');
    expect(s.tokens).toBe(3);
    expect([...s.firingCounts]).toEqual([0, 2, 0, 1, 0, 0, 0, 0]);
    expect([...s.activationSums]).toEqual([0, 2, 0, 2, 0, 0, 0, 0]);
    expect(s.l0Sum).toBe(3);
    expect(s.fvuSum).toBeCloseTo(1.0, 6);
    expect([...s.l0Histogram]).toEqual([1, 1, 1, 0]); // L0 0, 1, 2
    expect([...s.fvuHistogram]).toEqual([2, 1]);
    expect(s.projectionHistogram).toBeNull();
    expect(s.fromMs).toBe(-40_000); // bucket 1 (10–20 s) is newest; six buckets back starts at −40 s
  });

  it('drops a bucket exactly when it leaves the window, and zeroes a reused slot', () => {
    const clock = manualClock(0);
    const stats = new WindowedStats({ dSae: 4, windows: oneWindow, now: clock.now });
    stats.ingest(encodedRows([{ features: [[0, 1]] }])); // bucket 0 (0–10 s)
    clock.set(30_000);
    stats.ingest(encodedRows([{ features: [[1, 1]] }, { features: [[1, 1]] }])); // bucket 3
    clock.set(59_999); // bucket 5: buckets 0..5 live
    expect(stats.snapshot('1m').tokens).toBe(3);
    clock.set(60_000); // bucket 6: bucket 0 expired
    let s = stats.snapshot('1m');
    expect(s.tokens).toBe(2);
    expect([...s.firingCounts]).toEqual([0, 2, 0, 0]);
    // Bucket 6 reuses bucket 0's slot: counting into it must not resurrect bucket 0's row.
    stats.ingest(encodedRows([{ features: [[2, 1]] }]));
    s = stats.snapshot('1m');
    expect([...s.firingCounts]).toEqual([0, 2, 1, 0]);
    expect(s.tokens).toBe(3);
    clock.set(90_000 + 60_000); // long idle: everything expired
    s = stats.snapshot('1m');
    expect(s.tokens).toBe(0);
    expect([...s.firingCounts]).toEqual([0, 0, 0, 0]);
  });

  it('keeps each window on its own ring: a row leaves the 1 m window but stays in the 5 m one', () => {
    const clock = manualClock(0);
    const stats = new WindowedStats({
      dSae: 2,
      windows: [{ name: '1m', durationMs: 60_000, buckets: 12 }, { name: '5m', durationMs: 300_000, buckets: 10 }],
      now: clock.now,
    });
    stats.ingest(encodedRows([{ features: [[0, 1]] }]));
    clock.advance(120_000);
    expect(stats.snapshot('1m').tokens).toBe(0);
    expect(stats.snapshot('5m').tokens).toBe(1);
    clock.advance(300_000);
    expect(stats.snapshot('5m').tokens).toBe(0);
  });

  it('counts into the newest bucket when the clock steps back, never into an expired slot', () => {
    const clock = manualClock(50_000);
    const stats = new WindowedStats({ dSae: 2, windows: oneWindow, now: clock.now });
    stats.ingest(encodedRows([{ features: [[0, 1]] }]));
    clock.set(0); // clock jumped back 50 s
    stats.ingest(encodedRows([{ features: [[1, 1]] }]));
    clock.set(50_000);
    expect([...stats.snapshot('1m').firingCounts]).toEqual([1, 1]);
  });

  it('bins projections when projection edges are configured', () => {
    const stats = new WindowedStats({ dSae: 2, windows: oneWindow, projectionEdges: [0, 1], now: () => 0 });
    stats.ingest(encodedRows([{ features: [], projection: -1 }, { features: [], projection: 0.5 }, { features: [], projection: 3 }, { features: [], projection: 4 }]));
    expect([...(stats.snapshot('1m').projectionHistogram ?? [])]).toEqual([1, 1, 2]);
  });

  it('holds a fixed number of bytes: buckets × 8 per latent per window plus histograms, whatever the traffic', () => {
    const clock = manualClock(0);
    const dSae = 1000;
    const stats = new WindowedStats({ dSae, windows: [{ name: 'a', durationMs: 60_000, buckets: 12 }, { name: 'b', durationMs: 3_600_000, buckets: 12 }], now: clock.now });
    const before = stats.memoryBytes();
    const perLatent = 2 * 12 * 8;
    // Latent arrays plus per bucket: epoch, tokens, l0/fvu sums (8 B each) and 14 + 14 Uint32 bins.
    expect(before).toBe(dSae * perLatent + 2 * 12 * (4 * 8 + (14 + 14) * 4));
    for (let i = 0; i < 500; i++) {
      stats.ingest(encodedRows([{ request: `q${i}`, features: [[i % dSae, 1], [(i * 7) % dSae, 2]] }]));
      clock.advance(7_919);
    }
    expect(stats.memoryBytes()).toBe(before);
  });

  it('refuses a batch with a feature outside d_sae before counting any of it', () => {
    const stats = new WindowedStats({ dSae: 4, windows: oneWindow, now: () => 0 });
    expectSaegateError(() => stats.ingest(encodedRows([{ features: [[1, 1]] }, { features: [[4, 1]] }])), 'SAEGATE_ERR_MONITOR_ARGUMENT', 'feature index 4', 'd_sae = 4');
    expect(stats.snapshot('1m').tokens).toBe(0);
    expectSaegateError(() => stats.snapshot('5m'), 'SAEGATE_ERR_MONITOR_ARGUMENT', "no window '5m'");
  });

  it('refuses batches whose columns disagree in length', () => {
    const stats = new WindowedStats({ dSae: 4, windows: oneWindow, now: () => 0 });
    const batch = encodedRows([{ features: [[1, 1]] }, { features: [] }]);
    expectSaegateError(() => stats.ingest({ ...batch, fvu: new Float32Array(1) }), 'SAEGATE_ERR_MONITOR_ARGUMENT', 'fvu has 1 entries, expected rows = 2');
    expectSaegateError(() => stats.ingest({ ...batch, offsets: Uint32Array.of(0, 1, 0) }), 'SAEGATE_ERR_MONITOR_ARGUMENT', 'offsets decrease at row 1');
    expectSaegateError(() => stats.ingest({ ...batch, requestIds: [] }), 'SAEGATE_ERR_MONITOR_ARGUMENT', 'request index 0');
  });
});
