/**
 * A prom-client `Gauge` whose label sets are all known at construction (the monitor's watched
 * features: fixed cardinality by design) and whose values are refreshed in place at scrape time.
 *
 * Why not `gauge.set(labels, value)` per series in `collect()`: prom-client validates every label
 * name and rebuilds a sorted hash key from the label object on every `set` (a `labels()` child
 * does the same, it only pre-binds the object), and the caller builds a fresh label object per
 * series besides. With 500 watched features that was 3,000 objects, validations and hash keys per
 * scrape for values that need none of it. Here each series' label object is built and validated
 * once, and a scrape writes numbers into a typed array and hands prom-client the same objects.
 * Only the public `get()` is overridden, so the registry's text and JSON output are unchanged.
 */
import { Gauge, type GaugeConfiguration, type LabelValues } from 'prom-client';

/** Writes the current value of series i into `values[i]` and sets `present[i]`; series never present are not exported. */
export type FixedSeriesUpdate = (values: Float64Array, present: Uint8Array) => void;

export class FixedSeriesGauge<T extends string> extends Gauge<T> {
  private readonly series: { readonly labels: LabelValues<T>; value: number }[];
  private readonly values: Float64Array;
  private readonly present: Uint8Array;

  /** `labelSets[i]` is series i's labels (validated here, once); `update` runs at every scrape. */
  constructor(
    configuration: Omit<GaugeConfiguration<T>, 'collect'>,
    labelSets: readonly LabelValues<T>[],
    private readonly update: FixedSeriesUpdate,
  ) {
    super(configuration);
    for (const labels of labelSets) this.labels(labels); // throws on a label name not in labelNames
    this.series = labelSets.map((labels) => ({ labels: Object.freeze({ ...labels }), value: 0 }));
    this.values = new Float64Array(labelSets.length);
    this.present = new Uint8Array(labelSets.length);
  }

  override async get(): ReturnType<Gauge<T>['get']> {
    const metric = await super.get();
    this.update(this.values, this.present);
    const out: { labels: LabelValues<T>; value: number }[] = [];
    for (let i = 0; i < this.series.length; i++) {
      if (this.present[i] === 0) continue;
      this.series[i].value = this.values[i];
      out.push(this.series[i]);
    }
    return { ...metric, values: out };
  }
}
