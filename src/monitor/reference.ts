/**
 * A baseline unpacked for scoring: totals over all documents (the reference distribution a window
 * is compared with), per-document statistics in flat typed arrays (what calibration.ts resamples),
 * and each feature's dispersion across documents (what feature-tests.ts widens its test by).
 */
import type { Baseline } from './baseline.js';

/** Sums a window or a set of baseline documents is summarised by; `WindowSnapshot` is one. */
export interface DistributionSums {
  readonly tokens: number;
  readonly firingCounts: Float64Array;
  readonly fvuSum: number;
  readonly l0Histogram: Float64Array;
  readonly fvuHistogram: Float64Array;
  readonly projectionHistogram: Float64Array | null;
}

/** A `BaselineReference`'s data: plain numbers and typed arrays, so it crosses to a worker thread by transfer. */
export interface BaselineReferenceParts {
  readonly dSae: number;
  readonly documents: number;
  readonly totals: DistributionSums;
  readonly l0Edges: Float64Array;
  readonly fvuEdges: Float64Array;
  readonly projectionEdges: Float64Array | null;
  readonly docTokens: Float64Array;
  readonly docFvuSum: Float64Array;
  readonly docOffsets: Uint32Array;
  readonly docFeatures: Uint32Array;
  readonly docCounts: Uint32Array;
  readonly docL0: Float64Array;
  readonly docFvu: Float64Array;
  readonly docProjection: Float64Array | null;
  readonly dispersion: Float64Array;
}

export class BaselineReference implements BaselineReferenceParts {
  readonly dSae: number;
  readonly documents: number;
  readonly totals: DistributionSums;
  readonly l0Edges: Float64Array;
  readonly fvuEdges: Float64Array;
  readonly projectionEdges: Float64Array | null;
  /** Per document: tokens. */
  readonly docTokens: Float64Array;
  /** Per document: FVU sum. */
  readonly docFvuSum: Float64Array;
  /** CSR over documents: document d's features are `docFeatures[docOffsets[d] .. docOffsets[d + 1])`. */
  readonly docOffsets: Uint32Array;
  readonly docFeatures: Uint32Array;
  readonly docCounts: Uint32Array;
  /** Per document, its histograms, `bins` entries each, row-major. */
  readonly docL0: Float64Array;
  readonly docFvu: Float64Array;
  readonly docProjection: Float64Array | null;
  /**
   * Per feature, its quasi-Poisson dispersion φ ≥ 1 across documents: Pearson's X² of the
   * per-document counts against `tokens_d · rate` over (documents − 1), floored at 1. Bursty
   * features (that fire on many tokens of few documents) get φ > 1.
   */
  readonly dispersion: Float64Array;

