import { describe, expect, it } from 'vitest';
import { ActivationBuffer, InMemoryRows } from '../../../src/lab/activation-buffer.js';
import { expectSaegateError } from '../../helpers/errors.js';

const D = 3;

/** Rows 0..count-1 (shifted by `first`), row r filled with [r, r + 0.25, r + 0.5] so a row names itself. */
function labelledRows(count: number, first = 0): Float32Array {
  const rows = new Float32Array(count * D);
  for (let r = 0; r < count; r++) for (let d = 0; d < D; d++) rows[r * D + d] = first + r + d * 0.25;
  return rows;
}

/** The labels of a batch's rows, checking each row is intact. */
function labels(batch: Float32Array): number[] {
  const out: number[] = [];
  let broken = -1;
  for (let r = 0; r < batch.length / D; r++) {
    const label = batch[r * D];
    for (let d = 0; d < D; d++) if (batch[r * D + d] !== label + d * 0.25) broken = r;
    out.push(label);
  }
  expect(broken).toBe(-1);
  return out;
}

/** Feeds `total` labelled rows in chunks of `chunk` and returns every batch's labels, in order (copied). */
function run(options: { capacityRows: number; batchRows: number; seed: number }, total: number, chunk: number): number[][] {
  const buffer = new ActivationBuffer({ dIn: D, ...options });
  const batches: number[][] = [];
  const drain = (): void => {
    for (let batch = buffer.nextBatch(); batch !== null; batch = buffer.nextBatch()) batches.push(labels(batch));
  };
  for (let start = 0; start < total; start += chunk) {
    const count = Math.min(chunk, total - start);
    const rows = labelledRows(count, start);
    for (let done = 0; done < count; ) {
      done += buffer.add(rows.subarray(done * D), count - done);
      drain();
    }
  }
  buffer.finish();
  drain();
  return batches;
}

