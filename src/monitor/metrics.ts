/**
 * Prometheus metrics of the drift monitor (docs/metrics.md, "Drift monitor"), on an explicit
 * Registry passed in (never prom-client's global one). Grafana dashboards and Prometheus rules in
 * `dashboards/` are built on these names.
 *
 * The monitor service implements `MonitorMetricsSource`, a narrow read-only view of what it has
 * already computed (scores, thresholds, window counts, alert states); everything except the L0 and
 * FVU histograms is read from it at scrape time, so the row path does no metrics work. The
 * histograms are observed through a `MonitorRowObserver` whose recorders (`ArrayHistogram`) are
 * resolved once per SAE/hook, so observing a batch is two bucket searches per row into typed
 * arrays, with no label handling and no allocation.
 *
 * Cardinality is fixed at construction: the monitored SAEs, their windows, their watched features
 * and the alerts are given up front, every series exists from start, and watched features are
 * capped (`maxWatchedFeatures`) because each one adds two series per window. `model` is the served
 * model's name, the label the model server's own metrics join on.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import { ArrayHistogram } from './array-histogram.js';
import { err } from '../common/errors.js';
import type { DriftThresholds } from './calibration.js';
import type { DriftScores } from './divergence.js';
import { FixedSeriesGauge } from './fixed-series-gauge.js';
import { DEFAULT_FVU_EDGES, DEFAULT_L0_EDGES } from './histogram.js';

/**
 * `saegate_drift_score{statistic}` label values, one per window-level drift score, and `any`: the
 * family-wise score over the others (calibration.ts), whose threshold holds α for all of them.
 */
export const DRIFT_STATISTICS = ['jsd', 'l0_psi', 'fvu_psi', 'mean_fvu', 'projection_psi', 'any'] as const;
export type DriftStatistic = (typeof DRIFT_STATISTICS)[number];

/** Why the monitor dropped rows (`saegate_monitor_rows_dropped_total{reason}`). */
export const MONITOR_DROP_REASONS = ['invalid_batch', 'backlog', 'stopped'] as const;
export type MonitorDropReason = (typeof MONITOR_DROP_REASONS)[number];

/** Alert severities (`saegate_alert_firing{severity}`). */
export type AlertSeverity = 'info' | 'warning' | 'critical';

/** A feature whose firing rate and mean activation are exported. */
export interface WatchedFeature {
  /** Latent index, 0 ≤ feature < d_sae. */
  readonly feature: number;
  /** Human label (from the feature labels file), exported as the `label` label. */
  readonly label: string;
}

/** One monitored SAE at one hook point, fixed at start. */
export interface MonitoredSae {
  /** Served model name; joins with the model server's metrics. */
  readonly model: string;
  /** SAE id. */
  readonly sae: string;
  /** Hook point. */
  readonly hook: string;
  /** Window names (e.g. `1m`, `5m`, `1h`), as `WindowedStats` is configured. */
  readonly windows: readonly string[];
  /** Features to export per window. Default none. */
  readonly watched?: readonly WatchedFeature[];
  /** Whether a projection histogram is scored (adds the `projection_psi` statistic). Default false. */
  readonly projection?: boolean;
  /** A projection monitor (projection.ts): `projection_psi` is its only statistic. Default false. */
  readonly projectionOnly?: boolean;
}

/** An alert the monitor evaluates, fixed at start. */
export interface MonitorAlert {
  readonly alert: string;
  readonly severity: AlertSeverity;
}

/** The drift side of one window: present only when a baseline is loaded. */
export interface WindowDriftReading {
  readonly scores: DriftScores;
  readonly thresholds: DriftThresholds;
  /** Features flagged by Benjamini–Hochberg in this window. */
  readonly flaggedFeatures: number;
}

/** What one window holds now. */
export interface WindowReading {
  /** Rows (tokens) in the window. */
  readonly tokens: number;
  /** Per watched feature, in `MonitoredSae.watched` order: firings in the window. */
  readonly watchedFirings: ArrayLike<number>;
  /** Per watched feature, in the same order: sum of its activations in the window. */
  readonly watchedActivationSums: ArrayLike<number>;
  /** Scores and thresholds; null when no baseline is loaded. */
  readonly drift: WindowDriftReading | null;
}