  /** Unpacks `baseline`, or takes over `parts` (another reference's `copyParts`, e.g. after a transfer). */
  constructor(input: Baseline | BaselineReferenceParts) {
    if (!('provenance' in input)) {
      ({
        dSae: this.dSae,
        documents: this.documents,
        totals: this.totals,
        l0Edges: this.l0Edges,
        fvuEdges: this.fvuEdges,
        projectionEdges: this.projectionEdges,
        docTokens: this.docTokens,
        docFvuSum: this.docFvuSum,
        docOffsets: this.docOffsets,
        docFeatures: this.docFeatures,
        docCounts: this.docCounts,
        docL0: this.docL0,
        docFvu: this.docFvu,
        docProjection: this.docProjection,
        dispersion: this.dispersion,
      } = input);
      return;
    }
    const { provenance, bins, documents } = input;
    const d = (this.dSae = provenance.dSae);
    this.documents = documents.length;
    this.l0Edges = Float64Array.from(bins.l0);
    this.fvuEdges = Float64Array.from(bins.fvu);
    this.projectionEdges = bins.projection === undefined ? null : Float64Array.from(bins.projection);
    const l0Bins = bins.l0.length + 1;
    const fvuBins = bins.fvu.length + 1;
    const projectionBins = bins.projection === undefined ? 0 : bins.projection.length + 1;
    const n = documents.length;
    this.docTokens = new Float64Array(n);
    this.docFvuSum = new Float64Array(n);
    this.docOffsets = new Uint32Array(n + 1);
    const nnz = documents.reduce((sum, doc) => sum + doc.features.length, 0);
    this.docFeatures = new Uint32Array(nnz);
    this.docCounts = new Uint32Array(nnz);
    this.docL0 = new Float64Array(n * l0Bins);
    this.docFvu = new Float64Array(n * fvuBins);
    this.docProjection = projectionBins > 0 ? new Float64Array(n * projectionBins) : null;
    const firingCounts = new Float64Array(d);
    const l0Histogram = new Float64Array(l0Bins);
    const fvuHistogram = new Float64Array(fvuBins);
    const projectionHistogram = projectionBins > 0 ? new Float64Array(projectionBins) : null;
    let at = 0;
    let tokens = 0;
    let fvuSum = 0;
    documents.forEach((doc, i) => {
      this.docTokens[i] = doc.tokens;
      this.docFvuSum[i] = doc.fvuSum;
      tokens += doc.tokens;
      fvuSum += doc.fvuSum;
      for (let j = 0; j < doc.features.length; j++, at++) {
        this.docFeatures[at] = doc.features[j];
        this.docCounts[at] = doc.counts[j];
        firingCounts[doc.features[j]] += doc.counts[j];
      }
      this.docOffsets[i + 1] = at;
      doc.l0.forEach((c, b) => {
        this.docL0[i * l0Bins + b] = c;
        l0Histogram[b] += c;
      });
      doc.fvu.forEach((c, b) => {
        this.docFvu[i * fvuBins + b] = c;
        fvuHistogram[b] += c;
      });
      if (this.docProjection !== null && projectionHistogram !== null && doc.projection !== undefined) {
        const target = this.docProjection;
        doc.projection.forEach((c, b) => {
          target[i * projectionBins + b] = c;
          projectionHistogram[b] += c;
        });
      }
    });
    this.totals = { tokens, firingCounts, fvuSum, l0Histogram, fvuHistogram, projectionHistogram };

    // X²_f = Σ_d (c_df − t_d r_f)² / (t_d r_f) with r_f = C_f / N expands to Σ_d c_df² / (t_d r_f) − C_f,
    // a sum over the documents where f fired only.
    const pearson = new Float64Array(d);
    for (let i = 0; i < n; i++) {
      const t = this.docTokens[i];
      for (let j = this.docOffsets[i]; j < this.docOffsets[i + 1]; j++) {
        const f = this.docFeatures[j];
        const c = this.docCounts[j];
        pearson[f] += (c * c) / (t * (firingCounts[f] / tokens));
      }
    }
    this.dispersion = new Float64Array(d).fill(1);
    if (n > 1) {
      for (let f = 0; f < d; f++) {
        if (firingCounts[f] > 0) this.dispersion[f] = Math.max(1, (pearson[f] - firingCounts[f]) / (n - 1));
      }
    }
  }

  /**
   * A copy of the data and the buffers to transfer with it: a worker rebuilds the reference with
   * `new BaselineReference(parts)` at the cost of a memcpy here, not a structured clone of the
   * baseline's per-document objects.
   */
  copyParts(): { parts: BaselineReferenceParts; transfer: ArrayBuffer[] } {
    const transfer: ArrayBuffer[] = [];
    const copy = <T extends Float64Array | Uint32Array>(array: T): T => {
      const out = array.slice() as T;
      transfer.push(out.buffer as ArrayBuffer);
      return out;
    };
    const maybe = (array: Float64Array | null): Float64Array | null => (array === null ? null : copy(array));
    const t = this.totals;
    const parts: BaselineReferenceParts = {
      dSae: this.dSae,
      documents: this.documents,
      totals: { tokens: t.tokens, fvuSum: t.fvuSum, firingCounts: copy(t.firingCounts), l0Histogram: copy(t.l0Histogram), fvuHistogram: copy(t.fvuHistogram), projectionHistogram: maybe(t.projectionHistogram) },
      l0Edges: copy(this.l0Edges),
      fvuEdges: copy(this.fvuEdges),
      projectionEdges: maybe(this.projectionEdges),
      docTokens: copy(this.docTokens),
      docFvuSum: copy(this.docFvuSum),
      docOffsets: copy(this.docOffsets),
      docFeatures: copy(this.docFeatures),
      docCounts: copy(this.docCounts),
      docL0: copy(this.docL0),
      docFvu: copy(this.docFvu),
      docProjection: maybe(this.docProjection),
      dispersion: copy(this.dispersion),
    };
    return { parts, transfer };
  }

  /** Mean FVU over all baseline tokens. */
  get meanFvu(): number {
    return this.totals.tokens === 0 ? 0 : this.totals.fvuSum / this.totals.tokens;
  }
}
