/**
 * Streams a corpus's sparse SAE codes, one document at a time, into per-feature statistics and
 * top-activating contexts, and turns them into a `FeatureReport`.
 *
 * Memory is O(d_sae), not O(corpus): a document's rows are read once, inside `addDocument`, and
 * dropped. That works because an example's context (its window's token texts and the feature's
 * activation on each window token) only needs the document it came from, and `addDocument` has the
 * whole document in hand — so an example is built the moment it enters a feature's top-N, and
 * nothing is kept for `finish`. The state is a handful of d_sae-long typed arrays, a fixed-size
 * histogram per feature, and at most N small examples per feature (for 16384 latents, 10 examples
 * of 17 tokens: a few tens of MB, whatever the corpus length).
 *
 * The per-row loop touches only typed arrays (no allocation); objects are made only when an example
 * enters a top-N heap, which after the first documents is rare.
 */
import { err } from '../../common/errors.js';
import { FEATURE_REPORT_VERSION, type FeatureEntry, type FeatureExample, type FeatureReport, type FeatureReportSae } from './report.js';
import { TopHeaps } from './top-heaps.js';

/** Options of `FeatureAccumulator`. */
export interface FeatureAccumulatorOptions {
  /** Number of SAE latents; feature indices are 0 … dSae − 1. */
  dSae: number;
  /** Most examples kept per feature (the top N by activation). 0 keeps none. Default 10. */
  contextsPerFeature?: number;
  /** Tokens kept before the activating token in an example's window (clipped at the document start). Default 12. */
  windowBefore?: number;
  /** Tokens kept after the activating token (clipped at the document end). Default 4. */
  windowAfter?: number;
  /** Firing frequency (fraction of tokens) above which a feature is flagged dense. Default 0.1. */
  denseThreshold?: number;
  /**
   * Most examples one document may contribute to one feature's list, so a long repetitive document
   * cannot fill it. Default 2.
   */
  maxExamplesPerDocument?: number;
  /** Bins of each feature's activation histogram, over [0, maxActivation]. Default 16. */
  histogramBins?: number;
}

/** One token of a document: its vocabulary id and its decoded text. */
export interface FeatureToken {
  id: number;
  text: string;
}

/**
 * A document's sparse SAE codes: row p (token p) has its active features in
 * `indices[p·k … p·k + k)` with activations in the same slots of `values`. Unused slots hold
 * index −1; slots whose value is not > 0 are ignored. A feature appears at most once per row.
 */
export interface FeatureDocument {
  /** Document id, shown with its examples. */
  id: string;
  tokens: readonly FeatureToken[];
  /** [tokens × k] feature indices. */
  indices: Int32Array;
  /** [tokens × k] activations. */
  values: Float32Array;
  /** Slots per row. */
  k: number;
}

/** What `finish` needs besides the statistics. */
export interface FeatureReportMeta {
  sae: FeatureReportSae;
  /** Model id the activations came from. */
  model: string;
  corpus: { path: string };
  /** ISO 8601 time for the report. Default: now. */
  createdAt?: string;
}

/** An example while it sits in a feature's heap; converted to `FeatureExample` in `finish`. */
interface HeldExample {
  activation: number;
  document: string;
  position: number;
  tokens: string[];
  activations: number[];
  marked: number;
}

/** Six significant digits: float32 activations carry no more, and the report stays readable. */
function round6(x: number): number {
  return x === 0 ? 0 : Number(x.toPrecision(6));
}

function checkInteger(name: string, value: number, min: number): number {
  if (!Number.isInteger(value) || value < min) throw err('SAEGATE_ERR_FEATURE_ARGUMENT', `${name} must be an integer ≥ ${min}, got ${value}`);
  return value;
}

