/**
 * A prom-client `Histogram` for values observed by the thousand (the monitor's L0 and FVU of every
 * encoded row) whose label sets are known up front. A `Recorder` counts a series' observations in
 * a typed array; a scrape adds them into the histogram's (zeroed) series as prom-client exports
 * them, so the text and JSON output are exactly those of a plain `Histogram` that observed the
 * same values (tested against one).
 *
 * Why: `histogram.labels(...).observe(v)` validates the labels and hashes them on every call, about
 * 0.8 µs per observation here; two per encoded row were a noticeable part of saegate's event-loop
 * cost per row in the end-to-end bench (docs/performance.md). A recorder's `observe` is a bucket
 * search and three additions.
 *
 * It relies on prom-client's `getForPromString()` (which `Registry.metrics()` and `get()` both go
 * through) and the shape of its values: `{labels: {le}, sharedLabels, value, metricName}` per
 * bucket, then `_sum` and `_count`. The version is pinned by the lockfile and the test compares
 * the output with a plain Histogram's, so a change there fails the build, not a scrape.
 */
import { Histogram, type HistogramConfiguration, type LabelValues, type MetricObjectWithValues, type MetricValueWithName } from 'prom-client';

/** Counts one series' observations. */
export interface HistogramRecorder {
  /** Counts `value`; a non-finite value (which a histogram cannot hold) is ignored. */
  observe(value: number): void;
}

interface Series {
  readonly key: string;
  readonly labels: LabelValues<string>;
  /** Observations per bucket (not cumulative): `counts[i]` ≤ bound i and above bound i − 1. */
  readonly counts: Float64Array;
  sum: number;
  count: number;
}

interface ExportedValue extends MetricValueWithName<string> {
  sharedLabels?: Record<string, string | number>;
}

type PromStringSource = { getForPromString(): Promise<MetricObjectWithValues<ExportedValue>> };

export class ArrayHistogram<T extends string> extends Histogram<T> {
  private readonly bounds: Float64Array;
  private readonly seriesByKey = new Map<string, Series>();
  private readonly labelOrder: readonly T[];
  private readonly metricName: string;

  constructor(configuration: HistogramConfiguration<T> & { buckets: readonly number[]; labelNames: readonly T[] }) {
    super({ ...configuration, buckets: [...configuration.buckets] });
    this.metricName = configuration.name;
    this.bounds = Float64Array.from([...configuration.buckets].sort((a, b) => a - b));
    this.labelOrder = configuration.labelNames;
  }

  /** A recorder for the series `labels` (created, at zero, when new). */
  recorder(labels: LabelValues<T>): HistogramRecorder {
    this.labels(labels); // throws on a label name not in labelNames
    this.zero(labels); // makes the series appear in the output
    const key = this.keyOf(labels);
    let series = this.seriesByKey.get(key);
    if (series === undefined) {
      series = { key, labels: { ...labels }, counts: new Float64Array(this.bounds.length), sum: 0, count: 0 };
      this.seriesByKey.set(key, series);
    }
    const bounds = this.bounds;
    const counts = series.counts;
    const target = series;
    return {
      observe(value: number): void {
        if (!Number.isFinite(value)) return;
        target.sum += value;
        target.count++;
        for (let i = 0; i < bounds.length; i++) {
          if (value <= bounds[i]) {
            counts[i]++;
            return;
          }
        }
      },
    };
  }

  /** prom-client's own export with the recorded counts added to each recorded series. */
  async getForPromString(): Promise<MetricObjectWithValues<ExportedValue>> {
    const metric = await (Histogram.prototype as unknown as PromStringSource).getForPromString.call(this);
    const bucketName = `${this.metricName}_bucket`;
    const sumName = `${this.metricName}_sum`;
    const countName = `${this.metricName}_count`;
    for (const value of metric.values) {
      const series = this.seriesByKey.get(this.keyOf((value.sharedLabels ?? {}) as LabelValues<T>));
      if (series === undefined) continue;
      if (value.metricName === sumName) value.value += series.sum;
      else if (value.metricName === countName) value.value += series.count;
      else if (value.metricName === bucketName) value.value += this.cumulative(series, value.labels.le);
    }
    return metric;
  }

  /** Zeroes every series; recorded series stay in the output (at zero) and their recorders keep working. */
  override reset(): void {
    super.reset();
    // prom-client's constructor calls reset() before this class's fields exist.
    const recorded = (this as unknown as { seriesByKey?: Map<string, Series> }).seriesByKey;
    if (recorded === undefined) return;
    for (const series of recorded.values()) {
      series.counts.fill(0);
      series.sum = 0;
      series.count = 0;
      this.zero(series.labels as LabelValues<T>);
    }
  }

  /** Observations ≤ `le` ('+Inf': all of them). */
  private cumulative(series: Series, le: string | number | undefined): number {
    if (le === '+Inf') return series.count;
    const bound = Number(le);
    let total = 0;
    for (let i = 0; i < this.bounds.length && this.bounds[i] <= bound; i++) total += series.counts[i];
    return total;
  }

  private keyOf(labels: LabelValues<T>): string {
    return this.labelOrder.map((name) => String(labels[name] ?? '')).join('\u0000');
  }
}
