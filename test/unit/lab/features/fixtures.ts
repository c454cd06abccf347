/**
 * Builders for feature-statistics tests: documents written as one `{feature: activation}` object
 * per token, and report metadata.
 */
import type { FeatureDocument, FeatureReportMeta } from '../../../../src/lab/features/accumulator.js';

/**
 * A document whose token p has the active features of `rows[p]` (feature index → activation),
 * packed into `k` slots per row (default: the most any row needs, at least 1), unused slots −1.
 * Token texts default to `t0`, `t1`, ….
 */
export function sparseDocument(id: string, rows: readonly Record<number, number>[], options: { texts?: readonly string[]; k?: number } = {}): FeatureDocument {
  const k = options.k ?? Math.max(1, ...rows.map((row) => Object.keys(row).length));
  const indices = new Int32Array(rows.length * k).fill(-1);
  const values = new Float32Array(rows.length * k);
  rows.forEach((row, p) => {
    Object.entries(row).forEach(([feature, activation], s) => {
      indices[p * k + s] = Number(feature);
      values[p * k + s] = activation;
    });
  });
  const tokens = rows.map((_, p) => ({ id: p, text: options.texts?.[p] ?? `t${p}` }));
  return { id, tokens, indices, values, k };
}

/** Report metadata for an SAE of `dSae` latents. */
export function reportMeta(dSae: number): FeatureReportMeta {
  return {
    sae: { path: '/saes/test', hookName: 'blocks.1.hook_resid_post', dIn: 8, dSae, architecture: 'topk', k: 4 },
    model: 'test-model',
    corpus: { path: 'corpus.jsonl' },
    createdAt: '2026-01-02T03:04:05.000Z',
  };
}