/**
 * Accumulates per-feature statistics over a corpus. Feed every document with `addDocument`, then
 * call `finish` for the report (it may be called again after more documents).
 *
 * Histograms are streamed without knowing a feature's final maximum: each feature keeps
 * `4 × histogramBins` fine bins over [0, R), R a power of two above every value seen; when a value
 * ≥ R arrives R doubles and adjacent bin pairs merge, which re-bins exactly (the grids nest), so
 * the bins do not depend on the order values arrive in. `finish` re-bins the fine bins by their
 * centres into `histogramBins` bins over [0, maxActivation]. Since maxActivation ≥ R/2, a value can
 * land at most a quarter of an output bin away from where an exact histogram would put it.
 */
export class FeatureAccumulator {
  readonly dSae: number;
  readonly contextsPerFeature: number;
  readonly windowBefore: number;
  readonly windowAfter: number;
  readonly denseThreshold: number;
  readonly maxExamplesPerDocument: number;
  readonly histogramBins: number;

  /** Rows (tokens) where each feature is active. Float64: exact well past 2^32 rows. */
  private readonly firing: Float64Array;
  private readonly sum: Float64Array;
  private readonly max: Float32Array;
  /** Fine histogram bins, [dSae × fineBins], over [0, range[f]). */
  private readonly fineBins: number;
  private readonly fine: Uint32Array;
  private readonly range: Float64Array;
  /** Last validated row each feature was active on, to refuse a feature listed twice in one row. */
  private readonly seenInRow: Float64Array;
  /** Top-N examples per feature, keyed by activation; ties go to the earlier corpus row. */
  private readonly heaps: TopHeaps<HeldExample>;

  // Per-document scratch. The document is transposed to feature-major order (CSR): feature f's
  // active positions, ascending, are occurrencePosition[occurrenceStart[f] … occurrenceEnd[f]) with
  // their activations beside them. Statistics are then updated feature by feature, so each
  // feature's counters and 256-byte histogram are touched once per document instead of once per
  // token (random access into a 4 MB histogram array was the hot spot of a per-slot loop), and an
  // example's window activations take a binary search. Only the features in `touched` (active in
  // the document) are visited and reset, so a document costs O(its slots), not O(dSae).
  private readonly touched: Int32Array;
  private readonly occurrenceStart: Int32Array;
  private readonly occurrenceEnd: Int32Array;
  private occurrencePosition = new Int32Array(0);
  private occurrenceValue = new Float32Array(0);
  /** The current feature's best `perDocument` positions in the document, by activation. */
  private readonly perDocument: number;
  private readonly candidateValue: Float64Array;
  private readonly candidatePosition: Int32Array;

  private rows = 0;
  private documents = 0;
  /** Rows seen by `scan`, including those of refused documents. */
  private validatedRows = 0;

  constructor(options: FeatureAccumulatorOptions) {
    this.dSae = checkInteger('dSae', options.dSae, 1);
    this.contextsPerFeature = checkInteger('contextsPerFeature', options.contextsPerFeature ?? 10, 0);
    this.windowBefore = checkInteger('windowBefore', options.windowBefore ?? 12, 0);
    this.windowAfter = checkInteger('windowAfter', options.windowAfter ?? 4, 0);
    this.maxExamplesPerDocument = checkInteger('maxExamplesPerDocument', options.maxExamplesPerDocument ?? 2, 1);
    this.histogramBins = checkInteger('histogramBins', options.histogramBins ?? 16, 1);
    const denseThreshold = options.denseThreshold ?? 0.1;
    if (!(denseThreshold >= 0 && denseThreshold <= 1)) {
      throw err('SAEGATE_ERR_FEATURE_ARGUMENT', `denseThreshold must be a fraction from 0 to 1, got ${denseThreshold}`);
    }
    this.denseThreshold = denseThreshold;

    const n = this.dSae;
    this.firing = new Float64Array(n);
    this.sum = new Float64Array(n);
    this.max = new Float32Array(n);
    this.fineBins = 4 * this.histogramBins;
    this.fine = new Uint32Array(n * this.fineBins);
    this.range = new Float64Array(n);
    this.seenInRow = new Float64Array(n).fill(-1);
    this.heaps = new TopHeaps<HeldExample>({ features: n, capacity: this.contextsPerFeature });
    // More candidates per document than the list holds could never all be kept.
    this.perDocument = Math.min(this.maxExamplesPerDocument, this.contextsPerFeature);
    this.candidateValue = new Float64Array(this.perDocument);
    this.candidatePosition = new Int32Array(this.perDocument);
    this.touched = new Int32Array(n);
    this.occurrenceStart = new Int32Array(n);
    this.occurrenceEnd = new Int32Array(n);
  }

