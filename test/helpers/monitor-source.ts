/**
 * A simple, real implementation of `MonitorMetricsSource` for tests: one SAE's rows go through a
 * real `WindowedStats`; `assess()` scores every window against a real `DriftCalibrator` (as the
 * monitor service will on its own tick) and caches the readings that scrapes return. Alerts fire
 * when any score of the named window is above its threshold. Synthetic traffic comes from
 * `SyntheticTraffic`, the baseline from a `BaselineRecorder` over the same distribution.
 */
import { BaselineRecorder } from '../../src/monitor/baseline-recorder.js';
import { DriftCalibrator } from '../../src/monitor/calibration.js';
import { assessWindow } from '../../src/monitor/drift.js';
import {
  MONITOR_DROP_REASONS,
  monitorKey,
  type MonitoredSae,
  type MonitoredSaeReading,
  type MonitorDropReason,
  type MonitorMetricsSource,
  type MonitorRowObserver,
  type WindowReading,
} from '../../src/monitor/metrics.js';
import { BaselineReference } from '../../src/monitor/reference.js';
import type { EncodedRows } from '../../src/monitor/rows.js';
import { WindowedStats, type WindowSpec } from '../../src/monitor/windows.js';
import { SyntheticTraffic, type SyntheticShift } from './monitor-synthetic.js';

export interface MonitorSourceOptions {
  readonly monitored: MonitoredSae;
  readonly dSae: number;
  /** Baseline documents recorded from unshifted synthetic traffic; 0: no baseline. */
  readonly baselineDocuments: number;
  readonly windows: readonly WindowSpec[];
  /** Alert name → the window whose exceedances fire it. */
  readonly alertWindows?: Readonly<Record<string, string>>;
  readonly now: () => number;
}

export class InMemoryMonitorSource implements MonitorMetricsSource {
  readonly stats: WindowedStats;
  readonly calibrator: DriftCalibrator | null;
  private readonly rowsDropped: Record<MonitorDropReason, number>;
  private rows = 0;
  private cached = new Map<string, MonitoredSaeReading>();
  private firing = new Set<string>();
  private observer: MonitorRowObserver | null = null;

  constructor(private readonly options: MonitorSourceOptions) {
    const { dSae } = options;
    this.stats = new WindowedStats({ dSae, windows: options.windows, now: options.now });
    this.rowsDropped = Object.fromEntries(MONITOR_DROP_REASONS.map((r) => [r, 0])) as Record<MonitorDropReason, number>;
    if (options.baselineDocuments > 0) {
      const traffic = new SyntheticTraffic({ dSae, seed: 1 });
      const recorder = new BaselineRecorder({ dSae });
      for (let d = 0; d < options.baselineDocuments; d++) recorder.addDocument(traffic.document());
      const m = options.monitored;
      const baseline = recorder.toBaseline({ model: m.model, sae: { id: m.sae, hash: 'sha256:test' }, hook: m.hook, saegateVersion: '0' });
      this.calibrator = new DriftCalibrator(new BaselineReference(baseline), { alpha: 0.01, replicates: 99, seed: 3 });
    } else {
      this.calibrator = null;
    }
  }

  /** Feeds histograms as well as windows from now on. */
  observeWith(observer: MonitorRowObserver): void {
    this.observer = observer;
  }

  /** Counts a batch into the windows (and the row histograms). */
  ingest(batch: EncodedRows): void {
    this.rows += batch.rows;
    this.stats.ingest(batch);
    this.observer?.observeRows(batch.rows, batch.l0, batch.fvu);
  }

  /** Counts a batch as received but dropped. */
  drop(batch: EncodedRows, reason: MonitorDropReason): void {
    this.rows += batch.rows;
    this.rowsDropped[reason] += batch.rows;
  }

  /** Feeds `documents` synthetic documents with `shift`. */
  feed(documents: number, seed: number, shift?: SyntheticShift): void {
    const traffic = new SyntheticTraffic({ dSae: this.options.dSae, seed, shift });
    for (let d = 0; d < documents; d++) this.ingest(traffic.document());
  }

  /** Scores every window now and caches the readings (the monitor service's tick). */
  assess(): void {
    const m = this.options.monitored;
    const watched = m.watched ?? [];
    const windows: Record<string, WindowReading> = {};
    const exceededBy = new Set<string>();
    for (const spec of this.options.windows) {
      const snapshot = this.stats.snapshot(spec.name);
      const assessment = this.calibrator === null ? null : assessWindow(snapshot, this.calibrator);
      if (assessment !== null && Object.values(assessment.exceeded).some(Boolean)) exceededBy.add(spec.name);
      windows[spec.name] = {
        tokens: snapshot.tokens,
        watchedFirings: watched.map((w) => snapshot.firingCounts[w.feature]),
        watchedActivationSums: watched.map((w) => snapshot.activationSums[w.feature]),
        drift: assessment === null ? null : { scores: assessment.scores, thresholds: assessment.thresholds, flaggedFeatures: assessment.features.flagged },
      };
    }
    const baseline = this.calibrator === null ? null : { id: 'synthetic-baseline', tokens: this.calibrator.reference.totals.tokens };
    this.cached = new Map([[monitorKey(m.sae, m.hook), { baseline, rows: this.rows, rowsDropped: { ...this.rowsDropped }, windows }]]);
    this.firing = new Set(Object.entries(this.options.alertWindows ?? {}).filter(([, window]) => exceededBy.has(window)).map(([alert]) => alert));
  }

  readings(): ReadonlyMap<string, MonitoredSaeReading> {
    return this.cached;
  }

  firingAlerts(): ReadonlySet<string> {
    return this.firing;
  }
}
