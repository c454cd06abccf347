import diagnostics from 'node:diagnostics_channel';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { SAE_BATCH_SENT_CHANNEL, SAE_BATCH_SETTLED_CHANNEL } from '../../../src/common/diagnostics.js';
import { SaegateError } from '../../../src/common/errors.js';
import { f16BitsToF32, f32ToF16 } from '../../../src/common/f16.js';
import { MicroBatcher, type PushMeta, type SaeBatchSentEvent, type SaeBatchSettledEvent, type SaeResultBatch } from '../../../src/sae/batcher.js';
import { SaePool, type EncodeResult, type SaeEncoder } from '../../../src/sae/pool.js';
import { D_IN, makeSmallSae, rng, uniform } from './sae-fixture.js';

const TOP_K = 4;

/**
 * A pool stand-in: "encodes" a row into values[0] = its first input value, l0 = row index in the
 * batch. `delays` (ms, per call, cycled) lets batches finish out of order; `hold` blocks every
 * encode until `release()` is called.
 */
class FakePool implements SaeEncoder {
  calls = 0;
  private held: (() => void)[] = [];
  constructor(
    readonly workers: number,
    private readonly delays: number[] = [0],
    private hold = false,
  ) {}

  encode(rows: Float32Array | Uint16Array, rowCount: number): Promise<EncodeResult> {
    const delay = this.delays[this.calls++ % this.delays.length];
    const values = new Float32Array(rowCount * TOP_K);
    const l0 = new Int32Array(rowCount);
    for (let r = 0; r < rowCount; r++) {
      values[r * TOP_K] = rows[r * D_IN];
      l0[r] = r;
    }
    const result: EncodeResult = { rowCount, topK: TOP_K, indices: new Int32Array(rowCount * TOP_K), values, l0, sqError: new Float32Array(rowCount), fvu: new Float32Array(rowCount), rows, runMs: 0 };
    return new Promise((resolve) => {
      const finish = (): void => void setTimeout(() => resolve(result), delay);
      if (this.hold) this.held.push(finish);
      else finish();
    });
  }

  release(): void {
    this.hold = false;
    for (const finish of this.held.splice(0)) finish();
  }
}

/** A held FakePool whose encode calls listed in `failures` (0-based call index) reject with that error. */
class FlakyPool extends FakePool {
  private n = 0;
  constructor(
    workers: number,
    private readonly failures: ReadonlyMap<number, Error>,
  ) {
    super(workers, [0], true);
  }

  override encode(rows: Float32Array | Uint16Array, rowCount: number): Promise<EncodeResult> {
    const failure = this.failures.get(this.n++);
    const encoded = super.encode(rows, rowCount);
    return failure === undefined ? encoded : encoded.then(() => Promise.reject(failure));
  }
}

/** The documented admission rule: 1 below the mark, falling linearly to 0 at the hard limit. */
function admissionProbability(queued: number, mark: number, max: number): number {
  if (queued < mark) return 1;
  if (queued >= max) return 0;
  return (max - queued) / (max - mark);
}

/** One row whose every value is `marker`. */
function markerRows(markers: number[]): Float32Array {
  const rows = new Float32Array(markers.length * D_IN);
  markers.forEach((m, r) => rows.fill(m, r * D_IN, (r + 1) * D_IN));
  return rows;
}

/** Push metadata in the tap frame's compact form from one request id per row: request table + index column. */
function meta(ids: readonly string[], positions: Int32Array, hook = 'h'): PushMeta {
  const requestIds: string[] = [];
  const rowRequestIndexes = Uint16Array.from(ids, (id) => {
    const known = requestIds.indexOf(id);
    return known >= 0 ? known : requestIds.push(id) - 1;
  });
  return { hook, requestIds, rowRequestIndexes, positions };
}

/** The request id of each result row, read through the batch's request table. */
function rowIds(batch: SaeResultBatch): string[] {
  return Array.from(batch.rowRequestIndexes, (k) => batch.requestIds[k]);
}

function collect(batcher: MicroBatcher): SaeResultBatch[] {
  const out: SaeResultBatch[] = [];
  batcher.onResult((b) => out.push(b));
  return out;
}