  /** Documents added so far. */
  get documentCount(): number {
    return this.documents;
  }

  /** Tokens (rows) added so far. */
  get tokenCount(): number {
    return this.rows;
  }

  /**
   * Adds one document's codes. Throws SAEGATE_ERR_FEATURE_ARGUMENT, adding nothing, when
   * `indices`/`values` are not `tokens × k` long, an index is outside [−1, dSae), an activation is
   * NaN or infinite, or a feature appears twice in one row.
   */
  addDocument(doc: FeatureDocument): void {
    const touchedCount = this.scan(doc);
    const firstRow = this.rows;
    this.rows += doc.tokens.length;
    this.documents += 1;
    if (touchedCount === 0) return;
    this.transpose(doc, touchedCount);
    for (let i = 0; i < touchedCount; i++) {
      const f = this.touched[i];
      this.updateFeature(f, doc, firstRow);
      this.occurrenceEnd[f] = 0;
    }
  }

  /**
   * Checks the document and counts each feature's occurrences into occurrenceEnd, listing the
   * features it meets in `touched`; returns how many. Nothing outside the scratch is changed before
   * the whole document has passed, so a refused document leaves the statistics as they were.
   */
  private scan(doc: FeatureDocument): number {
    const { tokens, indices, values, k } = doc;
    const rows = tokens.length;
    if (!Number.isInteger(k) || k < 1) throw err('SAEGATE_ERR_FEATURE_ARGUMENT', `document '${doc.id}': k must be a positive integer, got ${k}`);
    if (indices.length !== rows * k || values.length !== rows * k) {
      throw err('SAEGATE_ERR_FEATURE_ARGUMENT', `document '${doc.id}': ${rows} tokens × k ${k} needs ${rows * k} slots, got ${indices.length} indices and ${values.length} values`);
    }
    const { dSae, seenInRow, occurrenceEnd, touched } = this;
    let touchedCount = 0;
    for (let p = 0; p < rows; p++) {
      // Never reused, even after a refused document, so a stale mark cannot look like a duplicate.
      const row = this.validatedRows++;
      const base = p * k;
      for (let s = 0; s < k; s++) {
        const f = indices[base + s];
        if (f === -1) continue;
        const v = values[base + s];
        let problem: string | null = null;
        if (f < -1 || f >= dSae) problem = `feature index ${f} is outside 0…${dSae - 1}`;
        else if (!Number.isFinite(v)) problem = `feature ${f} has activation ${v}`;
        else if (v > 0 && seenInRow[f] === row) problem = `feature ${f} appears twice in the row`;
        if (problem !== null) {
          for (let i = 0; i < touchedCount; i++) occurrenceEnd[touched[i]] = 0;
          throw err('SAEGATE_ERR_FEATURE_ARGUMENT', `document '${doc.id}' token ${p}: ${problem}`);
        }
        if (!(v > 0)) continue;
        seenInRow[f] = row;
        if (occurrenceEnd[f]++ === 0) touched[touchedCount++] = f;
      }
    }
    return touchedCount;
  }

  /** Turns the counts in occurrenceEnd into the feature-major occurrence lists of `doc`. */
  private transpose(doc: FeatureDocument, touchedCount: number): void {
    const { occurrenceStart, occurrenceEnd, touched } = this;
    let total = 0;
    for (let i = 0; i < touchedCount; i++) {
      const f = touched[i];
      occurrenceStart[f] = total;
      total += occurrenceEnd[f];
      occurrenceEnd[f] = occurrenceStart[f];
    }
    if (this.occurrencePosition.length < total) {
      const size = Math.max(total, 2 * this.occurrencePosition.length);
      this.occurrencePosition = new Int32Array(size);
      this.occurrenceValue = new Float32Array(size);
    }
    const { occurrencePosition, occurrenceValue } = this;
    const { indices, values, k } = doc;
    const rows = doc.tokens.length;
    // Row order, so each feature's positions come out ascending.
    for (let p = 0; p < rows; p++) {
      const base = p * k;
      for (let s = 0; s < k; s++) {
        const f = indices[base + s];
        const v = values[base + s];
        if (f < 0 || !(v > 0)) continue;
        const j = occurrenceEnd[f]++;
        occurrencePosition[j] = p;
        occurrenceValue[j] = v;
      }
    }
  }

