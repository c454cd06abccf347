import { describe, expect, it } from 'vitest';
import { encodedRowsFromResults } from '../../../src/monitor/adapter.js';
import { checkEncodedRows } from '../../../src/monitor/rows.js';
import type { SaeResultBatch } from '../../../src/sae/batcher.js';

function batch(): SaeResultBatch {
  return {
    hook: 'blocks.0.hook_resid_post',
    rowCount: 3,
    topK: 3,
    requestIds: ['a', 'b'],
    rowRequestIndexes: new Uint16Array([0, 1, 0]),
    positions: new Int32Array([0, 0, 1]),
    tokenIds: new Int32Array([-1, -1, -1]),
    tokenTexts: ['', '', ''],
    indices: new Int32Array([5, 2, -1, -1, -1, -1, 7, 1, 0]),
    values: new Float32Array([3, 1, 0, 0, 0, 0, 2.5, 2, 0.5]),
    l0: new Int32Array([2, 0, 3]),
    sqError: new Float32Array([0.1, 0.2, 0.3]),
    fvu: new Float32Array([0.01, 0.02, 0.03]),
  };
}

describe('encodedRowsFromResults', () => {
  it('drops −1 padding into CSR rows that keep order, values, L0, FVU and the request table', () => {
    const rows = encodedRowsFromResults(batch());
    checkEncodedRows(rows, 8);
    expect([...rows.offsets]).toEqual([0, 2, 2, 5]);
    expect([...rows.indices]).toEqual([5, 2, 7, 1, 0]);
    expect([...rows.values]).toEqual([3, 1, 2.5, 2, 0.5]);
    expect([...rows.l0]).toEqual([2, 0, 3]);
    expect([...rows.requestIndex]).toEqual([0, 1, 0]);
    expect(rows.requestIds).toEqual(['a', 'b']);
    expect(rows.projection).toBeUndefined();
  });

  it('carries a projection column when given', () => {
    const projection = new Float32Array([1, 2, 3]);
    expect(encodedRowsFromResults(batch(), projection).projection).toBe(projection);
  });
});