describe('MicroBatcher', () => {
  it('delivers rows from two interleaved requests tagged with their ids and positions, in order per request', async () => {
    // Later batches finish first: delivery must still follow push order.
    const pool = new FakePool(3, [30, 15, 0]);
    const batcher = new MicroBatcher({ pool, dIn: D_IN, maxBatchRows: 3, maxDelayMs: 1 });
    const batches = collect(batcher);
    const sizes = [2, 1, 3, 2, 4];
    const next = { a: 0, b: 0 };
    for (const [i, n] of sizes.entries()) {
      for (const id of ['a', 'b'] as const) {
        const positions = Int32Array.from({ length: n + i % 2 }, (_, k) => next[id] + k);
        next[id] += positions.length;
        // Marker: 1000 for request b, plus the position.
        const markers = Array.from(positions, (p) => (id === 'b' ? 1000 : 0) + p);
        batcher.push(markerRows(markers), positions.length, meta(Array<string>(positions.length).fill(id), positions, 'blocks.0.hook_resid_post'));
      }
    }
    await batcher.drain();
    const seen: Record<string, number[]> = { a: [], b: [] };
    for (const batch of batches) {
      expect(batch.hook).toBe('blocks.0.hook_resid_post');
      expect(batch.rowCount).toBeLessThanOrEqual(3);
      // The batch's request table holds each request once; rows point into it.
      expect(new Set(batch.requestIds).size).toBe(batch.requestIds.length);
      expect(batch.rowRequestIndexes).toHaveLength(batch.rowCount);
      const ids = rowIds(batch);
      for (let r = 0; r < batch.rowCount; r++) {
        const id = ids[r];
        seen[id].push(batch.positions[r]);
        // The encoded row is the one pushed with this id and position.
        expect(batch.values[r * TOP_K]).toBe((id === 'b' ? 1000 : 0) + batch.positions[r]);
      }
    }
    expect(seen.a).toEqual(Array.from({ length: next.a }, (_, k) => k));
    expect(seen.b).toEqual(Array.from({ length: next.b }, (_, k) => k));
    expect(batcher.stats.rowsIn).toBe(next.a + next.b);
    expect(batcher.stats.rowsEncoded).toBe(next.a + next.b);
  });

  it('keeps frames in compact form: merges their request tables into one table per batch and points each row at its own request', async () => {
    const pool = new FakePool(1);
    const batcher = new MicroBatcher({ pool, dIn: D_IN, maxBatchRows: 4, maxDelayMs: 60_000 });
    const batches = collect(batcher);
    // Two frames with their own tables (y is index 1 in the first, 0 in the second); the second
    // frame fills the first batch and spills into the next, whose table starts afresh.
    const first = { hook: 'h', requestIds: ['x', 'y'], rowRequestIndexes: Uint16Array.of(1, 0, 1), positions: Int32Array.of(0, 0, 1) };
    const second = { hook: 'h', requestIds: ['y', 'z', 'x'], rowRequestIndexes: Uint16Array.of(2, 1, 0, 1, 2), positions: Int32Array.of(1, 0, 2, 1, 2) };
    batcher.push(markerRows([10, 0, 11]), 3, first);
    batcher.push(markerRows([1, 20, 12, 21, 2]), 5, second);
    await batcher.drain();
    expect(batches.map((b) => b.requestIds)).toEqual([['y', 'x'], ['z', 'y', 'x']]);
    expect(batches.map((b) => Array.from(b.rowRequestIndexes))).toEqual([[0, 1, 0, 1], [0, 1, 0, 2]]);
    expect(batches.flatMap((b) => rowIds(b).map((id, r) => `${id}@${b.positions[r]}=${b.values[r * TOP_K]}`))).toEqual(['y@0=10', 'x@0=0', 'y@1=11', 'x@1=1', 'z@0=20', 'y@2=12', 'z@1=21', 'x@2=2']);
  });

  it('refuses a push whose index column points outside its request table, before counting any row', () => {
    const batcher = new MicroBatcher({ pool: new FakePool(1), dIn: D_IN, maxBatchRows: 4, maxDelayMs: 60_000 });
    const bad = { hook: 'h', requestIds: ['a'], rowRequestIndexes: Uint16Array.of(0, 1), positions: Int32Array.of(0, 1) };
    expect(() => batcher.push(markerRows([0, 1]), 2, bad)).toThrow(/request index 1 outside a request table of 1/);
    expect(batcher.stats.rowsIn).toBe(0);
    expect(batcher.queuedRows).toBe(0);
  });

  describe('deadline (fake timers)', () => {
    beforeEach(() => {
      vi.useFakeTimers();
    });
    afterEach(() => {
      vi.useRealTimers();
    });
    const rowsDelivered = (batches: SaeResultBatch[]): number => batches.reduce((n, b) => n + b.rowCount, 0);

    it('fills batches up to maxBatchRows and flushes the remainder after maxDelayMs, not before', async () => {
      const pool = new FakePool(1);
      const batcher = new MicroBatcher({ pool, dIn: D_IN, maxBatchRows: 8, maxDelayMs: 50 });
      const batches = collect(batcher);
      for (let i = 0; i < 20; i++) batcher.push(markerRows([i]), 1, meta(['r'], Int32Array.of(i)));
      // No drain(): the two full batches go out at once, the 4-row remainder on the deadline alone.
      await vi.advanceTimersByTimeAsync(49);
      expect(pool.calls).toBe(2);
      expect(batches.map((b) => b.rowCount)).toEqual([8, 8]);
      await vi.advanceTimersByTimeAsync(1);
      expect(pool.calls).toBe(3);
      // The pool answers on a timer of its own.
      await vi.runAllTimersAsync();
      expect(batches.map((b) => b.rowCount)).toEqual([8, 8, 4]);
      expect(batches[2].values.filter((_, i) => i % TOP_K === 0)).toEqual(Float32Array.from([16, 17, 18, 19]));
      expect(batcher.stats.batches).toBe(3);
      expect(batcher.stats.meanBatchRows).toBeCloseTo(20 / 3, 10);
    });

    it('keeps a batch whose deadline passed open while the pool has no room, and sends it with every row since as soon as the pool answers', async () => {
      const pool = new FakePool(1, [0], true);
      const batcher = new MicroBatcher({ pool, dIn: D_IN, maxBatchRows: 64, maxDelayMs: 10 });
      const batches = collect(batcher);
      batcher.push(markerRows([0]), 1, meta(['a'], Int32Array.of(0)));
      await vi.advanceTimersByTimeAsync(10);
      expect(pool.calls).toBe(1); // the first batch is with the (held) pool
      for (let i = 1; i <= 5; i++) {
        batcher.push(markerRows([i]), 1, meta([i % 2 === 0 ? 'a' : 'b'], Int32Array.of(i)));
        await vi.advanceTimersByTimeAsync(10); // well past the second batch's deadline
      }
      expect(pool.calls).toBe(1);
      expect(batcher.queuedRows).toBe(5);
      pool.release();
      await vi.advanceTimersByTimeAsync(0);
      // The pool answered the first batch: the overdue one leaves at once, with all five rows.
      expect(pool.calls).toBe(2);
      pool.release();
      await vi.runOnlyPendingTimersAsync();
      expect(batches.map((b) => b.rowCount)).toEqual([1, 5]);
      expect(batches[1].values.filter((_, i) => i % TOP_K === 0)).toEqual(Float32Array.from([1, 2, 3, 4, 5]));
      expect(rowIds(batches[1])).toEqual(['b', 'a', 'b', 'a', 'b']);
    });

    it('sends a batch on its deadline when the pool has room, even while rows keep coming', async () => {
      const pool = new FakePool(2, [0], true);
      const batcher = new MicroBatcher({ pool, dIn: D_IN, maxBatchRows: 64, maxDelayMs: 10 });
      batcher.push(markerRows([0]), 1, meta(['a'], Int32Array.of(0)));
      await vi.advanceTimersByTimeAsync(10);
      batcher.push(markerRows([1]), 1, meta(['a'], Int32Array.of(1)));
      await vi.advanceTimersByTimeAsync(10);
      // Two workers: the second batch had room on its deadline although the first is still out.
      expect(pool.calls).toBe(2);
      pool.release();
      const drained = batcher.drain();
      await vi.runAllTimersAsync();
      await drained;
    });

    it('starts the deadline with the batch\'s first row: later rows do not postpone it', async () => {
      const pool = new FakePool(1);
      const batcher = new MicroBatcher({ pool, dIn: D_IN, maxBatchRows: 8, maxDelayMs: 50 });
      const batches = collect(batcher);
      for (let i = 0; i < 3; i++) batcher.push(markerRows([i]), 1, meta(['r'], Int32Array.of(i)));
      await vi.advanceTimersByTimeAsync(30);
      batcher.push(markerRows([3]), 1, meta(['r'], Int32Array.of(3)));
      await vi.advanceTimersByTimeAsync(19);
      expect(pool.calls).toBe(0);
      await vi.advanceTimersByTimeAsync(1);
      expect(pool.calls).toBe(1);
      // The pool answers on a timer of its own; no batch is open, so this fires only that one.
      await vi.runOnlyPendingTimersAsync();
      expect(batches.map((b) => b.rowCount)).toEqual([4]);
      // The next row opens a new batch with a deadline of its own.
      batcher.push(markerRows([4]), 1, meta(['r'], Int32Array.of(4)));
      await vi.advanceTimersByTimeAsync(49);
      expect(pool.calls).toBe(1);
      expect(rowsDelivered(batches)).toBe(4);
      await vi.advanceTimersByTimeAsync(1);
      expect(pool.calls).toBe(2);
      await vi.runOnlyPendingTimersAsync();
      expect(batches.map((b) => b.rowCount)).toEqual([4, 1]);
    });
  });

  describe('deadlines by urgency (fake timers and clock)', () => {
    beforeEach(() => {
      vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] });
    });
    afterEach(() => {
      vi.useRealTimers();
    });
    const hot = new Set(['hot']);
    const urgentIf = (m: PushMeta): boolean => m.requestIds.some((id) => hot.has(id));

    it('sends a batch nobody waits on after relaxedDelayMs, not maxDelayMs, and counts it as not urgent', async () => {
      const pool = new FakePool(1);
      const batcher = new MicroBatcher({ pool, dIn: D_IN, maxBatchRows: 64, maxDelayMs: 2, relaxedDelayMs: 20, isUrgent: urgentIf });
      batcher.push(markerRows([0, 1]), 2, meta(['cold', 'cold'], Int32Array.of(0, 1)));
      await vi.advanceTimersByTimeAsync(19);
      expect(pool.calls).toBe(0);
      await vi.advanceTimersByTimeAsync(1);
      expect(pool.calls).toBe(1);
      expect(batcher.stats).toMatchObject({ batches: 1, urgentBatches: 0 });
    });

    it('cuts the open batch\'s deadline to maxDelayMs from an urgent push, taking every row since with it', async () => {
      const pool = new FakePool(1);
      const batcher = new MicroBatcher({ pool, dIn: D_IN, maxBatchRows: 64, maxDelayMs: 2, relaxedDelayMs: 20, isUrgent: urgentIf });
      const batches = collect(batcher);
      batcher.push(markerRows([0]), 1, meta(['cold'], Int32Array.of(0)));
      await vi.advanceTimersByTimeAsync(5);
      // One request of the frame is waited on: the whole batch leaves 2 ms from now.
      batcher.push(markerRows([1, 2]), 2, meta(['cold', 'hot'], Int32Array.of(1, 0)));
      await vi.advanceTimersByTimeAsync(1);
      batcher.push(markerRows([3]), 1, meta(['cold'], Int32Array.of(2)));
      await vi.advanceTimersByTimeAsync(0);
      expect(pool.calls).toBe(0);
      await vi.advanceTimersByTimeAsync(1);
      expect(pool.calls).toBe(1);
      await vi.runOnlyPendingTimersAsync();
      expect(batches.map((b) => b.rowCount)).toEqual([4]);
      expect(rowIds(batches[0])).toEqual(['cold', 'cold', 'hot', 'cold']);
      expect(batcher.stats).toMatchObject({ batches: 1, urgentBatches: 1 });
    });

    it('never postpones a deadline: an urgent push late in a relaxed batch keeps the earlier one', async () => {
      const pool = new FakePool(1);
      const batcher = new MicroBatcher({ pool, dIn: D_IN, maxBatchRows: 64, maxDelayMs: 5, relaxedDelayMs: 20, isUrgent: urgentIf });
      batcher.push(markerRows([0]), 1, meta(['cold'], Int32Array.of(0)));
      await vi.advanceTimersByTimeAsync(18);
      batcher.push(markerRows([1]), 1, meta(['hot'], Int32Array.of(0)));
      await vi.advanceTimersByTimeAsync(2);
      expect(pool.calls).toBe(1);
      // An urgent batch is not postponed by cold rows either: the next batch opens urgent.
      batcher.push(markerRows([2]), 1, meta(['hot'], Int32Array.of(1)));
      batcher.push(markerRows([3]), 1, meta(['cold'], Int32Array.of(1)));
      await vi.advanceTimersByTimeAsync(5);
      expect(pool.calls).toBe(2);
      expect(batcher.stats.urgentBatches).toBe(2);
    });

    it('asks the urgency test once per push, and setUrgency(null) makes every push urgent', async () => {
      const pool = new FakePool(1);
      const asked: string[][] = [];
      const batcher = new MicroBatcher({ pool, dIn: D_IN, maxBatchRows: 64, maxDelayMs: 2, relaxedDelayMs: 20, isUrgent: (m) => (asked.push([...m.requestIds]), false) });
      batcher.push(markerRows([0, 1, 2]), 3, meta(['a', 'b', 'a'], Int32Array.of(0, 0, 1)));
      expect(asked).toEqual([['a', 'b']]);
      await vi.advanceTimersByTimeAsync(20);
      expect(pool.calls).toBe(1);
      batcher.setUrgency(null);
      batcher.push(markerRows([3]), 1, meta(['a'], Int32Array.of(2)));
      await vi.advanceTimersByTimeAsync(2);
      expect(pool.calls).toBe(2);
      expect(asked).toHaveLength(1);
      expect(batcher.stats.urgentBatches).toBe(1);
    });

    it('refuses a relaxedDelayMs below maxDelayMs with SAEGATE_ERR_CONFIG naming the option', () => {
      expect(() => new MicroBatcher({ pool: new FakePool(1), dIn: D_IN, maxDelayMs: 10, relaxedDelayMs: 5 })).toThrow(/relaxedDelayMs.*at least maxDelayMs \(10\)/);
    });
  });

  it('drops activation rows and counts them when the SAE queue is full, without throwing or blocking push', async () => {
    const pool = new FakePool(1, [0], true);
    // Sampling off: this test is about the hard limit alone.
    const batcher = new MicroBatcher({ pool, dIn: D_IN, maxBatchRows: 4, maxDelayMs: 1000, maxQueuedRows: 8, sampleAboveRows: 8 });
    const batches = collect(batcher);
    for (let i = 0; i < 100; i++) batcher.push(markerRows([i]), 1, meta(['r'], Int32Array.of(i)));
    // One batch (rows 0-3) went to the blocked pool; 8 more rows wait; the other 88 were dropped.
    expect(pool.calls).toBe(1);
    expect(batcher.stats.rowsIn).toBe(100);
    expect(batcher.stats.rowsDropped.queue_full).toBe(88);
    // A multi-row push into a full queue drops whole rows too.
    batcher.push(markerRows([500, 501, 502]), 3, meta(['r', 'r', 'r'], Int32Array.of(500, 501, 502)));
    expect(batcher.stats.rowsDropped.queue_full).toBe(91);
    pool.release();
    await batcher.drain();
    const delivered = batches.flatMap((b) => Array.from(b.positions));
    expect(delivered).toEqual(Array.from({ length: 12 }, (_, k) => k));
    expect(batcher.stats.rowsEncoded).toBe(12);
  });

  it('publishes each settled batch on saegate:sae:batch-settled in push order, with why a failed batch lost its rows', async () => {
    const failures = new Map<number, Error>([
      [1, new SaegateError('SAEGATE_ERR_WORKER_EXITED', ['SAE worker: exit code 1'])],
      [2, new Error('onnxruntime: bad input')],
    ]);
    const pool = new FlakyPool(3, failures);
    const batcher = new MicroBatcher({ pool, dIn: D_IN, maxBatchRows: 2, maxDelayMs: 60_000 });
    const sent: SaeBatchSentEvent[] = [];
    const settled: SaeBatchSettledEvent[] = [];
    const onSent = (message: unknown): void => void sent.push(message as SaeBatchSentEvent);
    const onSettled = (message: unknown): void => void settled.push(message as SaeBatchSettledEvent);
    diagnostics.subscribe(SAE_BATCH_SENT_CHANNEL, onSent);
    diagnostics.subscribe(SAE_BATCH_SETTLED_CHANNEL, onSettled);
    try {
      // Four batches of two rows: three go to the pool at once, the fourth waits for a free slot.
      batcher.push(markerRows([0, 1, 2, 3, 4, 5, 6, 7]), 8, meta(['a', 'b', 'a', 'a', 'c', 'c', 'a', 'b'], Int32Array.of(0, 0, 1, 2, 0, 1, 3, 1), 'blocks.3.hook_resid_post'));
      expect(sent.map((e) => [e.batchSeq, e.rowCount, e.requestCount, e.inFlight, e.queuedRows])).toEqual([
        [0, 2, 2, 1, 0],
        [1, 2, 1, 2, 0],
        [2, 2, 1, 3, 0],
      ]);
      pool.release();
      await batcher.drain();
    } finally {
      diagnostics.unsubscribe(SAE_BATCH_SENT_CHANNEL, onSent);
      diagnostics.unsubscribe(SAE_BATCH_SETTLED_CHANNEL, onSettled);
    }
    expect(sent.map((e) => e.batchSeq)).toEqual([0, 1, 2, 3]);
    expect(sent.every((e) => e.hook === 'blocks.3.hook_resid_post')).toBe(true);
    expect(settled.map((e) => [e.batchSeq, e.rowCount, e.requestCount, e.ok, e.dropReason])).toEqual([
      [0, 2, 2, true, null],
      [1, 2, 1, false, 'worker_exited'],
      [2, 2, 1, false, 'encode_failed'],
      [3, 2, 2, true, null],
    ]);
    for (const e of settled) {
      expect(e.encodeSeconds).toBeGreaterThanOrEqual(0);
      expect(e.latencySeconds).toBeGreaterThanOrEqual(e.encodeSeconds);
    }
  });

  it('builds no diagnostics event and calls no publish while the batch channels have no subscriber', async () => {
    const spies = [SAE_BATCH_SENT_CHANNEL, SAE_BATCH_SETTLED_CHANNEL].map((name) => vi.spyOn(diagnostics.channel(name), 'publish'));
    try {
      const batcher = new MicroBatcher({ pool: new FakePool(1), dIn: D_IN, maxBatchRows: 2, maxDelayMs: 60_000 });
      const batches = collect(batcher);
      batcher.push(markerRows([0, 1, 2, 3]), 4, meta(['a', 'a', 'b', 'b'], Int32Array.of(0, 1, 0, 1)));
      await batcher.drain();
      expect(batches).toHaveLength(2);
      expect(spies.map((spy) => spy.mock.calls.length)).toEqual([0, 0]);
    } finally {
      for (const spy of spies) spy.mockRestore();
    }
  });

  describe('under overload', () => {
    const MARK = 100;
    const MAX = 200;

    /** Pushes `count` single-row pushes into a batcher whose pool never answers; records the queue before each. */
    function overload(count: number): { batcher: MicroBatcher; pool: FakePool; queuedBefore: number[] } {
      const pool = new FakePool(1, [0], true);
      const batcher = new MicroBatcher({ pool, dIn: D_IN, maxBatchRows: 10, maxDelayMs: 60_000, maxQueuedRows: MAX, sampleAboveRows: MARK });
      const queuedBefore: number[] = [];
      for (let i = 0; i < count; i++) {
        queuedBefore.push(batcher.queuedRows);
        batcher.push(markerRows([i]), 1, meta(['r'], Int32Array.of(i)));
      }
      return { batcher, pool, queuedBefore };
    }

    it('admits rows above sampleAboveRows with a probability falling linearly from 1 at the mark to 0 at maxQueuedRows', async () => {
      const { batcher, pool, queuedBefore } = overload(2000);
      const { rowsIn, rowsDropped } = batcher.stats;
      const admitted = rowsIn - rowsDropped.sampled - rowsDropped.queue_full;
      // Over the whole run: admitted rows = Σ p(queue before the row), within one row.
      const expected = queuedBefore.reduce((sum, q) => sum + admissionProbability(q, MARK, MAX), 0);
      expect(Math.abs(admitted - expected)).toBeLessThan(1);
      // In every tenth of the sampled range as well: while the queue was in [lo, lo + 10), the
      // pushes made there, weighted by p, add up to the 10 rows admitted there (within one row), so
      // the fraction admitted follows the line and not only its average.
      for (let lo = MARK; lo < MAX; lo += 10) {
        const weighted = queuedBefore.filter((q) => q >= lo && q < lo + 10).reduce((sum, q) => sum + admissionProbability(q, MARK, MAX), 0);
        expect(Math.abs(weighted - 10)).toBeLessThan(1);
      }
      // At p = 1/2 about every other row got in; at p = 1/100 (one row from the limit) about one in a hundred.
      const pushesAt = (level: number): number => queuedBefore.filter((q) => q === level).length;
      expect(pushesAt(150)).toBeGreaterThanOrEqual(1);
      expect(pushesAt(150)).toBeLessThanOrEqual(2);
      expect(pushesAt(MAX - 1)).toBeGreaterThanOrEqual(99);
      expect(pushesAt(MAX - 1)).toBeLessThanOrEqual(100);
      // Below the mark nothing was sampled; at the limit everything was dropped as queue_full.
      expect(rowsDropped.sampled).toBe(queuedBefore.filter((q) => q >= MARK && q < MAX).length - MAX + MARK);
      expect(rowsDropped.queue_full).toBe(queuedBefore.filter((q) => q >= MAX).length);
      expect(rowsDropped.queue_full).toBeGreaterThan(0);
      expect(batcher.queuedRows).toBe(MAX);
      pool.release();
      await batcher.drain();
      expect(batcher.stats.rowsEncoded).toBe(admitted);
    });

    it('samples deterministically: the same pushes admit the same rows', async () => {
      const delivered: number[][] = [];
      for (let run = 0; run < 2; run++) {
        const { batcher, pool } = overload(1000);
        const batches = collect(batcher);
        pool.release();
        await batcher.drain();
        delivered.push(batches.flatMap((b) => Array.from(b.positions)));
      }
      expect(delivered[0].length).toBeGreaterThan(MARK);
      expect(delivered[1]).toEqual(delivered[0]);
    });

    it('samples the rows of one push individually and keeps each admitted row with its own request id and position', async () => {
      // One push of 400 rows alternating between two requests; marker = 1000 for b, plus the position.
      const count = 400;
      const requestIds = Array.from({ length: count }, (_, i) => (i % 2 === 0 ? 'a' : 'b'));
      const positions = Int32Array.from({ length: count }, (_, i) => i);
      const markers = markerRows(Array.from(positions, (p, i) => (requestIds[i] === 'b' ? 1000 : 0) + p));
      const run = async (rowsPerPush: number): Promise<{ rows: { position: number; id: string; marker: number }[]; sampled: number }> => {
        const pool = new FakePool(1, [0], true);
        const batcher = new MicroBatcher({ pool, dIn: D_IN, maxBatchRows: 10, maxDelayMs: 60_000, maxQueuedRows: MAX, sampleAboveRows: MARK });
        const batches = collect(batcher);
        for (let start = 0; start < count; start += rowsPerPush) {
          batcher.push(markers.subarray(start * D_IN, (start + rowsPerPush) * D_IN), rowsPerPush, meta(requestIds.slice(start, start + rowsPerPush), positions.subarray(start, start + rowsPerPush)));
        }
        const sampled = batcher.stats.rowsDropped.sampled;
        expect(batcher.stats.rowsIn).toBe(count);
        // The first batch is with the (blocked) pool; the rest queue up.
        expect(batcher.queuedRows).toBe(count - sampled - batcher.stats.rowsDropped.queue_full - 10);
        pool.release();
        await batcher.drain();
        return { rows: batches.flatMap((b) => Array.from(b.positions, (position, r) => ({ position, id: b.requestIds[b.rowRequestIndexes[r]], marker: b.values[r * TOP_K] }))), sampled };
      };
      const whole = await run(count);
      const oneByOne = await run(1);
      expect(whole.sampled).toBeGreaterThan(0);
      // Deciding row by row inside a push admits exactly the rows that one-row pushes would.
      expect(whole.rows).toEqual(oneByOne.rows);
      expect(whole.rows).toHaveLength(count - whole.sampled);
      for (const row of whole.rows) {
        expect(row.id).toBe(row.position % 2 === 0 ? 'a' : 'b');
        expect(row.marker).toBe((row.id === 'b' ? 1000 : 0) + row.position);
      }
      // Everything up to the mark got in, in order; after it, a strictly increasing subset.
      expect(whole.rows.slice(0, 10 + MARK).map((r) => r.position)).toEqual(Array.from({ length: 10 + MARK }, (_, i) => i));
      const later = whole.rows.slice(10 + MARK).map((r) => r.position);
      expect(later.every((p, i) => i === 0 || p > later[i - 1])).toBe(true);
      expect(later[0]).toBeGreaterThanOrEqual(10 + MARK);
    });

    it('counts every row once: rowsIn equals rows encoded plus every drop reason, and push returns at once however full the queue', async () => {
      const failures = new Map<number, Error>([
        [1, new SaegateError('SAEGATE_ERR_WORKER_EXITED', ['SAE worker: exit code 1'])],
        [2, new Error('onnxruntime: bad input')],
        [3, new SaegateError('SAEGATE_ERR_WORKER_EXITED', ['SAE worker: exit code 1'])],
      ]);
      const pool = new FlakyPool(1, failures);
      const batcher = new MicroBatcher({ pool, dIn: D_IN, maxBatchRows: 8, maxDelayMs: 60_000, maxQueuedRows: 64, sampleAboveRows: 32 });
      const batches = collect(batcher);
      const { stats } = batcher;
      const dropped = (): number => stats.rowsDropped.queue_full + stats.rowsDropped.sampled + stats.rowsDropped.worker_exited + stats.rowsDropped.encode_failed;
      for (let i = 0; i < 3000; i++) {
        batcher.push(markerRows([i, i, i]), 3, meta(['r', 'r', 'r'], Int32Array.of(3 * i, 3 * i + 1, 3 * i + 2)));
        // Accounted before push returns: every row is queued, with the pool (the one batch of 8
        // sent so far, which never comes back while the pool is held) or dropped.
        expect(stats.rowsIn).toBe(3 * (i + 1));
        expect(stats.rowsIn).toBe(dropped() + batcher.queuedRows + 8 * stats.batches);
      }
      expect(batcher.queuedRows).toBe(64);
      pool.release();
      await batcher.drain();
      expect(stats.rowsDropped.queue_full).toBeGreaterThan(0);
      expect(stats.rowsDropped.sampled).toBeGreaterThan(0);
      expect(stats.rowsDropped.worker_exited).toBe(16);
      expect(stats.rowsDropped.encode_failed).toBe(8);
      expect(stats.rowsIn).toBe(stats.rowsEncoded + dropped());
      expect(stats.rowsEncoded).toBe(8 + 64 - 24);
      expect(batches.reduce((n, b) => n + b.rowCount, 0)).toBe(stats.rowsEncoded);
    });

    it('refuses a sampling mark above maxQueuedRows with SAEGATE_ERR_CONFIG naming the option', () => {
      expect(() => new MicroBatcher({ pool: new FakePool(1), dIn: D_IN, maxQueuedRows: 10, sampleAboveRows: 11 })).toThrow(/sampleAboveRows/);
    });
  });

  describe('with a real SAE pool', () => {
    /**
     * `rowCount` seeded rows as f32, as f16 bits, and as the exact f32 value of each half (what
     * the f16 path must encode identically), with a `meta(id)` tagging every row with one request.
     */
    function halfRows(seed: number, rowCount: number): { f32: Float32Array; f16: Uint16Array; rounded: Float32Array; metaOf: (id: string) => PushMeta } {
      const f32 = uniform(rng(seed), rowCount * D_IN, -2, 2);
      const f16 = new Uint16Array(f32.length);
      f32ToF16(f32, f16);
      const rounded = Float32Array.from(f16, f16BitsToF32);
      const metaOf = (id: string): PushMeta => meta(Array<string>(rowCount).fill(id), Int32Array.from({ length: rowCount }, (_, k) => k));
      return { f32, f16, rounded, metaOf };
    }

    let pool: SaePool | null = null;
    afterEach(async () => {
      await pool?.close();
      pool = null;
    });

    it('encodes f16 rows as the same rows in f32 within f16 rounding', async () => {
      pool = await SaePool.create({ sae: makeSmallSae(), topK: TOP_K, intraOpThreads: 1 });
      const batcher = new MicroBatcher({ pool, dIn: D_IN, maxBatchRows: 16, maxDelayMs: 1 });
      const batches = collect(batcher);
      const rowCount = 10;
      const { f32, f16, rounded, metaOf } = halfRows(11, rowCount);
      batcher.push(f16, rowCount, metaOf('f16'));
      await batcher.drain();
      batcher.push(rounded, rowCount, metaOf('rounded'));
      await batcher.drain();
      batcher.push(f32, rowCount, metaOf('f32'));
      await batcher.drain();
      const [fromF16, fromRounded, fromF32] = batches;
      expect(fromF16.requestIds[0]).toBe('f16');
      expect(Array.from(fromF16.values)).toEqual(Array.from(fromRounded.values));
      expect(Array.from(fromF16.indices)).toEqual(Array.from(fromRounded.indices));
      // Against the unrounded input: f16 keeps 11 significant bits (relative error ≤ 2^-11 per
      // input), so outputs agree to a small multiple of that.
      expect(fromF16.l0.some((v) => v > 0)).toBe(true);
      for (let i = 0; i < fromF32.values.length; i++) expect(Math.abs(fromF16.values[i] - fromF32.values[i])).toBeLessThan(2e-2);
      expect(batcher.stats.rowsEncoded).toBe(3 * rowCount);
    });

    it('keeps f16 and f32 rows of one hook in separate batches when they arrive interleaved, each encoded right', async () => {
      pool = await SaePool.create({ sae: makeSmallSae(), topK: TOP_K, intraOpThreads: 1 });
      const batcher = new MicroBatcher({ pool, dIn: D_IN, maxBatchRows: 64, maxDelayMs: 50 });
      const batches = collect(batcher);
      const rowCount = 6;
      const { f16, rounded, metaOf } = halfRows(12, rowCount);
      // No drain in between: without the type switch closing the batch these would share one.
      batcher.push(f16, rowCount, metaOf('a'));
      batcher.push(f16, rowCount, metaOf('a'));
      batcher.push(rounded, rowCount, metaOf('b'));
      batcher.push(f16, rowCount, metaOf('c'));
      await batcher.drain();
      expect(batches.map((b) => [b.requestIds[0], b.rowCount])).toEqual([['a', 2 * rowCount], ['b', rowCount], ['c', rowCount]]);
      const first = (b: SaeResultBatch): number[] => Array.from(b.values.subarray(0, rowCount * TOP_K));
      // Every batch holds the same rows (f16 bits or their exact f32 values): identical results.
      expect(first(batches[0])).toEqual(first(batches[1]));
      expect(first(batches[2])).toEqual(first(batches[1]));
      expect(Array.from(batches[0].values.subarray(rowCount * TOP_K))).toEqual(first(batches[1]));
      expect(batches[1].l0.some((v) => v > 0)).toBe(true);
    });
  });
});
