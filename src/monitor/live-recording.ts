/**
 * Records a baseline (baseline.ts) from live traffic inside `saegate serve --record-baseline`: each
 * request is one document. Requests interleave in the SAE's batches, so every open request keeps its
 * own accumulator (a sparse map of firing counts, the L0/FVU histograms); a request's document is
 * closed when the monitor passes on the request's end (MonitorService delays ends by one assessment,
 * so rows sent before the end have been encoded), or when recording stops.
 *
 * Bounded: at most `maxOpenDocuments` requests are open at once; a new one beyond that closes the
 * least recently seen early (its document is kept, shorter). Documents are closed only with at
 * least one row.
 */
import { DEFAULT_FVU_EDGES, DEFAULT_L0_EDGES, binIndex, histogramEdges } from './histogram.js';
import { BASELINE_VERSION, parseBaseline, type Baseline, type BaselineDocument } from './baseline.js';
import type { EncodedRows } from './rows.js';

interface OpenDocument {
  tokens: number;
  fvuSum: number;
  counts: Map<number, number>;
  l0: number[];
  fvu: number[];
}

export interface LiveRecordingOptions {
  /** Model id, or a function read when the recording finishes (the tap's model id arrives later). */
  readonly model: string | (() => string);
  readonly sae: { readonly id: string; readonly hash: string };
  readonly hook: string;
  readonly dSae: number;
  readonly saegateVersion: string;
  readonly l0Edges?: readonly number[];
  readonly fvuEdges?: readonly number[];
  /** Requests accumulated at once. Default 1024. */
  readonly maxOpenDocuments?: number;
}

export class LiveBaselineRecording {
  private readonly l0Edges: Float64Array;
  private readonly fvuEdges: Float64Array;
  private readonly open = new Map<string, OpenDocument>();
  private readonly documents: BaselineDocument[] = [];
  private readonly maxOpen: number;
  /** Documents closed early because too many requests were open. */
  closedEarly = 0;

  constructor(private readonly options: LiveRecordingOptions) {
    this.l0Edges = histogramEdges('l0', options.l0Edges ?? DEFAULT_L0_EDGES);
    this.fvuEdges = histogramEdges('fvu', options.fvuEdges ?? DEFAULT_FVU_EDGES);
    this.maxOpen = options.maxOpenDocuments ?? 1024;
  }

  /** Documents closed so far. */
  get documentCount(): number {
    return this.documents.length;
  }

  /** Tokens in closed documents. */
  get tokens(): number {
    let total = 0;
    for (const doc of this.documents) total += doc.tokens;
    return total;
  }

  get openDocuments(): number {
    return this.open.size;
  }

  /** Adds a checked batch's rows to their requests' documents. */
  add(batch: EncodedRows): void {
    const docs = batch.requestIds.map((id) => this.documentFor(id));
    const { rows, offsets, indices, l0, fvu, requestIndex } = batch;
    for (let r = 0; r < rows; r++) {
      const doc = docs[requestIndex[r]];
      doc.tokens++;
      doc.fvuSum += fvu[r];
      doc.l0[binIndex(this.l0Edges, l0[r])]++;
      doc.fvu[binIndex(this.fvuEdges, fvu[r])]++;
      for (let i = offsets[r]; i < offsets[r + 1]; i++) doc.counts.set(indices[i], (doc.counts.get(indices[i]) ?? 0) + 1);
    }
  }

  /** The request ended: its document is closed. */
  ended(requestId: string): void {
    const doc = this.open.get(requestId);
    if (doc !== undefined) this.close(requestId, doc);
  }

  /** Closes every open document and returns the baseline (validated: parseBaseline). */
  finish(): Baseline {
    for (const [id, doc] of this.open) this.close(id, doc);
    const tokens = this.tokens;
    const baseline: Baseline = {
      version: BASELINE_VERSION,
      provenance: {
        model: typeof this.options.model === 'function' ? this.options.model() : this.options.model,
        sae: { id: this.options.sae.id, hash: this.options.sae.hash },
        hook: this.options.hook,
        dSae: this.options.dSae,
        tokens,
        documents: this.documents.length,
        createdAt: new Date().toISOString(),
        saegateVersion: this.options.saegateVersion,
      },
      bins: { l0: Array.from(this.l0Edges), fvu: Array.from(this.fvuEdges) },
      documents: this.documents.slice(),
    };
    return parseBaseline(baseline, 'live recording');
  }

  private documentFor(id: string): OpenDocument {
    let doc = this.open.get(id);
    if (doc !== undefined) {
      // Map order is insertion order: re-inserting keeps the least recently seen first.
      this.open.delete(id);
      this.open.set(id, doc);
      return doc;
    }
    if (this.open.size >= this.maxOpen) {
      const [oldestId, oldest] = this.open.entries().next().value as [string, OpenDocument];
      this.close(oldestId, oldest);
      this.closedEarly++;
    }
    doc = {
      tokens: 0,
      fvuSum: 0,
      counts: new Map(),
      l0: new Array<number>(this.l0Edges.length + 1).fill(0),
      fvu: new Array<number>(this.fvuEdges.length + 1).fill(0),
    };
    this.open.set(id, doc);
    return doc;
  }

  private close(id: string, doc: OpenDocument): void {
    this.open.delete(id);
    if (doc.tokens === 0) return;
    const features = [...doc.counts.keys()].sort((a, b) => a - b);
    this.documents.push({ tokens: doc.tokens, features, counts: features.map((f) => doc.counts.get(f)!), l0: doc.l0, fvu: doc.fvu, fvuSum: doc.fvuSum });
  }
}
