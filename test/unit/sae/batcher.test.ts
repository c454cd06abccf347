import { afterEach, describe, expect, it } from 'vitest';
import { f16BitsToF32, f32ToF16 } from '../../../src/common/f16.js';
import { MicroBatcher, type SaeResultBatch } from '../../../src/sae/batcher.js';
import { SaePool, type EncodeResult, type SaeEncoder } from '../../../src/sae/pool.js';
import { D_IN, makeSmallSae, rng, uniform } from './sae-fixture.js';

const TOP_K = 4;

/**
 * A pool stand-in: "encodes" a row into values[0] = its first input value, l0 = row index in the
 * batch. `delays` (ms, per call, cycled) lets batches finish out of order; `hold` blocks every
 * encode until `release()` is called.
 */
class FakePool implements SaeEncoder {
  readonly topK = TOP_K;
  calls = 0;
  private held: (() => void)[] = [];
  constructor(
    readonly workers: number,
    private readonly delays: number[] = [0],
    private hold = false,
  ) {}

  encode(rows: Float32Array, rowCount: number): Promise<EncodeResult> {
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

/** One row whose every value is `marker`. */
function markerRows(markers: number[]): Float32Array {
  const rows = new Float32Array(markers.length * D_IN);
  markers.forEach((m, r) => rows.fill(m, r * D_IN, (r + 1) * D_IN));
  return rows;
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
        batcher.push(markerRows(markers), positions.length, { requestIds: Array(positions.length).fill(id) as string[], positions, hook: 'blocks.0.hook_resid_post' });
      }
    }
    await batcher.drain();
    const seen: Record<string, number[]> = { a: [], b: [] };
    for (const batch of batches) {
      expect(batch.hook).toBe('blocks.0.hook_resid_post');
      expect(batch.rowCount).toBeLessThanOrEqual(3);
      for (let r = 0; r < batch.rowCount; r++) {
        const id = batch.requestIds[r];
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

  it('fills batches up to maxBatchRows and flushes the remainder after maxDelayMs', async () => {
    const pool = new FakePool(1);
    const batcher = new MicroBatcher({ pool, dIn: D_IN, maxBatchRows: 8, maxDelayMs: 5 });
    const batches = collect(batcher);
    for (let i = 0; i < 20; i++) batcher.push(markerRows([i]), 1, { requestIds: ['r'], positions: Int32Array.of(i), hook: 'h' });
    // No drain(): the 4-row remainder must go out on the deadline alone.
    await new Promise<void>((resolve) => {
      const check = (): void => void (batches.reduce((n, b) => n + b.rowCount, 0) === 20 ? resolve() : setTimeout(check, 2));
      check();
    });
    expect(batches.map((b) => b.rowCount)).toEqual([8, 8, 4]);
    expect(batcher.stats.batches).toBe(3);
    expect(batcher.stats.meanBatchRows).toBeCloseTo(20 / 3, 10);
  });

  it('drops activation rows and counts them when the SAE queue is full, without throwing or blocking push', async () => {
    const pool = new FakePool(1, [0], true);
    const batcher = new MicroBatcher({ pool, dIn: D_IN, maxBatchRows: 4, maxDelayMs: 1000, maxQueuedRows: 8 });
    const batches = collect(batcher);
    for (let i = 0; i < 100; i++) batcher.push(markerRows([i]), 1, { requestIds: ['r'], positions: Int32Array.of(i), hook: 'h' });
    // One batch (rows 0-3) went to the blocked pool; 8 more rows wait; the other 88 were dropped.
    expect(pool.calls).toBe(1);
    expect(batcher.stats.rowsIn).toBe(100);
    expect(batcher.stats.rowsDropped.queue_full).toBe(88);
    // A multi-row push into a full queue drops whole rows too.
    batcher.push(markerRows([500, 501, 502]), 3, { requestIds: ['r', 'r', 'r'], positions: Int32Array.of(500, 501, 502), hook: 'h' });
    expect(batcher.stats.rowsDropped.queue_full).toBe(91);
    pool.release();
    await batcher.drain();
    const delivered = batches.flatMap((b) => Array.from(b.positions));
    expect(delivered).toEqual(Array.from({ length: 12 }, (_, k) => k));
    expect(batcher.stats.rowsEncoded).toBe(12);
  });

  describe('with a real SAE pool', () => {
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
      const f32 = uniform(rng(11), rowCount * D_IN, -2, 2);
      const f16 = new Uint16Array(f32.length);
      f32ToF16(f32, f16);
      // The exact f32 value of each half: the f16 path must equal encoding these exactly.
      const rounded = Float32Array.from(f16, f16BitsToF32);
      const meta = (id: string): { requestIds: string[]; positions: Int32Array; hook: string } => ({ requestIds: Array(rowCount).fill(id) as string[], positions: Int32Array.from({ length: rowCount }, (_, k) => k), hook: 'h' });
      batcher.push(f16, rowCount, meta('f16'));
      await batcher.drain();
      batcher.push(rounded, rowCount, meta('rounded'));
      await batcher.drain();
      batcher.push(f32, rowCount, meta('f32'));
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
  });
});
