/**
 * Sliding-window statistics for one SAE at one hook point: per-feature firing counts and activation
 * sums, token count, L0 and FVU histograms (and an optional projection histogram) over each
 * configured window (by default 1 m, 5 m and 1 h).
 *
 * Each window is a ring of `buckets` buckets of `durationMs / buckets` each. A batch is counted
 * into the bucket that holds the clock's time when it is ingested; a bucket slot whose bucket has
 * fallen out of the window is zeroed when the ring reaches it again, so expiry costs nothing on
 * the row path and old data never leaks into a window. A snapshot sums the slots whose bucket is
 * one of the last `buckets` (the current, partly filled one included), so a window covers between
 * `(buckets − 1)` and `buckets` bucket durations of traffic.
 *
 * Memory, per latent per window: `buckets × 8` bytes (a Uint32 firing count and a Float32
 * activation sum per bucket). With the default windows (12 + 10 + 12 buckets) that is 272 bytes
 * per latent, 34.8 MiB at d_sae = 131072; plus per bucket the histograms and a few scalars.
 * `memoryBytes()` reports the exact figure. Activation sums are Float32 per bucket (a bucket holds
 * at most one bucket duration of traffic) and summed in Float64 by `snapshot`.
 *
 * Per row the cost is, for each window, one increment and one add per active latent plus two
 * histogram bin searches; the clock is read once per batch and nothing is allocated per row.
 */
import { err } from '../common/errors.js';
import { DEFAULT_FVU_EDGES, DEFAULT_L0_EDGES, binIndex, histogramEdges } from './histogram.js';
import { checkEncodedRows, type EncodedRows } from './rows.js';

/** One sliding window. */
export interface WindowSpec {
  /** Name used in snapshots and (later) metric labels, e.g. `1m`. */
  readonly name: string;
  /** Window length in milliseconds. */
  readonly durationMs: number;
  /** Buckets the window is divided into; more buckets slide more smoothly and cost more memory. */
  readonly buckets: number;
}

/** 1 m in 12 buckets of 5 s, 5 m in 10 of 30 s, 1 h in 12 of 5 min. */
export const DEFAULT_WINDOWS: readonly WindowSpec[] = [
  { name: '1m', durationMs: 60_000, buckets: 12 },
  { name: '5m', durationMs: 300_000, buckets: 10 },
  { name: '1h', durationMs: 3_600_000, buckets: 12 },
];

export interface WindowedStatsOptions {
  /** SAE width: number of latents. */
  readonly dSae: number;
  /** Windows to keep. Default `DEFAULT_WINDOWS`. */
  readonly windows?: readonly WindowSpec[];
  /** L0 histogram bin edges. Default `DEFAULT_L0_EDGES`. */
  readonly l0Edges?: readonly number[];
  /** FVU histogram bin edges. Default `DEFAULT_FVU_EDGES`. */
  readonly fvuEdges?: readonly number[];
  /** Projection histogram bin edges; no projection histogram when absent. */
  readonly projectionEdges?: readonly number[];
  /** Clock in milliseconds. Default `Date.now`; tests inject their own. */
  readonly now?: () => number;
}

/** The sums over one window at one moment. Fresh arrays; the caller may keep or modify them. */
export interface WindowSnapshot {
  readonly window: string;
  /** Time of the snapshot (ms, from the injected clock). */
  readonly atMs: number;
  /** Start of the oldest bucket included (ms). */
  readonly fromMs: number;
  /** Rows (tokens) counted. */
  readonly tokens: number;
  /** Per latent, rows where it was active. */
  readonly firingCounts: Float64Array;
  /** Per latent, sum of its activations. */
  readonly activationSums: Float64Array;
  /** Sum of the rows' L0. */
  readonly l0Sum: number;
  /** Sum of the rows' FVU. */
  readonly fvuSum: number;
  /** Rows per L0 bin (`l0Edges.length + 1` bins). */
  readonly l0Histogram: Float64Array;
  /** Rows per FVU bin. */
  readonly fvuHistogram: Float64Array;
  /** Rows per projection bin; null when no projection edges are configured. */
  readonly projectionHistogram: Float64Array | null;
}

/** One window's ring of buckets. Slot `s` holds bucket number `epochs[s]` (−1: never used). */
class Ring {
  readonly bucketMs: number;
  readonly epochs: Float64Array;
  readonly counts: Uint32Array;
  readonly sums: Float32Array;
  readonly tokens: Float64Array;
  readonly l0Sums: Float64Array;
  readonly fvuSums: Float64Array;
  readonly l0Hist: Uint32Array;
  readonly fvuHist: Uint32Array;
  readonly projectionHist: Uint32Array | null;
  /** Highest bucket number seen; a clock stepping back is counted into this bucket. */
  private current = -1;