  /** Adds feature f's occurrences in `doc` to its statistics and offers its best ones as examples. */
  private updateFeature(f: number, doc: FeatureDocument, firstRow: number): void {
    const start = this.occurrenceStart[f];
    const end = this.occurrenceEnd[f];
    const { occurrencePosition, occurrenceValue, fine, fineBins, candidateValue, candidatePosition } = this;
    const cap = this.perDocument;
    // Everything held came from earlier documents, so a candidate needs a strictly higher
    // activation than the heap's floor to get in.
    const floor = cap > 0 ? this.heaps.floor[f] : Infinity;
    const histogram = f * fineBins;
    let sum = 0;
    let max = this.max[f];
    let range = this.range[f];
    let candidates = 0;
    for (let j = start; j < end; j++) {
      const v = occurrenceValue[j];
      sum += v;
      if (v > max) max = v;
      if (v >= range) range = this.growRange(f, v);
      // Left-closed bins [j·w, (j+1)·w) like the report's. v < range, a power of two, so the
      // division is exact and the bin below fineBins; the guard is for safety only.
      const bin = Math.floor((v / range) * fineBins);
      fine[histogram + (bin < fineBins ? bin : fineBins - 1)] += 1;
      if (!(v > floor)) continue;
      // Keep the best `cap` positions, sorted by activation; on ties the earlier position stays ahead.
      let c: number;
      if (candidates < cap) c = candidates++;
      else if (v > candidateValue[cap - 1]) c = cap - 1;
      else continue;
      while (c > 0 && candidateValue[c - 1] < v) {
        candidateValue[c] = candidateValue[c - 1];
        candidatePosition[c] = candidatePosition[c - 1];
        c--;
      }
      candidateValue[c] = v;
      candidatePosition[c] = occurrencePosition[j];
    }
    this.firing[f] += end - start;
    this.sum[f] += sum;
    this.max[f] = max;
    for (let c = 0; c < candidates; c++) {
      const activation = candidateValue[c];
      const position = candidatePosition[c];
      // The example is built only once it is sure to get in, and into the object it evicts: most
      // insertions happen in full heaps, and recycling keeps them from feeding the GC.
      if (this.heaps.admits(f, activation, firstRow + position)) {
        this.heaps.push(f, activation, firstRow + position, this.buildExample(f, activation, position, doc, this.heaps.evictee(f)));
      }
    }
  }

