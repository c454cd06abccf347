/**
 * Recording a projection baseline offline (docs/monitor.md, "Projection monitors"): every corpus
 * document runs through a tap-speaking model server (the collector), each of its rows at the
 * projection's hook is projected on the unit direction (projection.ts), and each document becomes
 * one baseline document. The edges are the recorded rows' quantiles, fixed when the run ends.
 */
import type { CollectProgress } from '../collect.js';
import type { Baseline } from '../../monitor/baseline.js';
import { ProjectionBaselineRecorder, projectRows, type ProjectionSpec } from '../../monitor/projection.js';
import type { RecordRunOptions } from './record.js';

export interface RecordProjectionBaselineOptions extends RecordRunOptions {
  projection: ProjectionSpec;
}

/**
 * Runs the documents and records the baseline. Errors are the collector's (SAEGATE_ERR_COLLECT_*),
 * SAEGATE_ERR_MONITOR_ARGUMENT when every projection is equal (no edges), and the signal's reason.
 */
export async function recordProjectionBaseline(options: RecordProjectionBaselineOptions): Promise<{ baseline: Baseline; skipped: number }> {
  const recorder = new ProjectionBaselineRecorder();
  let progress: CollectProgress | null = null;
  let tokens = 0;
  for await (const doc of options.collector.collect(options.documents, {
    upstream: options.upstream,
    maxTokensPerDocument: options.maxTokensPerDocument,
    requestFields: options.requestFields,
    signal: options.signal,
    onProgress: (p) => (progress = p),
  })) {
    recorder.addRows(projectRows({ dtype: 'f32', data: doc.rows }, doc.tokenCount, options.projection.direction));
    recorder.endDocument();
    tokens += doc.tokenCount;
    options.onProgress?.({ documents: recorder.documentCount, total: options.documents.length, tokens });
  }
  return { baseline: recorder.toBaseline(options.identity), skipped: (progress as CollectProgress | null)?.skipped ?? 0 };
}