describe('ActivationBuffer', () => {
  it('hands out every row added exactly once, intact, in batches of batchRows and a shorter last one', () => {
    const batches = run({ capacityRows: 40, batchRows: 8, seed: 1 }, 203, 7);
    expect(batches.flat().sort((a, b) => a - b)).toEqual(Array.from({ length: 203 }, (_, i) => i));
    expect(batches.slice(0, -1).every((b) => b.length === 8)).toBe(true);
    expect(batches.at(-1)!.length).toBe(203 % 8);
  });

  it('gives the same batches for the same seed and input, and different ones for another seed', () => {
    const a = run({ capacityRows: 64, batchRows: 8, seed: 42 }, 500, 13);
    const b = run({ capacityRows: 64, batchRows: 8, seed: 42 }, 500, 13);
    const c = run({ capacityRows: 64, batchRows: 8, seed: 43 }, 500, 13);
    expect(b).toEqual(a);
    expect(c).not.toEqual(a);
    expect(c.flat().sort((x, y) => x - y)).toEqual(a.flat().sort((x, y) => x - y));
  });

  it('hands out nothing until it is full, then half of it, and takes no rows while batches wait', () => {
    const buffer = new ActivationBuffer({ dIn: D, capacityRows: 20, batchRows: 4, seed: 7 });
    expect(buffer.byteLength).toBe(20 * D * 4);
    expect(buffer.add(labelledRows(19))).toBe(19);
    expect(buffer.nextBatch()).toBeNull();
    // Only one more row fits.
    expect(buffer.add(labelledRows(5, 19))).toBe(1);
    const first = buffer.nextBatch()!;
    expect(first.length).toBe(4 * D);
    expect(buffer.add(labelledRows(1, 20))).toBe(0);
    // Half of 20 rows is 10, whole batches of it 8: two batches, then it waits for rows.
    expect(buffer.nextBatch()).not.toBeNull();
    expect(buffer.nextBatch()).toBeNull();
    expect(buffer.rowCount).toBe(12);
    expect(buffer.add(labelledRows(10, 20))).toBe(8);
    expect(buffer.nextBatch()).not.toBeNull();
  });

  it('mixes: the first batches sample the whole buffer, not its oldest rows', () => {
    const batches = run({ capacityRows: 1000, batchRows: 100, seed: 3 }, 1000, 1000);
    const firstHalf = batches.slice(0, 5).flat();
    expect(firstHalf.some((l) => l >= 500)).toBe(true);
    expect(firstHalf.some((l) => l < 500)).toBe(true);
    const mean = firstHalf.reduce((s, l) => s + l, 0) / firstHalf.length;
    expect(Math.abs(mean - 499.5)).toBeLessThan(40);
  });

  it('picks each row for the first half with probability one half, over many seeds', () => {
    const picked = new Array<number>(8).fill(0);
    const firstSlot = new Array<number>(8).fill(0);
    const seeds = 4000;
    for (let seed = 0; seed < seeds; seed++) {
      const buffer = new ActivationBuffer({ dIn: D, capacityRows: 8, batchRows: 2, seed });
      buffer.add(labelledRows(8));
      const out = [...labels(buffer.nextBatch()!), ...labels(buffer.nextBatch()!)];
      for (const l of out) picked[l]++;
      firstSlot[out[0]]++;
    }
    for (const count of picked) expect(count / seeds).toBeCloseTo(0.5, 1);
    for (const count of firstSlot) expect(count / seeds).toBeCloseTo(1 / 8, 1);
  });

  it('refuses a capacity below two batches, rows shorter than their count, and rows after finish', () => {
    expectSaegateError(() => new ActivationBuffer({ dIn: D, capacityRows: 7, batchRows: 4, seed: 1 }), 'SAEGATE_ERR_CONFIG', 'capacityRows', '8');
    expectSaegateError(() => new ActivationBuffer({ dIn: 0, capacityRows: 8, batchRows: 4, seed: 1 }), 'SAEGATE_ERR_CONFIG', 'dIn');
    const buffer = new ActivationBuffer({ dIn: D, capacityRows: 8, batchRows: 4, seed: 1 });
    expectSaegateError(() => buffer.add(new Float32Array(5), 2), 'SAEGATE_ERR_ARGUMENT', '2 rows of 3 need 6 values, got 5');
    buffer.finish();
    expectSaegateError(() => buffer.add(new Float32Array(3)), 'SAEGATE_ERR_ARGUMENT', 'finished');
  });
});

describe('InMemoryRows', () => {
  it('visits every row once per epoch, in an order fixed by the seed', () => {
    const data = new InMemoryRows(labelledRows(50), D);
    // Batches share one buffer: read each before taking the next.
    const epoch = (seed: number): number[] => {
      const order: number[] = [];
      for (const batch of data.epochBatches(8, seed)) order.push(...labels(batch));
      return order;
    };
    const a = epoch(1);
    expect([...a].sort((x, y) => x - y)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(epoch(1)).toEqual(a);
    expect(epoch(2)).not.toEqual(a);
    expect(a).not.toEqual(Array.from({ length: 50 }, (_, i) => i));
  });

  it('gathers every batch into one reused buffer, shorter at the end unless dropLast', () => {
    const source = labelledRows(50);
    const data = new InMemoryRows(source, D);
    const buffers = new Set<ArrayBufferLike>();
    const sizes: number[] = [];
    for (const batch of data.epochBatches(8, 5)) {
      buffers.add(batch.buffer);
      sizes.push(batch.length / D);
    }
    for (const batch of data.epochBatches(8, 6)) buffers.add(batch.buffer);
    expect(buffers.size).toBe(1);
    expect(sizes).toEqual([8, 8, 8, 8, 8, 8, 2]);
    expect([...data.epochBatches(8, 5, { dropLast: true })].length).toBe(6);
    // The source rows are left as they were.
    expect(labels(source)).toEqual(Array.from({ length: 50 }, (_, i) => i));
  });

  it('refuses rows that are not a whole number of rows', () => {
    expectSaegateError(() => new InMemoryRows(new Float32Array(10), D), 'SAEGATE_ERR_CONFIG', 'multiple of dIn (3)');
  });
});
