/**
 * Records a baseline (baseline.ts) from encoded rows, one document at a time: `addRows` for each
 * batch of the open document, `endDocument` to close it. A document is whatever the caller treats
 * as one independent unit of traffic (a corpus document, a request); the calibration bootstraps
 * whole documents, so rows within one may be as correlated as they like.
 *
 * The open document is counted in a dense `d_sae` Uint32Array plus the list of latents touched, so
 * closing it costs O(touched), not O(d_sae).
 */
import { err } from '../common/errors.js';
import { DEFAULT_FVU_EDGES, DEFAULT_L0_EDGES, binIndex, histogramEdges } from './histogram.js';
import { checkEncodedRows, type EncodedRows } from './rows.js';
import { BASELINE_VERSION, type Baseline, type BaselineDocument, type BaselineProvenance } from './baseline.js';

export interface BaselineRecorderOptions {
  readonly dSae: number;
  /** Default `DEFAULT_L0_EDGES`. */
  readonly l0Edges?: readonly number[];
  /** Default `DEFAULT_FVU_EDGES`. */
  readonly fvuEdges?: readonly number[];
  /** Projection histogram edges; none when absent (then rows' `projection` is ignored). */
  readonly projectionEdges?: readonly number[];
}

/** Provenance fields the caller supplies; token and document counts and d_sae come from the recorder. */
export type BaselineIdentity = Omit<BaselineProvenance, 'tokens' | 'documents' | 'dSae' | 'createdAt'> & { createdAt?: string };

export class BaselineRecorder {
  readonly dSae: number;
  private readonly l0Edges: Float64Array;
  private readonly fvuEdges: Float64Array;
  private readonly projectionEdges: Float64Array | null;
  private readonly documents: BaselineDocument[] = [];
  private readonly counts: Uint32Array;
  private touched: number[] = [];
  private tokens = 0;
  private fvuSum = 0;
  private l0Hist: number[];
  private fvuHist: number[];
  private projectionHist: number[] | null;

  constructor(options: BaselineRecorderOptions) {
    if (!Number.isInteger(options.dSae) || options.dSae <= 0) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `dSae must be a positive integer, got ${options.dSae}`);
    this.dSae = options.dSae;
    this.l0Edges = histogramEdges('l0', options.l0Edges ?? DEFAULT_L0_EDGES);
    this.fvuEdges = histogramEdges('fvu', options.fvuEdges ?? DEFAULT_FVU_EDGES);
    this.projectionEdges = options.projectionEdges === undefined ? null : histogramEdges('projection', options.projectionEdges);
    this.counts = new Uint32Array(this.dSae);
    this.l0Hist = new Array<number>(this.l0Edges.length + 1).fill(0);
    this.fvuHist = new Array<number>(this.fvuEdges.length + 1).fill(0);
    this.projectionHist = this.projectionEdges === null ? null : new Array<number>(this.projectionEdges.length + 1).fill(0);
  }

  /** Adds a batch of rows to the open document (their `requestIndex` is ignored). */
  addRows(batch: EncodedRows): void {
    checkEncodedRows(batch, this.dSae);
    if (this.projectionEdges !== null && batch.projection === undefined) {
      throw err('SAEGATE_ERR_MONITOR_ARGUMENT', 'the recorder has projection edges but the batch has no projection column');
    }
    const { rows, offsets, indices, l0, fvu, projection } = batch;
    for (let i = 0; i < offsets[rows]; i++) {
      const feature = indices[i];
      if (this.counts[feature]++ === 0) this.touched.push(feature);
    }
    for (let r = 0; r < rows; r++) {
      this.l0Hist[binIndex(this.l0Edges, l0[r])]++;
      this.fvuHist[binIndex(this.fvuEdges, fvu[r])]++;
      this.fvuSum += fvu[r];
      if (this.projectionHist !== null && this.projectionEdges !== null && projection !== undefined) {
        this.projectionHist[binIndex(this.projectionEdges, projection[r])]++;
      }
    }
    this.tokens += rows;
  }

  /** Closes the open document; a document without rows is not recorded. Returns documents recorded so far. */
  endDocument(): number {
    if (this.tokens > 0) {
      const features = this.touched.sort((a, b) => a - b);
      const doc: BaselineDocument = {
        tokens: this.tokens,
        features,
        counts: features.map((f) => this.counts[f]),
        l0: this.l0Hist,
        fvu: this.fvuHist,
        fvuSum: this.fvuSum,
      };
      if (this.projectionHist !== null) doc.projection = this.projectionHist;
      this.documents.push(doc);
    }
    for (const f of this.touched) this.counts[f] = 0;
    this.touched = [];
    this.tokens = 0;
    this.fvuSum = 0;
    this.l0Hist = new Array<number>(this.l0Edges.length + 1).fill(0);
    this.fvuHist = new Array<number>(this.fvuEdges.length + 1).fill(0);
    this.projectionHist = this.projectionHist === null ? null : new Array<number>(this.projectionHist.length).fill(0);
    return this.documents.length;
  }

  /** `addRows(batch)` then `endDocument()`: a document that arrives in one batch. */
  addDocument(batch: EncodedRows): number {
    this.addRows(batch);
    return this.endDocument();
  }

  /** The baseline of the documents closed so far (an open document is not included). */
  toBaseline(identity: BaselineIdentity): Baseline {
    const tokens = this.documents.reduce((sum, doc) => sum + doc.tokens, 0);
    return {
      version: BASELINE_VERSION,
      provenance: {
        model: identity.model,
        sae: { id: identity.sae.id, hash: identity.sae.hash },
        hook: identity.hook,
        dSae: this.dSae,
        tokens,
        documents: this.documents.length,
        createdAt: identity.createdAt ?? new Date().toISOString(),
        saegateVersion: identity.saegateVersion,
      },
      bins: {
        l0: Array.from(this.l0Edges),
        fvu: Array.from(this.fvuEdges),
        ...(this.projectionEdges === null ? {} : { projection: Array.from(this.projectionEdges) }),
      },
      documents: this.documents.slice(),
    };
  }
}