  constructor(
    readonly spec: WindowSpec,
    readonly dSae: number,
    readonly bins: { l0: number; fvu: number; projection: number },
  ) {
    this.bucketMs = spec.durationMs / spec.buckets;
    const b = spec.buckets;
    this.epochs = new Float64Array(b).fill(-1);
    this.counts = new Uint32Array(b * dSae);
    this.sums = new Float32Array(b * dSae);
    this.tokens = new Float64Array(b);
    this.l0Sums = new Float64Array(b);
    this.fvuSums = new Float64Array(b);
    this.l0Hist = new Uint32Array(b * bins.l0);
    this.fvuHist = new Uint32Array(b * bins.fvu);
    this.projectionHist = bins.projection > 0 ? new Uint32Array(b * bins.projection) : null;
  }

  /** Bucket number of time `t`, never below the highest seen. */
  private bucketOf(t: number): number {
    return Math.max(Math.floor(t / this.bucketMs), this.current);
  }

  /** The slot to count into at time `t`; zeroes it first when it holds an expired bucket. */
  slotFor(t: number): number {
    const bucket = this.bucketOf(t);
    this.current = bucket;
    const b = this.spec.buckets;
    const slot = bucket % b;
    if (this.epochs[slot] !== bucket) {
      const d = this.dSae;
      this.counts.fill(0, slot * d, (slot + 1) * d);
      this.sums.fill(0, slot * d, (slot + 1) * d);
      this.tokens[slot] = 0;
      this.l0Sums[slot] = 0;
      this.fvuSums[slot] = 0;
      this.l0Hist.fill(0, slot * this.bins.l0, (slot + 1) * this.bins.l0);
      this.fvuHist.fill(0, slot * this.bins.fvu, (slot + 1) * this.bins.fvu);
      this.projectionHist?.fill(0, slot * this.bins.projection, (slot + 1) * this.bins.projection);
      this.epochs[slot] = bucket;
    }
    return slot;
  }

  /** Slots holding one of the window's last `buckets` buckets at time `t`, and the oldest bucket. */
  liveSlots(t: number): { slots: number[]; oldest: number } {
    const newest = Math.max(Math.floor(t / this.bucketMs), this.current);
    const oldest = newest - this.spec.buckets + 1;
    const slots: number[] = [];
    for (let s = 0; s < this.spec.buckets; s++) {
      const epoch = this.epochs[s];
      if (epoch >= oldest && epoch <= newest) slots.push(s);
    }
    return { slots, oldest };
  }

  memoryBytes(): number {
    return (
      this.epochs.byteLength +
      this.counts.byteLength +
      this.sums.byteLength +
      this.tokens.byteLength +
      this.l0Sums.byteLength +
      this.fvuSums.byteLength +
      this.l0Hist.byteLength +
      this.fvuHist.byteLength +
      (this.projectionHist?.byteLength ?? 0)
    );
  }
}

/** Sliding-window feature statistics for one SAE/hook; see the file comment for layout and cost. */
export class WindowedStats {
  readonly dSae: number;
  readonly l0Edges: Float64Array;
  readonly fvuEdges: Float64Array;
  readonly projectionEdges: Float64Array | null;
  readonly windows: readonly WindowSpec[];
  private readonly rings: Ring[];
  private readonly now: () => number;

