/** Builders for the monitor's compact encoded-row batches (src/monitor/rows.ts). */
import type { EncodedRows } from '../../src/monitor/rows.js';

/** One row as a test writes it: active features with their activations. */
export interface TestRow {
  readonly request?: string;
  readonly features: readonly (readonly [feature: number, value: number])[];
  /** Default: the number of features. */
  readonly l0?: number;
  /** Default 0.1. */
  readonly fvu?: number;
  readonly projection?: number;
}

/** Packs `rows` into an `EncodedRows` batch (request ids in order of first appearance; default `r0`). */
export function encodedRows(rows: readonly TestRow[]): EncodedRows {
  const offsets = new Uint32Array(rows.length + 1);
  const nnz = rows.reduce((sum, row) => sum + row.features.length, 0);
  const indices = new Uint32Array(nnz);
  const values = new Float32Array(nnz);
  const l0 = new Uint32Array(rows.length);
  const fvu = new Float32Array(rows.length);
  const requestIndex = new Uint32Array(rows.length);
  const projection = new Float32Array(rows.length);
  const requestIds: string[] = [];
  let at = 0;
  rows.forEach((row, r) => {
    for (const [feature, value] of row.features) {
      indices[at] = feature;
      values[at] = value;
      at++;
    }
    offsets[r + 1] = at;
    l0[r] = row.l0 ?? row.features.length;
    fvu[r] = row.fvu ?? 0.1;
    projection[r] = row.projection ?? 0;
    const id = row.request ?? 'r0';
    let index = requestIds.indexOf(id);
    if (index < 0) index = requestIds.push(id) - 1;
    requestIndex[r] = index;
  });
  return { rows: rows.length, offsets, indices, values, l0, fvu, requestIndex, requestIds, projection };
}
