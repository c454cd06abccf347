/**
 * The monitor's input: a batch of SAE-encoded rows (one row per token) in compact, CSR-style form.
 * Row `r`'s active latents are `indices[offsets[r] .. offsets[r + 1])` with activations
 * `values[offsets[r] .. offsets[r + 1])`. Per-row columns carry the row's L0, its fraction of
 * variance unexplained and the request it belongs to (an index into `requestIds`).
 *
 * The SAE engine's result batches are converted to this by an adapter at the engine boundary; the
 * monitor itself never sees a per-row object, so ingesting a batch allocates nothing per row.
 */
import { err } from '../common/errors.js';

/** One batch of encoded rows, column-major, as the monitor ingests it. */
export interface EncodedRows {
  /** Number of rows (tokens) in the batch. */
  readonly rows: number;
  /** `rows + 1` offsets into `indices`/`values`; `offsets[0] = 0`, non-decreasing. */
  readonly offsets: Uint32Array;
  /** Active latent indices, `< d_sae`, each row's in any order, none repeated within a row. */
  readonly indices: Uint32Array;
  /** Activation of each entry of `indices`. */
  readonly values: Float32Array;
  /**
   * Active latents per row (`rows` entries). Usually `offsets[r + 1] − offsets[r]`, but an adapter
   * that keeps only a row's strongest latents records the full count here.
   */
  readonly l0: Uint32Array;
  /** Fraction of variance unexplained per row (`rows` entries): ‖x − x̂‖² / ‖x − mean(x)‖². */
  readonly fvu: Float32Array;
  /** Per row, the index into `requestIds` of the request the row belongs to (`rows` entries). */
  readonly requestIndex: Uint32Array;
  /** Request ids referenced by `requestIndex`. */
  readonly requestIds: readonly string[];
  /**
   * Optional per-row scalar projection of the activation on a watched direction (e.g. a steering
   * vector), binned into the projection histogram when the monitor is configured with projection edges.
   */
  readonly projection?: Float32Array;
}

/**
 * Checks a batch's shape against `dSae` before anything is counted, so a bad batch changes no state.
 * O(rows + nnz) comparisons, no allocation. Throws SAEGATE_ERR_MONITOR_ARGUMENT naming the problem.
 */
export function checkEncodedRows(batch: EncodedRows, dSae: number): void {
  const { rows, offsets, indices, values } = batch;
  if (!Number.isInteger(rows) || rows < 0) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `rows must be a non-negative integer, got ${rows}`);
  if (offsets.length !== rows + 1) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `offsets has ${offsets.length} entries, expected rows + 1 = ${rows + 1}`);
  if (offsets[0] !== 0) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `offsets[0] is ${offsets[0]}, expected 0`);
  for (let r = 0; r < rows; r++) {
    if (offsets[r + 1] < offsets[r]) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `offsets decrease at row ${r}`);
  }
  const nnz = offsets[rows];
  if (indices.length < nnz || values.length < nnz) {
    throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `offsets end at ${nnz} but indices has ${indices.length} and values ${values.length} entries`);
  }
  for (const [name, column] of [['l0', batch.l0], ['fvu', batch.fvu], ['requestIndex', batch.requestIndex]] as const) {
    if (column.length !== rows) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `${name} has ${column.length} entries, expected rows = ${rows}`);
  }
  if (batch.projection !== undefined && batch.projection.length !== rows) {
    throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `projection has ${batch.projection.length} entries, expected rows = ${rows}`);
  }
  for (let i = 0; i < nnz; i++) {
    if (indices[i] >= dSae) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `feature index ${indices[i]} at entry ${i} is outside d_sae = ${dSae}`);
  }
  const requests = batch.requestIds.length;
  for (let r = 0; r < rows; r++) {
    if (batch.requestIndex[r] >= requests) {
      throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `row ${r} has request index ${batch.requestIndex[r]} but only ${requests} request ids`);
    }
  }
}