/** The baseline an SAE is scored against. */
export interface BaselineReading {
  /** Identifies the baseline (e.g. its file name or hash). */
  readonly id: string;
  /** Tokens the baseline was recorded over. */
  readonly tokens: number;
}

/** What the monitor knows about one monitored SAE now. */
export interface MonitoredSaeReading {
  readonly baseline: BaselineReading | null;
  /** Rows the monitor received for this SAE. */
  readonly rows: number;
  /** Rows it received but did not count, by reason. */
  readonly rowsDropped: Readonly<Record<MonitorDropReason, number>>;
  /** Windows left without drift scores because the drift worker failed them. Absent: 0. */
  readonly assessmentErrors?: number;
  /** Per window name. A missing window exports no score, threshold or feature series this scrape. */
  readonly windows: Readonly<Record<string, WindowReading>>;
}

/**
 * The monitor service's read-only view. Called at scrape time, once per metric (prom-client
 * collects metrics one by one), so it must return what the service has already computed (its
 * latest assessments), not assess windows itself.
 */
export interface MonitorMetricsSource {
  /** Keyed by `monitorKey(sae, hook)`; a missing SAE exports zeros and no scores. */
  readings(): ReadonlyMap<string, MonitoredSaeReading>;
  /** Names of the alerts firing now. */
  firingAlerts(): ReadonlySet<string>;
  /** Alert webhook events by outcome (delivered, failed, dropped); absent: no webhook, zeros. */
  webhookDeliveries?(): Readonly<Record<'delivered' | 'failed' | 'dropped', number>>;
}

export interface MonitorMetricsOptions {
  registry: Registry;
  monitored: readonly MonitoredSae[];
  /** Alerts the monitor evaluates. Default none. */
  alerts?: readonly MonitorAlert[];
  source: MonitorMetricsSource;
  /** Most watched features over all monitored SAEs (each adds 2 series per window). Default 256. */
  maxWatchedFeatures?: number;
  /** L0 histogram buckets (upper bounds). Default `DEFAULT_L0_EDGES`. */
  l0Buckets?: readonly number[];
  /** FVU histogram buckets (upper bounds). Default `DEFAULT_FVU_EDGES`. */
  fvuBuckets?: readonly number[];
}

/** Observes encoded rows' L0 and FVU into the SAE's histograms. */
export interface MonitorRowObserver {
  /** Observes the first `rows` entries of `l0` and `fvu`. */
  observeRows(rows: number, l0: ArrayLike<number>, fvu: ArrayLike<number>): void;
}

/** Every metric name MonitorMetrics registers. */
export const MONITOR_METRIC_NAMES = [
  'saegate_drift_score',
  'saegate_drift_threshold',
  'saegate_drift_window_tokens',
  'saegate_drift_flagged_features',
  'saegate_alert_firing',
  'saegate_feature_firing_rate',
  'saegate_feature_mean_activation',
  'saegate_sae_l0',
  'saegate_sae_fvu',
  'saegate_monitor_rows_total',
  'saegate_monitor_rows_dropped_total',
  'saegate_monitor_assessment_errors_total',
  'saegate_baseline_info',
  'saegate_baseline_loaded',
  'saegate_alert_webhook_deliveries_total',
] as const;

/** The key of an SAE/hook pair in `MonitorMetricsSource.readings()`. */
export function monitorKey(sae: string, hook: string): string {
  return `${sae}\u0000${hook}`;
}

/** The field of `DriftScores` and `DriftThresholds` each exported `statistic` label reads. */
export const STATISTIC_OF: Readonly<Record<DriftStatistic, keyof DriftThresholds & keyof DriftScores>> = {
  jsd: 'jsd',
  l0_psi: 'l0Psi',
  fvu_psi: 'fvuPsi',
  mean_fvu: 'meanFvu',
  projection_psi: 'projectionPsi',
  any: 'any',
};

type SaeLabels = 'model' | 'sae' | 'hook';