  constructor(options: WindowedStatsOptions) {
    const { dSae } = options;
    if (!Number.isInteger(dSae) || dSae <= 0) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `dSae must be a positive integer, got ${dSae}`);
    this.dSae = dSae;
    this.l0Edges = histogramEdges('l0', options.l0Edges ?? DEFAULT_L0_EDGES);
    this.fvuEdges = histogramEdges('fvu', options.fvuEdges ?? DEFAULT_FVU_EDGES);
    this.projectionEdges = options.projectionEdges === undefined ? null : histogramEdges('projection', options.projectionEdges);
    this.windows = options.windows ?? DEFAULT_WINDOWS;
    if (this.windows.length === 0) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', 'at least one window is needed');
    const names = new Set<string>();
    for (const spec of this.windows) {
      if (names.has(spec.name)) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `window '${spec.name}' is configured twice`);
      names.add(spec.name);
      if (!Number.isInteger(spec.buckets) || spec.buckets < 1) {
        throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `window '${spec.name}': buckets must be a positive integer, got ${spec.buckets}`);
      }
      if (!Number.isFinite(spec.durationMs) || spec.durationMs <= 0) {
        throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `window '${spec.name}': durationMs must be positive, got ${spec.durationMs}`);
      }
    }
    const bins = {
      l0: this.l0Edges.length + 1,
      fvu: this.fvuEdges.length + 1,
      projection: this.projectionEdges === null ? 0 : this.projectionEdges.length + 1,
    };
    this.rings = this.windows.map((spec) => new Ring(spec, dSae, bins));
    this.now = options.now ?? Date.now;
  }

  /** Checks `batch` (see `checkEncodedRows`) and counts it into every window at the current time. */
  ingest(batch: EncodedRows): void {
    checkEncodedRows(batch, this.dSae);
    this.add(batch);
  }

  /** `ingest` without the check, for a caller that has checked the batch already. */
  add(batch: EncodedRows): void {
    const t = this.now();
    const { rows, offsets, indices, values, l0, fvu, projection } = batch;
    const nnz = offsets[rows];
    const d = this.dSae;
    for (const ring of this.rings) {
      const slot = ring.slotFor(t);
      // Hot loop: one increment and one add per active latent, into this bucket's slice.
      const counts = ring.counts;
      const sums = ring.sums;
      const base = slot * d;
      for (let i = 0; i < nnz; i++) {
        const at = base + indices[i];
        counts[at]++;
        sums[at] += values[i];
      }
      let l0Sum = 0;
      let fvuSum = 0;
      const l0Base = slot * (this.l0Edges.length + 1);
      const fvuBase = slot * (this.fvuEdges.length + 1);
      for (let r = 0; r < rows; r++) {
        l0Sum += l0[r];
        fvuSum += fvu[r];
        ring.l0Hist[l0Base + binIndex(this.l0Edges, l0[r])]++;
        ring.fvuHist[fvuBase + binIndex(this.fvuEdges, fvu[r])]++;
      }
      if (ring.projectionHist !== null && this.projectionEdges !== null && projection !== undefined) {
        const projectionBase = slot * (this.projectionEdges.length + 1);
        for (let r = 0; r < rows; r++) ring.projectionHist[projectionBase + binIndex(this.projectionEdges, projection[r])]++;
      }
      ring.tokens[slot] += rows;
      ring.l0Sums[slot] += l0Sum;
      ring.fvuSums[slot] += fvuSum;
    }
  }

  /** Sums of window `name` at the current time. Throws SAEGATE_ERR_MONITOR_ARGUMENT for an unknown window. */
  snapshot(name: string): WindowSnapshot {
    const ring = this.rings.find((candidate) => candidate.spec.name === name);
    if (ring === undefined) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `no window '${name}' (configured: ${this.windows.map((w) => w.name).join(', ')})`);
    const t = this.now();
    const { slots, oldest } = ring.liveSlots(t);
    const d = this.dSae;
    const firingCounts = new Float64Array(d);
    const activationSums = new Float64Array(d);
    const l0Bins = this.l0Edges.length + 1;
    const fvuBins = this.fvuEdges.length + 1;
    const projectionBins = this.projectionEdges === null ? 0 : this.projectionEdges.length + 1;
    const l0Histogram = new Float64Array(l0Bins);
    const fvuHistogram = new Float64Array(fvuBins);
    const projectionHistogram = projectionBins > 0 ? new Float64Array(projectionBins) : null;
    let tokens = 0;
    let l0Sum = 0;
    let fvuSum = 0;
    for (const slot of slots) {
      const base = slot * d;
      for (let f = 0; f < d; f++) {
        firingCounts[f] += ring.counts[base + f];
        activationSums[f] += ring.sums[base + f];
      }
      for (let b = 0; b < l0Bins; b++) l0Histogram[b] += ring.l0Hist[slot * l0Bins + b];
      for (let b = 0; b < fvuBins; b++) fvuHistogram[b] += ring.fvuHist[slot * fvuBins + b];
      if (projectionHistogram !== null && ring.projectionHist !== null) {
        for (let b = 0; b < projectionBins; b++) projectionHistogram[b] += ring.projectionHist[slot * projectionBins + b];
      }
      tokens += ring.tokens[slot];
      l0Sum += ring.l0Sums[slot];
      fvuSum += ring.fvuSums[slot];
    }
    return {
      window: name,
      atMs: t,
      fromMs: oldest * ring.bucketMs,
      tokens,
      firingCounts,
      activationSums,
      l0Sum,
      fvuSum,
      l0Histogram,
      fvuHistogram,
      projectionHistogram,
    };
  }

  /** Bytes held by the rings' typed arrays; fixed at construction, whatever the traffic. */
  memoryBytes(): number {
    return this.rings.reduce((sum, ring) => sum + ring.memoryBytes(), 0);
  }
}
