/**
 * The engine boundary: turns an SAE result batch (src/sae/batcher.ts; fixed-width `topK` slots per
 * row, −1 padding) into the monitor's compact `EncodedRows` (CSR offsets, no padding). The batch's
 * request table is shared, not copied, so nothing is allocated per row beyond the typed columns.
 *
 * The engine lists every active latent of every row (a batch's list width is its largest L0), so the
 * CSR rows are the rows' full active sets and `l0` equals their lengths, unless the SAE runs with a
 * `topK` list cap (`--sae-top-k`), which cuts them.
 */
import type { SaeResultBatch } from '../sae/batcher.js';
import type { EncodedRows } from './rows.js';

/**
 * Columns of `batch` as `EncodedRows`. `projection`, when given, is a per-row projection column
 * (`batch.rowCount` entries) computed by the caller.
 */
export function encodedRowsFromResults(batch: SaeResultBatch, projection?: Float32Array): EncodedRows {
  const { rowCount: rows, topK, indices: slots, values: slotValues } = batch;
  const offsets = new Uint32Array(rows + 1);
  let nnz = 0;
  for (let r = 0; r < rows; r++) {
    const base = r * topK;
    for (let j = 0; j < topK; j++) if (slots[base + j] >= 0) nnz++;
    offsets[r + 1] = nnz;
  }
  const indices = new Uint32Array(nnz);
  const values = new Float32Array(nnz);
  let at = 0;
  for (let r = 0; r < rows; r++) {
    const base = r * topK;
    for (let j = 0; j < topK; j++) {
      const feature = slots[base + j];
      if (feature < 0) continue;
      indices[at] = feature;
      values[at] = slotValues[base + j];
      at++;
    }
  }
  const l0 = new Uint32Array(rows);
  for (let r = 0; r < rows; r++) l0[r] = Math.max(0, batch.l0[r]);
  const requestIndex = batch.rowRequestIndexes instanceof Uint32Array ? batch.rowRequestIndexes : Uint32Array.from(batch.rowRequestIndexes);
  return {
    rows,
    offsets,
    indices,
    values,
    l0,
    fvu: batch.fvu,
    requestIndex,
    requestIds: batch.requestIds,
    ...(projection !== undefined && { projection }),
  };
}
