/**
 * Recording a drift baseline offline: every corpus document runs through a tap-speaking model
 * server (the collector, src/lab/collect.ts), its rows at the SAE's hook are encoded by the SAE
 * engine's worker pool, and the encoded rows go through the monitor's adapter into a
 * BaselineRecorder, one baseline document per corpus document. The same path serves
 * `saegate baseline record` and the drift study (test/bench/drift-study.ts), which records its
 * held-out and shifted traffic this way too.
 *
 * Rows are encoded in chunks of at most `ENCODE_ROWS`, so a long document never makes one huge
 * worker call; a document's chunks are added to the recorder's open document and closed together.
 */
import type { ActivationCollector, CollectInputDocument, CollectProgress } from '../collect.js';
import type { SaeResultBatch } from '../../sae/batcher.js';
import type { SaeEncoder } from '../../sae/pool.js';
import { encodedRowsFromResults } from '../../monitor/adapter.js';
import type { Baseline } from '../../monitor/baseline.js';
import { BaselineRecorder, type BaselineIdentity } from '../../monitor/baseline-recorder.js';

/** Rows per pool call. */
const ENCODE_ROWS = 2048;

/** What recording any baseline from a corpus takes: the documents and how to run them. */
export interface RecordRunOptions {
  /** A started collector with a model server on its tap, collecting the baseline's hook. */
  collector: ActivationCollector;
  /** The model server's OpenAI base URL. */
  upstream: string;
  /** The corpus documents; each becomes one baseline document. */
  documents: readonly CollectInputDocument[];
  /** Provenance fields besides counts and width. */
  identity: BaselineIdentity;
  /** Positions kept per document (the first ones). Default: all. */
  maxTokensPerDocument?: number;
  /** Extra request-body fields (e.g. the reference server's `steering`); see CollectOptions. */
  requestFields?: Readonly<Record<string, unknown>>;
  signal?: AbortSignal;
  /** Called after each recorded document. */
  onProgress?: (progress: RecordProgress) => void;
}

export interface RecordBaselineOptions extends RecordRunOptions {
  /** The SAE's worker pool; every active latent of a row is read unless the pool has a list cap. */
  pool: SaeEncoder;
  /** SAE input width (the model's d_model). */
  dIn: number;
  /** SAE width. */
  dSae: number;
}

export interface RecordProgress {
  /** Documents recorded so far. */
  documents: number;
  /** Corpus documents in all. */
  total: number;
  /** Tokens recorded so far. */
  tokens: number;
}

export interface RecordedBaseline {
  baseline: Baseline;
  /** Documents skipped because they did not fit the model's context. */
  skipped: number;
  /** Rows with more active latents than were listed, under a list cap (their weakest latents were not counted). */
  truncatedRows: number;
}

/**
 * Runs the documents and records the baseline. Errors are the collector's (SAEGATE_ERR_COLLECT_*),
 * the pool's (SAEGATE_ERR_WORKER_EXITED, onnxruntime's) and the signal's reason on abort.
 */
export async function recordBaseline(options: RecordBaselineOptions): Promise<RecordedBaseline> {
  const { pool, dIn, dSae } = options;
  const recorder = new BaselineRecorder({ dSae });
  let tokens = 0;
  let recorded = 0;
  let truncatedRows = 0;
  let progress: CollectProgress | null = null;
  const requestIds = [''];
  for await (const doc of options.collector.collect(options.documents, {
    upstream: options.upstream,
    maxTokensPerDocument: options.maxTokensPerDocument,
    requestFields: options.requestFields,
    signal: options.signal,
    onProgress: (p) => (progress = p),
  })) {
    const T = doc.tokenCount;
    requestIds[0] = doc.id;
    for (let start = 0; start < T; start += ENCODE_ROWS) {
      const n = Math.min(ENCODE_ROWS, T - start);
      const result = await pool.encode(doc.rows.slice(start * dIn, (start + n) * dIn), n);
      // Without a cap the list is as wide as the batch's largest L0, so only a capped list is short.
      for (let r = 0; r < n; r++) if (result.l0[r] > result.topK) truncatedRows++;
      const positions = new Int32Array(n);
      for (let r = 0; r < n; r++) positions[r] = start + r;
      const batch: SaeResultBatch = {
        hook: options.collector.hook,
        rowCount: n,
        topK: result.topK,
        requestIds,
        rowRequestIndexes: new Uint32Array(n),
        positions,
        tokenIds: doc.tokenIds.length >= start + n ? doc.tokenIds.slice(start, start + n) : new Int32Array(n).fill(-1),
        tokenTexts: [],
        indices: result.indices,
        values: result.values,
        l0: result.l0,
        sqError: result.sqError,
        fvu: result.fvu,
      };
      recorder.addRows(encodedRowsFromResults(batch));
    }
    recorder.endDocument();
    tokens += T;
    recorded++;
    options.onProgress?.({ documents: recorded, total: options.documents.length, tokens });
  }
  const skipped = (progress as CollectProgress | null)?.skipped ?? 0;
  return { baseline: recorder.toBaseline(options.identity), skipped, truncatedRows };
}
