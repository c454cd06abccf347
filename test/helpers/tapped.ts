/**
 * Collectors for tests and benchmarks that check what the SAE and the tap saw, per request and
 * position: SAE result rows as dense feature vectors, and tapped f16 rows decoded to f32.
 */
import { f16ToF32 } from '../../src/common/f16.js';
import type { SaeResultBatch } from '../../src/sae/batcher.js';
import type { ActivationsFrame } from '../../src/tap/server.js';

/** requestId → position → values. */
export type ByRequest = Map<string, Map<number, Float32Array>>;

function put(into: ByRequest, id: string, position: number, values: Float32Array): void {
  let byPosition = into.get(id);
  if (!byPosition) into.set(id, (byPosition = new Map()));
  byPosition.set(position, values);
}

/** Adds each result row of the requests `keep` accepts as all `dSae` feature values (0 where inactive). */
export function addDenseFeatures(into: ByRequest, batch: SaeResultBatch, dSae: number, keep: (requestId: string) => boolean = () => true): void {
  for (let r = 0; r < batch.rowCount; r++) {
    const id = batch.requestIds[batch.rowRequestIndexes[r]];
    if (!keep(id)) continue;
    const values = new Float32Array(dSae);
    for (let k = 0; k < batch.topK; k++) {
      const index = batch.indices[r * batch.topK + k];
      if (index >= 0) values[index] = batch.values[r * batch.topK + k];
    }
    put(into, id, batch.positions[r], values);
  }
}

/** Adds each f16 row the frame carries at `hook`, decoded to f32. */
export function addTappedRows(into: ByRequest, frame: ActivationsFrame, hook: string): void {
  if (frame.hook !== hook || frame.dtype !== 'f16') return;
  const d = frame.dModel;
  for (let r = 0; r < frame.rowCount; r++) {
    const row = new Float32Array(d);
    f16ToF32(frame.data.subarray(r * d, (r + 1) * d), row);
    put(into, frame.requestIds[frame.rowRequestIndexes[r]], frame.positions[r], row);
  }
}
