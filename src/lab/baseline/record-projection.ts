/**
 * Recording a projection baseline offline (docs/monitor.md, "Projection monitors"): every corpus
 * document runs through a tap-speaking model server (the collector), each of its rows at the
 * projection's hook is projected on the unit direction (projection.ts), and each document becomes
 * one baseline document. The edges are the recorded rows' quantiles, fixed when the run ends.
 */
import type { ActivationCollector, CollectInputDocument, CollectProgress } from '../collect.js';
import type { Baseline } from '../../monitor/baseline.js';
import type { BaselineIdentity } from '../../monitor/baseline-recorder.js';
import { ProjectionBaselineRecorder, projectRows, type ProjectionSpec } from '../../monitor/projection.js';
import type { RecordProgress } from './record.js';

export interface RecordProjectionBaselineOptions {
  /** A started collector with a model server on its tap, collecting the projection's hook. */
  collector: ActivationCollector;
  /** The model server's OpenAI base URL. */
  upstream: string;
  projection: ProjectionSpec;
  documents: readonly CollectInputDocument[];
  /** Provenance fields besides counts and width. */
  identity: BaselineIdentity;
  /** Positions kept per document (the first ones). Default: all. */
  maxTokensPerDocument?: number;
  /** Extra request-body fields (e.g. the reference server's `steering`). */
  requestFields?: Readonly<Record<string, unknown>>;
  signal?: AbortSignal;
  onProgress?: (progress: RecordProgress) => void;
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