  private buildExample(f: number, activation: number, position: number, doc: FeatureDocument, reuse: HeldExample | undefined): HeldExample {
    const start = Math.max(0, position - this.windowBefore);
    const end = Math.min(doc.tokens.length, position + this.windowAfter + 1);
    const example: HeldExample = reuse ?? { activation, document: doc.id, position, tokens: [], activations: [], marked: 0 };
    example.activation = activation;
    example.document = doc.id;
    example.position = position;
    example.marked = position - start;
    const { tokens, activations } = example;
    // Setting an array's length is a runtime call; windows mostly keep their size.
    if (tokens.length !== end - start) {
      tokens.length = end - start;
      activations.length = end - start;
    }
    for (let q = start; q < end; q++) {
      tokens[q - start] = doc.tokens[q].text;
      activations[q - start] = 0;
    }
    // First occurrence of f at or after `start`, then walk while inside the window.
    const positions = this.occurrencePosition;
    let lo = this.occurrenceStart[f];
    let hi = this.occurrenceEnd[f];
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (positions[mid] < start) lo = mid + 1;
      else hi = mid;
    }
    for (let j = lo; j < this.occurrenceEnd[f] && positions[j] < end; j++) activations[positions[j] - start] = this.occurrenceValue[j];
    return example;
  }

  /** Doubles f's histogram range (merging adjacent bin pairs) until it exceeds v; returns the new range. */
  private growRange(f: number, v: number): number {
    const bins = this.fineBins;
    let r = this.range[f];
    if (r === 0) {
      // The smallest power of two above v (log2 may round either way near a power of two).
      r = 2 ** (Math.floor(Math.log2(v)) + 1);
      while (r <= v) r *= 2;
      while (r / 2 > v) r /= 2;
      this.range[f] = r;
      return r;
    }
    const o = f * bins;
    let merges = 0;
    while (r <= v) {
      // After log2(bins) merges everything sits in bin 0; further merges change nothing.
      if (merges < bins) {
        for (let i = 0; i < bins / 2; i++) this.fine[o + i] = this.fine[o + 2 * i] + this.fine[o + 2 * i + 1];
        this.fine.fill(0, o + bins / 2, o + bins);
      }
      merges++;
      r *= 2;
    }
    this.range[f] = r;
    return r;
  }

  /** Re-bins f's fine histogram into `histogramBins` bins over [0, max[f]] by fine-bin centre. */
  private histogram(f: number): { max: number; counts: number[] } {
    const counts = new Array<number>(this.histogramBins).fill(0);
    const top = this.max[f];
    if (top === 0) return { max: 0, counts };
    const bins = this.fineBins;
    const width = this.range[f] / bins;
    for (let j = 0; j < bins; j++) {
      const n = this.fine[f * bins + j];
      if (n === 0) continue;
      const centre = (j + 0.5) * width;
      counts[Math.min(this.histogramBins - 1, Math.floor((centre / top) * this.histogramBins))] += n;
    }
    return { max: round6(top), counts };
  }

  /** Builds the report from everything added so far. The accumulator stays usable. */
  finish(meta: FeatureReportMeta): FeatureReport {
    if (meta.sae.dSae !== this.dSae) {
      throw err('SAEGATE_ERR_FEATURE_ARGUMENT', `report metadata says d_sae = ${meta.sae.dSae} but the accumulator has ${this.dSae} features`);
    }
    const features: FeatureEntry[] = new Array<FeatureEntry>(this.dSae);
    let dead = 0;
    let dense = 0;
    let activeSlots = 0;
    for (let f = 0; f < this.dSae; f++) {
      const firing = this.firing[f];
      activeSlots += firing;
      const frequency = this.rows === 0 ? 0 : firing / this.rows;
      const isDead = firing === 0;
      const isDense = frequency > this.denseThreshold;
      if (isDead) dead++;
      if (isDense) dense++;
      features[f] = {
        index: f,
        frequency,
        firing,
        meanActivation: isDead ? 0 : round6(this.sum[f] / firing),
        maxActivation: round6(this.max[f]),
        dead: isDead,
        dense: isDense,
        histogram: this.histogram(f),
        examples: this.examples(f),
      };
    }
    return {
      version: FEATURE_REPORT_VERSION,
      sae: { ...meta.sae },
      model: meta.model,
      corpus: { path: meta.corpus.path, documents: this.documents, tokens: this.rows },
      createdAt: meta.createdAt ?? new Date().toISOString(),
      denseThreshold: this.denseThreshold,
      examples: {
        perFeature: this.contextsPerFeature,
        perDocument: this.maxExamplesPerDocument,
        windowBefore: this.windowBefore,
        windowAfter: this.windowAfter,
      },
      summary: { dead, dense, meanL0: this.rows === 0 ? 0 : round6(activeSlots / this.rows) },
      features,
    };
  }

  /** f's held examples, best first. */
  private examples(f: number): FeatureExample[] {
    return this.heaps.sorted(f).map((held) => ({
      document: held.document,
      position: held.position,
      activation: round6(held.activation),
      tokens: [...held.tokens],
      activations: held.activations.map(round6),
      marked: held.marked,
    }));
  }
}