function validate(monitored: readonly MonitoredSae[], alerts: readonly MonitorAlert[], maxWatched: number): void {
  if (!Number.isInteger(maxWatched) || maxWatched < 0) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `maxWatchedFeatures must be a non-negative integer, got ${maxWatched}`);
  const keys = new Set<string>();
  let watched = 0;
  for (const m of monitored) {
    const key = monitorKey(m.sae, m.hook);
    if (keys.has(key)) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `SAE '${m.sae}' at hook '${m.hook}' is monitored twice`);
    keys.add(key);
    if (m.windows.length === 0) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `SAE '${m.sae}' at hook '${m.hook}' has no windows`);
    const features = new Set<number>();
    for (const w of m.watched ?? []) {
      if (!Number.isInteger(w.feature) || w.feature < 0) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `watched feature must be a non-negative integer, got ${w.feature} (SAE '${m.sae}')`);
      if (features.has(w.feature)) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `feature ${w.feature} of SAE '${m.sae}' at hook '${m.hook}' is watched twice`);
      features.add(w.feature);
    }
    watched += features.size;
  }
  if (watched > maxWatched) {
    throw err(
      'SAEGATE_ERR_MONITOR_ARGUMENT',
      `${watched} watched features exceed maxWatchedFeatures (${maxWatched}); each adds 2 series per window: watch fewer features or raise the cap`,
    );
  }
  const names = new Set<string>();
  for (const a of alerts) {
    if (names.has(a.alert)) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `alert '${a.alert}' is declared twice`);
    names.add(a.alert);
  }
}

export class MonitorMetrics {
  private readonly registry: Registry;
  private readonly l0: ArrayHistogram<SaeLabels>;
  private readonly fvu: ArrayHistogram<SaeLabels>;
  private readonly monitored: readonly MonitoredSae[];

  constructor(options: MonitorMetricsOptions) {
    const { registry, monitored, source } = options;
    const alerts = options.alerts ?? [];
    validate(monitored, alerts, options.maxWatchedFeatures ?? 256);
    this.registry = registry;
    this.monitored = monitored;
    const registers = [registry];
    const saeLabels = (m: MonitoredSae): Record<SaeLabels, string> => ({ model: m.model, sae: m.sae, hook: m.hook });
    const statistics = (m: MonitoredSae): readonly DriftStatistic[] =>
      m.projectionOnly === true ? ['projection_psi', 'any'] : m.projection === true ? DRIFT_STATISTICS : DRIFT_STATISTICS.filter((s) => s !== 'projection_psi');
    /** Calls `each` for every window the source reports now. */
    const eachWindow = (each: (m: MonitoredSae, window: string, reading: WindowReading) => void): void => {
      const readings = source.readings();
      for (const m of monitored) {
        const reading = readings.get(monitorKey(m.sae, m.hook));
        if (reading === undefined) continue;
        for (const window of m.windows) {
          const w = reading.windows[window];
          if (w !== undefined) each(m, window, w);
        }
      }
    };

    // Scores and thresholds disappear (reset) when no baseline is loaded: a stale score would keep
    // an alert firing, and 0 would look like a perfect match.
    new Gauge({
      name: 'saegate_drift_score',
      help: 'Drift score of the window against the baseline, by statistic (jsd in bits; psi; mean_fvu).',
      labelNames: ['model', 'sae', 'hook', 'statistic', 'window'],
      registers,
      collect() {
        this.reset();
        eachWindow((m, window, w) => {
          if (w.drift === null) return;
          for (const statistic of statistics(m)) {
            const value = w.drift.scores[STATISTIC_OF[statistic]];
            if (value !== null) this.set({ ...saeLabels(m), statistic, window }, value);
          }
        });
      },
    });
    new Gauge({
      name: 'saegate_drift_threshold',
      help: "Calibrated threshold of the drift score at the window's size: a window from the baseline's distribution exceeds it with probability alpha.",
      labelNames: ['model', 'sae', 'hook', 'statistic', 'window'],
      registers,
      collect() {
        this.reset();
        eachWindow((m, window, w) => {
          if (w.drift === null) return;
          for (const statistic of statistics(m)) {
            const value = w.drift.thresholds[STATISTIC_OF[statistic]];
            if (typeof value === 'number') this.set({ ...saeLabels(m), statistic, window }, value);
          }
        });
      },
    });
    new Gauge({
      name: 'saegate_drift_window_tokens',
      help: 'Rows (tokens) in the window now.',
      labelNames: ['model', 'sae', 'hook', 'window'],
      registers,
      collect() {
        const readings = source.readings();
        for (const m of monitored) {
          const reading = readings.get(monitorKey(m.sae, m.hook));
          for (const window of m.windows) this.set({ ...saeLabels(m), window }, reading?.windows[window]?.tokens ?? 0);
        }
      },
    });
    new Gauge({
      name: 'saegate_drift_flagged_features',
      help: 'Features whose firing rate in the window differs from the baseline, flagged by Benjamini-Hochberg.',
      labelNames: ['model', 'sae', 'hook', 'window'],
      registers,
      collect() {
        this.reset();
        eachWindow((m, window, w) => {
          if (w.drift !== null) this.set({ ...saeLabels(m), window }, w.drift.flaggedFeatures);
        });
      },
    });
    new Gauge({
      name: 'saegate_alert_firing',
      help: 'Whether the monitor alert is firing now (1) or not (0).',
      labelNames: ['alert', 'severity'],
      registers,
      collect() {
        const firing = source.firingAlerts();
        for (const a of alerts) this.set({ alert: a.alert, severity: a.severity }, firing.has(a.alert) ? 1 : 0);
      },
    });
    // Watched-feature series are fixed at construction (m × window × feature, in that order), so
    // their label objects are built once and a scrape only writes numbers (fixed-series-gauge.ts).
    const featureLabels = ['model', 'sae', 'hook', 'feature', 'label', 'window'] as const;
    const featureSeries: Record<(typeof featureLabels)[number], string>[] = [];
    const featureBase = new Map<MonitoredSae, Map<string, number>>();
    for (const m of monitored) {
      const bases = new Map<string, number>();
      for (const window of m.windows) {
        bases.set(window, featureSeries.length);
        for (const f of m.watched ?? []) featureSeries.push({ ...saeLabels(m), feature: String(f.feature), label: f.label, window });
      }
      featureBase.set(m, bases);
    }
    /** Writes every watched feature's `value(firings, activationSum, tokens)` for the windows the source reports now. */
    const perFeature =
      (value: (firings: number, sum: number, tokens: number) => number) =>
      (values: Float64Array, present: Uint8Array): void => {
        eachWindow((m, window, w) => {
          const base = featureBase.get(m)?.get(window);
          if (base === undefined) return;
          const watched = m.watched ?? [];
          for (let i = 0; i < watched.length; i++) {
            values[base + i] = value(w.watchedFirings[i] ?? 0, w.watchedActivationSums[i] ?? 0, w.tokens);
            present[base + i] = 1;
          }
        });
      };
    new FixedSeriesGauge(
      { name: 'saegate_feature_firing_rate', help: 'Fraction of the window’s rows on which the watched feature was active (0 for an empty window).', labelNames: featureLabels, registers },
      featureSeries,
      perFeature((firings, _sum, tokens) => (tokens === 0 ? 0 : firings / tokens)),
    );
    new FixedSeriesGauge(
      { name: 'saegate_feature_mean_activation', help: 'Mean activation of the watched feature over the window’s rows where it was active (0 when it never fired).', labelNames: featureLabels, registers },
      featureSeries,
      perFeature((firings, sum) => (firings === 0 ? 0 : sum / firings)),
    );
    this.l0 = new ArrayHistogram({
      name: 'saegate_sae_l0',
      help: 'Active latents per encoded row (L0), as seen by the drift monitor.',
      labelNames: ['model', 'sae', 'hook'],
      buckets: [...(options.l0Buckets ?? DEFAULT_L0_EDGES)],
      registers,
    });
    this.fvu = new ArrayHistogram({
      name: 'saegate_sae_fvu',
      help: "Fraction of the row's variance the SAE failed to reconstruct (FVU), as seen by the drift monitor.",
      labelNames: ['model', 'sae', 'hook'],
      buckets: [...(options.fvuBuckets ?? DEFAULT_FVU_EDGES)],
      registers,
    });
    new Counter({
      name: 'saegate_monitor_rows_total',
      help: 'Encoded rows the drift monitor received (counted or dropped).',
      labelNames: ['model', 'sae', 'hook'],
      registers,
      collect() {
        const readings = source.readings();
        this.reset();
        for (const m of monitored) this.inc(saeLabels(m), readings.get(monitorKey(m.sae, m.hook))?.rows ?? 0);
      },
    });
    new Counter({
      name: 'saegate_monitor_rows_dropped_total',
      help: 'Encoded rows the drift monitor received but did not count, by reason (invalid_batch, backlog, stopped).',
      labelNames: ['model', 'sae', 'hook', 'reason'],
      registers,
      collect() {
        const readings = source.readings();
        this.reset();
        for (const m of monitored) {
          const reading = readings.get(monitorKey(m.sae, m.hook));
          for (const reason of MONITOR_DROP_REASONS) this.inc({ ...saeLabels(m), reason }, reading?.rowsDropped[reason] ?? 0);
        }
      },
    });
    new Counter({
      name: 'saegate_monitor_assessment_errors_total',
      help: 'Windows the drift monitor left without drift scores in an assessment because the drift worker failed them (it died or refused the window).',
      labelNames: ['model', 'sae', 'hook'],
      registers,
      collect() {
        const readings = source.readings();
        this.reset();
        for (const m of monitored) this.inc(saeLabels(m), readings.get(monitorKey(m.sae, m.hook))?.assessmentErrors ?? 0);
      },
    });
    new Gauge({
      name: 'saegate_baseline_info',
      help: 'The baseline each SAE is scored against (always 1; the labels carry the information).',
      labelNames: ['model', 'sae', 'hook', 'baseline_id', 'tokens'],
      registers,
      collect() {
        const readings = source.readings();
        this.reset();
        for (const m of monitored) {
          const baseline = readings.get(monitorKey(m.sae, m.hook))?.baseline;
          if (baseline != null) this.set({ ...saeLabels(m), baseline_id: baseline.id, tokens: String(baseline.tokens) }, 1);
        }
      },
    });
    new Gauge({
      name: 'saegate_baseline_loaded',
      help: 'Whether a baseline is loaded for the SAE (1) or not (0: no drift scores).',
      labelNames: ['model', 'sae', 'hook'],
      registers,
      collect() {
        const readings = source.readings();
        for (const m of monitored) this.set(saeLabels(m), readings.get(monitorKey(m.sae, m.hook))?.baseline == null ? 0 : 1);
      },
    });
    new Counter({
      name: 'saegate_alert_webhook_deliveries_total',
      help: 'Alert webhook events (firing and resolved) by outcome: delivered, failed (every attempt failed) or dropped (queue full, or shutdown).',
      labelNames: ['result'],
      registers,
      collect() {
        const counts = source.webhookDeliveries?.();
        this.reset();
        for (const result of ['delivered', 'failed', 'dropped'] as const) this.inc({ result }, counts?.[result] ?? 0);
      },
    });
    for (const m of monitored) {
      this.l0.zero(saeLabels(m));
      this.fvu.zero(saeLabels(m));
    }
  }

  /** The observer for one monitored SAE's encoded rows. Throws for an SAE not given at construction. */
  rowObserver(sae: string, hook: string): MonitorRowObserver {
    const m = this.monitored.find((candidate) => candidate.sae === sae && candidate.hook === hook);
    if (m === undefined) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `SAE '${sae}' at hook '${hook}' is not monitored`);
    const labels = { model: m.model, sae, hook };
    const l0 = this.l0.recorder(labels);
    const fvu = this.fvu.recorder(labels);
    return {
      observeRows(rows, l0Values, fvuValues) {
        for (let r = 0; r < rows; r++) {
          l0.observe(l0Values[r]);
          fvu.observe(fvuValues[r]);
        }
      },
    };
  }

  /** Removes every monitor metric from the registry. */
  unregister(): void {
    for (const name of MONITOR_METRIC_NAMES) this.registry.removeSingleMetric(name);
  }
}
