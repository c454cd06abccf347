/**
 * The drift monitor running inside `saegate serve` (docs/monitor.md, "The monitor in serve"). One
 * entry per monitored SAE/hook: sliding-window statistics (windows.ts), per-request summaries
 * (request-summaries.ts), an optional baseline with its calibrators (reference.ts, calibration.ts),
 * an optional live baseline recording (live-recording.ts).
 *
 * Projection monitors (projection.ts) are entries too: `spec.projection`, fed by `offerProjection`,
 * their windows' projection edges taken from their baseline.
 *
 * Row path: the SAE engine's result batches are converted to `EncodedRows` (adapter.ts), checked,
 * and queued; the queue is drained off the listener's stack (setImmediate), a bounded number of
 * rows per turn. When the queue holds more than `maxBacklogRows` rows a new batch is dropped whole
 * and counted (`backlog`); a bad batch is counted as `invalid_batch`; a batch after `close` as
 * `stopped`. Nothing on the row path assesses anything.
 *
 * Assessment path: every `assessIntervalMs` (and on demand) the service drains the queue, snapshots
 * each window and has the drift worker (drift-worker.ts, a worker thread holding each baseline's
 * reference and calibrators) score it (`assessWindow`; the calibrator caches thresholds per token
 * bucket, so a steady window costs no bootstrap), then evaluates the alert rules. A window the worker
 * fails gets no scores that round (logged, counted); the worker restarts with every baseline.
 * Metrics read the latest assessment at scrape time (`MonitorMetricsSource`), so a scrape costs no
 * statistics.
 *
 * Baselines: loaded at start from files (each matched to its SAE/hook by its provenance hook and
 * checked with `checkCompatible`); a file that cannot be used is recorded as that SAE's baseline
 * error and the SAE runs without drift scores. `replaceBaseline` hot-swaps one; on error the last
 * good baseline stays.
 */
import type { Registry } from 'prom-client';
import { err, SaegateError } from '../common/errors.js';
import type { SaeResultBatch } from '../sae/batcher.js';
import { encodedRowsFromResults } from './adapter.js';
import { signalFeature, type AlertRule, type AlertRulesFile } from './alert-rules.js';
import { AlertEvaluator, WebhookNotifier, type AlertEvent, type AlertStatus, type MonitorLogger } from './alerts.js';
import { checkCompatible, parseBaseline, readBaseline, writeBaseline, type Baseline } from './baseline.js';
import { siblingModule } from '../common/worker.js';
import { WorkerHost } from '../common/worker-host.js';
import { DriftCalibrator, type CalibrationOptions, type DriftThresholds } from './calibration.js';
import type { DriftAssessment } from './drift.js';
import type { DriftRequest, DriftResponse, DriftWorkerProtocol } from './drift-protocol.js';
import type { FeatureTestOptions } from './feature-tests.js';
import { LiveBaselineRecording } from './live-recording.js';
import { LiveProjectionRecording } from './live-projection-recording.js';
import {
  MonitorMetrics,
  monitorKey,
  STATISTIC_OF,
  type MonitorAlert,
  type MonitorDropReason,
  type MonitorMetricsSource,
  type MonitorRowObserver,
  type MonitoredSaeReading,
  type WatchedFeature,
  type WindowReading,
} from './metrics.js';
import { BaselineReference } from './reference.js';
import { RequestSummaries, type RequestSummary } from './request-summaries.js';
import { checkEncodedRows, type EncodedRows } from './rows.js';
import { DEFAULT_WINDOWS, WindowedStats, type WindowSpec } from './windows.js';
import { sameEdges } from './histogram.js';

/** One monitored SAE at one hook. */
export interface MonitorSaeSpec {
  /** Served model name: the `model` metric label, compared with a baseline's provenance (not when `UNKNOWN_MODEL`). */
  readonly model: string;
  /** SAE id (the directory name `serve --sae` loaded it from). */
  readonly sae: string;
  readonly hook: string;
  readonly dSae: number;
  /** `saeWeightsHash` of the SAE: compared with a baseline's `sae.hash`, written into recordings. Not compared when absent. */
  readonly saeHash?: string;
  /** Features whose firing rate is exported. */
  readonly watched?: readonly WatchedFeature[];
  /** Feature labels (from the SAE's features.yaml), for the admin API's JSON only. */
  readonly labels?: ReadonlyMap<number, string>;
  /**
   * A projection monitor (projection.ts), not an SAE: `sae` is its name, `dSae` is 1, rows come
   * through `offerProjection`, its only score is `projection_psi`, and its windows take their
   * projection edges from its baseline. Several may share a hook with each other and with an SAE.
   */
  readonly projection?: boolean;
}

export interface MonitorServiceOptions {
  readonly saes: readonly MonitorSaeSpec[];
  /** Default `DEFAULT_WINDOWS` (1m, 5m, 1h). */
  readonly windows?: readonly WindowSpec[];
  /** Calibration of thresholds (α default 0.01, 400 replicates). */
  readonly calibration?: CalibrationOptions;
  readonly featureTests?: FeatureTestOptions;
  /** How often windows are assessed and alerts evaluated, ms. Default 5000. */
  readonly assessIntervalMs?: number;
  /** Rows waiting to be counted before new batches are dropped. Default 65,536. */
  readonly maxBacklogRows?: number;
  /** Rows counted per event-loop turn while draining. Default 8192. */
  readonly drainRowsPerTurn?: number;
  readonly alertRules?: AlertRulesFile;
  /** Registers `MonitorMetrics` here. Default: no metrics. */
  readonly registry?: Registry;
  /** Cap on watched features over all SAEs. Default 256. */
  readonly maxWatchedFeatures?: number;
  /** Clock, ms. Default `Date.now`. */
  readonly now?: () => number;
  readonly logger?: MonitorLogger;
  /** Top drifting features kept per window for the admin API. Default 10. */
  readonly topFeatures?: number;
  /** Written into recorded baselines' provenance. Default `unknown`. */
  readonly saegateVersion?: string;
}

/** Why an SAE has no (or not the newest) baseline. */
export interface BaselineProblem {
  readonly source: string;
  readonly code: string;
  readonly message: string;
}

/** The baseline an SAE is scored against. */
export interface LoadedBaseline {
  /** File path, or `admin:<time>` for a body. */
  readonly source: string;
  /** Baseline id: its file name and creation time. */
  readonly id: string;
  readonly tokens: number;
  readonly documents: number;
  readonly createdAt: string;
  readonly reference: BaselineReference;
}

interface WindowState {
  tokens: number;
  watchedFirings: Float64Array;
  watchedSums: Float64Array;
  assessment: DriftAssessment | null;
  /** Thresholds at the alert rules' own false-alarm rates (other than the monitor's α). */
  extraThresholds: ReadonlyMap<number, DriftThresholds>;
}

interface Entry {
  readonly spec: MonitorSaeSpec;
  readonly key: string;
  /** Replaced when a projection monitor's baseline brings other projection edges. */
  stats: WindowedStats;
  readonly summaries: RequestSummaries;
  readonly watchedIndex: Uint32Array;
  observer: MonitorRowObserver | null;
  baseline: LoadedBaseline | null;
  /** Bumped by every baseline install: an assessment scored on an older baseline is discarded. */
  baselineVersion: number;
  /** Windows that got no drift scores because the drift worker failed (died, or refused the window). */
  assessmentErrors: number;
  problem: BaselineProblem | null;
  rows: number;
  dropped: Record<MonitorDropReason, number>;
  windows: Map<string, WindowState>;
  recent: RequestSummary[];
  recording: LiveBaselineRecording | LiveProjectionRecording | null;
}

/** Live recording state for the admin API and readiness. */
export interface RecordingStatus {
  readonly state: 'off' | 'recording' | 'written' | 'failed';
  readonly file: string | null;
  readonly startedAt: string | null;
  /** ms since epoch when it stops by itself; null: at stop/close. */
  readonly endsAtMs: number | null;
  readonly documents: number;
  readonly tokens: number;
  readonly error: string | null;
}

/** The monitor's default false-alarm rate per score and window. */
export const DEFAULT_ALPHA = 0.01;

/** The `model` of an SAE whose config names no model: a baseline's model is then not compared. */
export const UNKNOWN_MODEL = 'unknown';

const RECENT_REQUESTS = 64;
const MAX_PENDING_ENDS = 4096;

export class MonitorService implements MonitorMetricsSource {
  readonly windows: readonly WindowSpec[];
  readonly alpha: number;
  readonly metrics: MonitorMetrics | null;
  readonly alerts: AlertEvaluator | null;
  readonly webhook: WebhookNotifier | null;
  logger: MonitorLogger | undefined;
  /** The model id tap connections announce (MonitoredSink sets it); recorded baselines name it. */
  tapModel: () => string | null = () => null;
  /** Baseline files that matched no monitored SAE or could not be read at all. */
  readonly unmatchedBaselines: BaselineProblem[] = [];
  private readonly entries: Entry[];
  private readonly byHook = new Map<string, Entry>();
  /** Projection monitors by name (not in `byHook`: they may share a hook). */
  private readonly byProjection = new Map<string, Entry>();
  private readonly options: MonitorServiceOptions;
  private readonly now: () => number;
  private readonly queue: { entry: Entry; rows: EncodedRows }[] = [];
  private queuedRows = 0;
  private draining = false;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private lastAssessedMs: number | null = null;
  /** Assessments running or waiting for the one running (the timer skips a tick while any is). */
  private pendingAssessments = 0;
  private assessment: Promise<void> = Promise.resolve();
  /** The drift worker, started with the first baseline; null until then (and after a failed start). */
  private drift: Promise<WorkerHost<DriftWorkerProtocol>> | null = null;
  private recordingState: { file: string; startedAt: string; endsAtMs: number | null; timer: NodeJS.Timeout | null } | null = null;
  private recordingResult: RecordingStatus = { state: 'off', file: null, startedAt: null, endsAtMs: null, documents: 0, tokens: 0, error: null };
  private readonly events: AlertEvent[] = [];
  /** Ends reported since the last assessment, and those reported before it (processed at the next). */
  private endsNext: string[] = [];
  private endsReady: string[] = [];

  constructor(options: MonitorServiceOptions) {
    this.options = options;
    this.now = options.now ?? Date.now;
    this.logger = options.logger;
    this.windows = options.windows ?? DEFAULT_WINDOWS;
    this.alpha = options.calibration?.alpha ?? DEFAULT_ALPHA;
    const names = options.saes.map((s) => s.sae);
    const twice = names.find((name, i) => names.indexOf(name) !== i && options.saes.some((s) => s.sae === name && s.projection === true));
    if (twice !== undefined) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `'${twice}' names a projection monitor and another monitored signal; names must differ`);
    this.entries = options.saes.map((spec) => {
      const watched = spec.watched ?? [];
      const entry: Entry = {
        spec,
        key: monitorKey(spec.sae, spec.hook),
        stats: new WindowedStats({ dSae: spec.dSae, windows: this.windows, now: this.now }),
        summaries: new RequestSummaries({ dSae: spec.dSae, watchedFeatures: watched.map((w) => w.feature) }),
        watchedIndex: Uint32Array.from(watched.map((w) => w.feature)),
        observer: null,
        baseline: null,
        baselineVersion: 0,
        assessmentErrors: 0,
        problem: null,
        rows: 0,
        dropped: { invalid_batch: 0, backlog: 0, stopped: 0 },
        windows: new Map(),
        recent: [],
        recording: null,
      };
      if (spec.projection === true) {
        if (this.byProjection.has(spec.sae)) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `two projection monitors named '${spec.sae}'`);
        this.byProjection.set(spec.sae, entry);
        return entry;
      }
      if (this.byHook.has(spec.hook)) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `two monitored SAEs at hook '${spec.hook}'; one per hook point`);
      this.byHook.set(spec.hook, entry);
      return entry;
    });
    const rules = options.alertRules?.rules ?? [];
    this.webhook = options.alertRules?.webhook === undefined ? null : new WebhookNotifier(options.alertRules.webhook, { info: (o, m) => this.logger?.info(o, m), warn: (o, m) => this.logger?.warn(o, m) });
    this.alerts = rules.length === 0 ? null : new AlertEvaluator(rules, (rule) => this.entryForRule(rule).spec.hook, (event) => this.onAlert(event));
    this.metrics =
      options.registry === undefined
        ? null
        : new MonitorMetrics({
            registry: options.registry,
            monitored: options.saes.map((s) => ({ model: s.model, sae: s.sae, hook: s.hook, windows: this.windows.map((w) => w.name), watched: s.watched ?? [], ...(s.projection === true && { projectionOnly: true }) })),
            alerts: rules.map((r): MonitorAlert => ({ alert: r.name, severity: r.severity })),
            source: this,
            maxWatchedFeatures: options.maxWatchedFeatures,
          });
    // A projection monitor's rows have no L0 or FVU to observe.
    if (this.metrics !== null) for (const entry of this.entries) if (entry.spec.projection !== true) entry.observer = this.metrics.rowObserver(entry.spec.sae, entry.spec.hook);
  }

  /** Starts the assessment timer (unref'd: it never keeps the process alive). */
  start(): void {
    if (this.timer !== null || this.closed) return;
    this.timer = setInterval(() => this.tick(), this.options.assessIntervalMs ?? 5000);
    this.timer.unref();
  }

  /** The monitored SAEs. */
  get saes(): readonly MonitorSaeSpec[] {
    return this.entries.map((e) => e.spec);
  }

  // ---- row path -------------------------------------------------------------------------------

  /** The SAE engine's listener: converts and queues the batch (never assesses). */
  offerResults(batch: SaeResultBatch): void {
    const entry = this.byHook.get(batch.hook);
    if (entry === undefined) return;
    this.offer(entry, encodedRowsFromResults(batch), batch.rowCount);
  }

  /** Queues rows of the SAE at `hook` (tests and other producers). */
  offerRows(hook: string, rows: EncodedRows): void {
    const entry = this.byHook.get(hook);
    if (entry === undefined) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `no monitored SAE at hook '${hook}'`);
    this.offer(entry, rows, rows.rows);
  }

  /** Queues projection rows (projection.ts `projectionRows`) of the projection monitor `name`. */
  offerProjection(name: string, rows: EncodedRows): void {
    const entry = this.byProjection.get(name);
    if (entry === undefined) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `no projection monitor '${name}'`);
    this.offer(entry, rows, rows.rows);
  }

  private offer(entry: Entry, rows: EncodedRows, count: number): void {
    entry.rows += count;
    if (this.closed) {
      entry.dropped.stopped += count;
      return;
    }
    try {
      checkEncodedRows(rows, entry.spec.dSae);
    } catch (error) {
      if (!(error instanceof SaegateError)) throw error;
      entry.dropped.invalid_batch += count;
      return;
    }
    if (this.queuedRows + rows.rows > (this.options.maxBacklogRows ?? 65_536)) {
      entry.dropped.backlog += count;
      return;
    }
    this.queue.push({ entry, rows });
    this.queuedRows += rows.rows;
    if (!this.draining) {
      this.draining = true;
      setImmediate(() => this.drainTurn());
    }
  }

  /** Rows waiting to be counted. */
  get backlogRows(): number {
    return this.queuedRows;
  }

  private drainTurn(): void {
    this.drain(this.options.drainRowsPerTurn ?? 8192);
    if (this.queue.length > 0 && !this.closed) setImmediate(() => this.drainTurn());
    else this.draining = false;
  }

  /** Counts queued batches, at least one and up to about `maxRows` rows (all with Infinity). */
  drain(maxRows = Infinity): void {
    let counted = 0;
    while (this.queue.length > 0 && counted < maxRows) {
      const { entry, rows } = this.queue.shift()!;
      this.queuedRows -= rows.rows;
      counted += rows.rows;
      entry.stats.add(rows);
      entry.summaries.add(rows);
      entry.observer?.observeRows(rows.rows, rows.l0, rows.fvu);
      entry.recording?.add(rows);
    }
  }

  /**
   * The model server finished a request. Its summary (and recorded document) close at the second
   * assessment from now: rows it sent before its end may still be with the SAE workers.
   */
  requestEnded(requestId: string): void {
    this.endsNext.push(requestId);
    // Bounded: past the cap the oldest waiting end is processed now.
    if (this.endsNext.length > MAX_PENDING_ENDS) this.finishRequest(this.endsNext.shift()!);
  }

  private finishRequest(requestId: string): void {
    for (const entry of this.entries) {
      const summary = entry.summaries.finish(requestId);
      if (summary !== undefined) {
        entry.recent.push(summary);
        if (entry.recent.length > RECENT_REQUESTS) entry.recent.shift();
      }
      entry.recording?.ended(requestId);
    }
  }

  // ---- assessment -----------------------------------------------------------------------------

  /**
   * Drains the queue, scores every window, evaluates the alert rules (admin API, tests). Runs after
   * the assessment in progress, if any, and resolves when its own has finished.
   */
  assess(): Promise<void> {
    this.pendingAssessments++;
    const run = this.assessment.then(() => this.runAssessment()).finally(() => this.pendingAssessments--);
    this.assessment = run.catch(() => undefined);
    return run;
  }

  /** The timer's assessment; a tick that finds the previous one still running is skipped. */
  private tick(): void {
    if (this.pendingAssessments > 0 || this.closed) return;
    this.assess().catch((error: unknown) => this.logger?.warn({ error: String(error) }, 'drift assessment failed'));
  }

  /**
   * Snapshots each window on the event loop, one SAE window per turn, and sends its sums to the drift
   * worker, which scores them (calibration, drift scores, per-feature tests with BH: O(d_sae) each,
   * and a bootstrap per new token bucket). Requests and scrapes run meanwhile. A window the worker
   * fails (it died: the host's SAEGATE_ERR_WORKER_EXITED) gets no drift scores this round: logged and
   * counted (`saegate_monitor_assessment_errors_total`); the worker is restarted for the next.
   */
  private async runAssessment(): Promise<void> {
    if (this.closed) return;
    this.beginAssessment();
    const extraAlphas = this.ruleAlphas();
    const scored: Promise<void>[] = [];
    for (const entry of this.entries) {
      for (const spec of this.windows) {
        if (this.closed) break;
        scored.push(this.assessOne(entry, spec, extraAlphas));
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
    await Promise.all(scored);
    if (this.closed) return;
    this.finishAssessment();
  }

  /** The watched features per SAE id, as exported (fixed at construction). */
  watched(): ReadonlyMap<string, readonly WatchedFeature[]> {
    const out = new Map<string, WatchedFeature[]>();
    for (const entry of this.entries) out.set(entry.spec.sae, [...(out.get(entry.spec.sae) ?? []), ...(entry.spec.watched ?? [])]);
    return out;
  }

  /** Resolves when the assessment in progress (if any) has finished. */
  assessed(): Promise<void> {
    return this.assessment;
  }

  private beginAssessment(): void {
    this.drain();
    for (const id of this.endsReady) this.finishRequest(id);
    this.endsReady = this.endsNext;
    this.endsNext = [];
  }

  private async assessOne(entry: Entry, spec: WindowSpec, extraAlphas: readonly number[]): Promise<void> {
    const snapshot = entry.stats.snapshot(spec.name);
    const n = entry.watchedIndex.length;
    const state: WindowState = { tokens: snapshot.tokens, watchedFirings: new Float64Array(n), watchedSums: new Float64Array(n), assessment: null, extraThresholds: new Map() };
    for (let i = 0; i < n; i++) {
      state.watchedFirings[i] = snapshot.firingCounts[entry.watchedIndex[i]];
      state.watchedSums[i] = snapshot.activationSums[entry.watchedIndex[i]];
    }
    if (entry.baseline !== null) {
      const version = entry.baselineVersion;
      const { tokens, firingCounts, fvuSum, l0Histogram, fvuHistogram, projectionHistogram } = snapshot;
      const request: DriftRequest = {
        kind: 'assess',
        key: entry.key,
        window: { tokens, firingCounts, fvuSum, l0Histogram, fvuHistogram, projectionHistogram },
        alpha: this.alpha,
        extraAlphas,
        featureTests: { ...this.options.featureTests, top: this.options.topFeatures ?? 10 },
      };
      const transfer = [firingCounts.buffer, l0Histogram.buffer, fvuHistogram.buffer, ...(projectionHistogram === null ? [] : [projectionHistogram.buffer])] as ArrayBuffer[];
      try {
        const result = await this.requestDrift(request, transfer);
        // Scored on a baseline that was replaced meanwhile: the new baseline's windows start empty.
        if (entry.baselineVersion !== version || this.closed) return;
        state.assessment = result.assessment;
        state.extraThresholds = new Map(result.extraThresholds);
      } catch (error) {
        if (!(error instanceof SaegateError)) throw error;
        if (entry.baselineVersion !== version || this.closed) return;
        entry.assessmentErrors++;
        this.logger?.warn({ sae: entry.spec.sae, hook: entry.spec.hook, window: spec.name, code: error.code }, `${error.message}; no drift scores for window ${spec.name} this round`);
      }
    }
    entry.windows.set(spec.name, state);
  }

  /** The false-alarm rates alert rules ask for besides the monitor's own. */
  private ruleAlphas(): number[] {
    const alphas = new Set<number>();
    for (const rule of this.options.alertRules?.rules ?? []) {
      const alpha = typeof rule.threshold === 'object' ? rule.threshold?.falseAlarmRate : undefined;
      if (alpha !== undefined && alpha !== this.alpha) alphas.add(alpha);
    }
    return [...alphas];
  }

  private finishAssessment(): void {
    this.lastAssessedMs = this.now();
    this.alerts?.evaluate(this.lastAssessedMs, (rule, hook) => this.readRule(rule, hook));
    this.checkRecordingDeadline();
  }

  /** The drift worker (started on first use, restarted after a crash with every current baseline). */
  private driftWorker(): Promise<WorkerHost<DriftWorkerProtocol>> {
    if (this.drift === null) {
      const started = WorkerHost.start<DriftWorkerProtocol>({
        entry: siblingModule(import.meta.url, 'drift-worker'),
        name: 'drift worker',
        restart: 'always',
        init: () => {
          const transfer: ArrayBuffer[] = [];
          const baselines = this.entries.flatMap((e) => {
            if (e.baseline === null) return [];
            const copy = e.baseline.reference.copyParts();
            transfer.push(...copy.transfer);
            return [{ key: e.key, reference: copy.parts }];
          });
          return { init: { calibration: this.options.calibration ?? {}, baselines }, transfer };
        },
        onRestart: (error) => this.logger?.warn({ code: error.code }, `${error.message}; drift worker restarted`),
      });
      this.drift = started;
      // A failed start is retried by the next request.
      started.catch(() => {
        if (this.drift === started) this.drift = null;
      });
    }
    return this.drift;
  }

  private async requestDrift(request: DriftRequest, transfer: ArrayBuffer[] = []): Promise<DriftResponse> {
    const host = await this.driftWorker();
    return host.request(request, transfer);
  }

  /** The drift worker's host, once started (tests end it to exercise crash recovery). */
  async driftHost(): Promise<WorkerHost<DriftWorkerProtocol> | null> {
    return this.drift;
  }

  private entryForRule(rule: AlertRule): Entry {
    const entry = this.entries.find((e) => e.spec.sae === rule.sae && (rule.hook === undefined || e.spec.hook === rule.hook));
    if (entry === undefined) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `alert '${rule.name}' names SAE '${rule.sae}', which is not monitored`);
    return entry;
  }

  private readRule(rule: AlertRule, hook: string): { value: number; threshold: number } | null {
    const entry = this.byHook.get(hook);
    const window = entry?.windows.get(rule.window);
    if (entry === undefined || window === undefined || window.tokens === 0) return null;
    const signal = rule.signal;
    if (typeof signal === 'object') {
      const i = entry.watchedIndex.indexOf(signalFeature(signal));
      if (i < 0) return null;
      const firings = window.watchedFirings[i];
      // As the metrics define them: rate over the window's rows, mean over the rows where it fired.
      const value = 'featureRate' in signal ? firings / window.tokens : firings === 0 ? 0 : window.watchedSums[i] / firings;
      return { value, threshold: rule.threshold as number };
    }
    const assessment = window.assessment;
    if (assessment === null) return null;
    if (signal === 'flagged_features') return { value: assessment.features.flagged, threshold: rule.threshold as number };
    const field = STATISTIC_OF[signal];
    const value = assessment.scores[field];
    if (value === null) return null;
    if (typeof rule.threshold === 'number') return { value, threshold: rule.threshold };
    const alpha = rule.threshold?.falseAlarmRate ?? this.alpha;
    const thresholds = alpha === this.alpha ? assessment.thresholds : window.extraThresholds.get(alpha);
    const threshold = thresholds?.[field] ?? null;
    return threshold === null ? null : { value, threshold };
  }

  private onAlert(event: AlertEvent): void {
    this.events.push(event);
    if (this.events.length > RECENT_REQUESTS) this.events.shift();
    const log = { alert: event.alert, status: event.status, severity: event.severity, sae: event.sae, hook: event.hook, signal: event.signal, window: event.window, value: event.value, threshold: event.threshold };
    if (event.status === 'firing') this.logger?.warn(log, `alert ${event.alert} firing: ${event.summary}`);
    else this.logger?.info(log, `alert ${event.alert} resolved`);
    this.webhook?.send(event);
  }

  // ---- baselines ------------------------------------------------------------------------------

  /**
   * Loads baseline files at start: each is matched to its SAE by its provenance hook and checked. A
   * file that cannot be used never throws: the problem is kept (readiness details, admin API) and
   * that SAE runs without drift scores.
   */
  loadBaselineFiles(files: readonly string[]): void {
    const loadedFrom = new Map<Entry, string>();
    for (const file of files) {
      try {
        const baseline = readBaseline(file);
        const target = this.entryForBaseline(baseline);
        const earlier = [...loadedFrom].find(([entry]) => entry === target);
        if (earlier !== undefined) throw err('SAEGATE_ERR_BASELINE_MISMATCH', file, `a second baseline for hook '${baseline.provenance.hook}' (the first is '${earlier[1]}'); give one per SAE/hook`);
        this.installBaseline(baseline, file, undefined);
        const entry = target;
        if (entry !== undefined) loadedFrom.set(entry, file);
      } catch (error) {
        if (!(error instanceof SaegateError)) throw error;
        const problem = { source: file, code: error.code, message: error.message };
        const entry = error.code === 'SAEGATE_ERR_BASELINE_MISMATCH' ? this.entryForBaselineFile(file) : undefined;
        if (entry !== undefined && !loadedFrom.has(entry)) entry.problem = problem;
        else this.unmatchedBaselines.push(problem);
        this.logger?.warn({ baseline: file, code: error.code }, `${error.message}; drift scores are off for that SAE`);
      }
    }
  }

  /**
   * Replaces the baseline of SAE `sae` (id, or `id@hook`) with `input` (a file path, or a parsed
   * baseline body). Throws SAEGATE_ERR_BASELINE_FILE / SAEGATE_ERR_BASELINE_MISMATCH and keeps the
   * last good baseline on error.
   */
  replaceBaseline(sae: string, input: { path: string } | { baseline: unknown }): LoadedBaseline {
    const entry = this.entryByName(sae);
    if (entry === undefined) throw err('SAEGATE_ERR_BASELINE_MISMATCH', 'path' in input ? input.path : 'request body', `no monitored SAE '${sae}' (monitored: ${this.entries.map((e) => `${e.spec.sae}@${e.spec.hook}`).join(', ')})`);
    const source = 'path' in input ? input.path : `admin:${new Date(this.now()).toISOString()}`;
    try {
      const baseline = 'path' in input ? readBaseline(input.path) : parseBaseline(input.baseline, source);
      return this.installBaseline(baseline, source, entry);
    } catch (error) {
      if (error instanceof SaegateError) entry.problem = { source, code: error.code, message: error.message };
      throw error;
    }
  }

  /** The entry named `sae` or `sae@hook`. */
  private entryByName(name: string): Entry | undefined {
    return this.entries.find((e) => e.spec.sae === name || `${e.spec.sae}@${e.spec.hook}` === name);
  }

  /** Reads a file's provenance hook without failing, to say which SAE a mismatched file was meant for. */
  private entryForBaselineFile(file: string): Entry | undefined {
    try {
      return this.entryForBaseline(readBaseline(file));
    } catch {
      return undefined;
    }
  }

  /** The projection monitor a baseline names (by `sae.id` and hook), else the SAE at its hook. */
  private entryForBaseline(baseline: Baseline): Entry | undefined {
    const p = baseline.provenance;
    const projection = this.byProjection.get(p.sae.id);
    return projection !== undefined && projection.spec.hook === p.hook ? projection : this.byHook.get(p.hook);
  }

  private installBaseline(baseline: Baseline, source: string, target: Entry | undefined): LoadedBaseline {
    const entry = target ?? this.entryForBaseline(baseline);
    if (entry === undefined) {
      throw err('SAEGATE_ERR_BASELINE_MISMATCH', source, `hook: baseline has ${JSON.stringify(baseline.provenance.hook)}, monitored hooks are ${JSON.stringify([...this.byHook.keys()])}`);
    }
    const spec = entry.spec;
    const stats = entry.stats;
    checkCompatible(baseline, { model: spec.model === UNKNOWN_MODEL ? baseline.provenance.model : spec.model, saeId: spec.sae, ...(spec.saeHash !== undefined && { saeHash: spec.saeHash }), hook: spec.hook, dSae: spec.dSae, l0Edges: stats.l0Edges, fvuEdges: stats.fvuEdges }, source);
    // A projection monitor bins by its baseline's edges; without them it has nothing to score.
    const projectionEdges = baseline.bins.projection;
    if (spec.projection === true && projectionEdges === undefined) throw err('SAEGATE_ERR_BASELINE_MISMATCH', source, 'bins.projection: a projection monitor needs a baseline with projection edges, this one has none');
    const reference = new BaselineReference(baseline);
    // The calibrator refuses a baseline it cannot resample (fewer than 2 documents): a file problem.
    // Its constructor only checks; the drift worker calibrates its own copy.
    try {
      new DriftCalibrator(reference, { ...this.options.calibration, alpha: this.alpha });
    } catch (error) {
      if (error instanceof SaegateError) throw err('SAEGATE_ERR_BASELINE_FILE', source, error.message.replace(/^invalid monitor argument: /, ''));
      throw error;
    }
    const p = baseline.provenance;
    const name = source.startsWith('admin:') ? 'admin' : source.split(/[\\/]/).pop()!;
    const loaded: LoadedBaseline = { source, id: `${name}@${p.createdAt}`, tokens: p.tokens, documents: p.documents, createdAt: p.createdAt, reference };
    const first = this.drift === null;
    entry.baseline = loaded;
    entry.baselineVersion++;
    entry.problem = null;
    entry.windows.clear();
    if (spec.projection === true && projectionEdges !== undefined && (stats.projectionEdges === null || !sameEdges(stats.projectionEdges, projectionEdges))) {
      // New bins: the windows restart (rows counted so far were binned by other edges, or none).
      entry.stats = new WindowedStats({ dSae: spec.dSae, windows: this.windows, now: this.now, projectionEdges });
    }
    // The worker's first start sends every current baseline with its init; later ones go as requests.
    if (first) void this.driftWorker().catch(() => undefined);
    else {
      const { parts, transfer } = reference.copyParts();
      void this.requestDrift({ kind: 'baseline', key: entry.key, reference: parts }, transfer).catch(() => undefined);
    }
    this.logger?.info({ sae: spec.sae, hook: spec.hook, baseline: source, tokens: p.tokens, documents: p.documents }, 'baseline loaded');
    return loaded;
  }

  // ---- live recording -------------------------------------------------------------------------

  /**
   * Starts recording a baseline from live traffic (each request one document) into `file` (one file
   * per SAE: with several SAEs the SAE id is inserted before the extension). Stops after
   * `durationMs` (null: at `stopRecording` or close). The provenance's model is the SAE's model when
   * known, else `tapModel()` when the recording finishes (the model id tap connections announced).
   */
  startRecording(file: string, durationMs: number | null): RecordingStatus {
    const saegateVersion = this.options.saegateVersion ?? 'unknown';
    if (this.recordingState !== null) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `a baseline is already being recorded to '${this.recordingState.file}'`);
    for (const entry of this.entries) {
      if (entry.spec.projection === true) {
        // Its edges come from the recorded rows, so it keeps them until the recording finishes.
        entry.recording = new LiveProjectionRecording({
          model: entry.spec.model !== UNKNOWN_MODEL ? entry.spec.model : () => this.tapModel() ?? UNKNOWN_MODEL,
          sae: { id: entry.spec.sae, hash: entry.spec.saeHash ?? 'unknown' },
          hook: entry.spec.hook,
          saegateVersion,
        });
        continue;
      }
      entry.recording = new LiveBaselineRecording({
        model: entry.spec.model !== UNKNOWN_MODEL ? entry.spec.model : () => this.tapModel() ?? UNKNOWN_MODEL,
        sae: { id: entry.spec.sae, hash: entry.spec.saeHash ?? 'unknown' },
        hook: entry.spec.hook,
        dSae: entry.spec.dSae,
        saegateVersion,
        l0Edges: Array.from(entry.stats.l0Edges),
        fvuEdges: Array.from(entry.stats.fvuEdges),
      });
    }
    const endsAtMs = durationMs === null ? null : this.now() + durationMs;
    const timer = durationMs === null ? null : setTimeout(() => this.checkRecordingDeadline(), durationMs);
    timer?.unref();
    this.recordingState = { file, startedAt: new Date(this.now()).toISOString(), endsAtMs, timer };
    this.recordingResult = { state: 'recording', file, startedAt: this.recordingState.startedAt, endsAtMs, documents: 0, tokens: 0, error: null };
    this.logger?.info({ file, durationMs }, 'recording a baseline from live traffic');
    return this.recordingStatus();
  }

  /** Stops recording and writes the file(s) atomically; the status says what was written. */
  stopRecording(): RecordingStatus {
    const state = this.recordingState;
    if (state === null) return this.recordingStatus();
    this.drain();
    if (state.timer !== null) clearTimeout(state.timer);
    this.recordingState = null;
    let documents = 0;
    let tokens = 0;
    try {
      for (const entry of this.entries) {
        const recording = entry.recording;
        if (recording === null) continue;
        entry.recording = null;
        const baseline = recording.finish();
        documents += baseline.provenance.documents;
        tokens += baseline.provenance.tokens;
        writeBaseline(this.recordingFile(state.file, entry), baseline);
      }
      this.recordingResult = { ...this.recordingResult, state: 'written', endsAtMs: null, documents, tokens };
      this.logger?.info({ file: state.file, documents, tokens }, 'baseline recorded');
    } catch (error) {
      for (const entry of this.entries) entry.recording = null;
      const message = error instanceof Error ? error.message : String(error);
      this.recordingResult = { ...this.recordingResult, state: 'failed', endsAtMs: null, documents, tokens, error: message };
      this.logger?.warn({ file: state.file }, `baseline recording failed: ${message}`);
    }
    return this.recordingStatus();
  }

  recordingStatus(): RecordingStatus {
    if (this.recordingState === null) return this.recordingResult;
    let documents = 0;
    let tokens = 0;
    for (const entry of this.entries) {
      documents += entry.recording?.documentCount ?? 0;
      tokens += entry.recording?.tokens ?? 0;
    }
    return { ...this.recordingResult, documents, tokens };
  }

  /** Where `entry`'s recording goes. */
  recordingFile(file: string, entry: { spec: MonitorSaeSpec } | MonitorSaeSpec): string {
    const spec = 'spec' in entry ? entry.spec : entry;
    if (this.entries.length === 1) return file;
    const dot = file.lastIndexOf('.');
    const slash = Math.max(file.lastIndexOf('/'), file.lastIndexOf('\\'));
    return dot > slash ? `${file.slice(0, dot)}.${spec.sae}${file.slice(dot)}` : `${file}.${spec.sae}`;
  }

  private checkRecordingDeadline(): void {
    const state = this.recordingState;
    if (state !== null && state.endsAtMs !== null && this.now() >= state.endsAtMs) this.stopRecording();
  }

  // ---- reading --------------------------------------------------------------------------------

  readings(): ReadonlyMap<string, MonitoredSaeReading> {
    const out = new Map<string, MonitoredSaeReading>();
    for (const entry of this.entries) {
      const windows: Record<string, WindowReading> = {};
      for (const [name, w] of entry.windows) {
        windows[name] = {
          tokens: w.tokens,
          watchedFirings: w.watchedFirings,
          watchedActivationSums: w.watchedSums,
          drift: w.assessment === null ? null : { scores: w.assessment.scores, thresholds: w.assessment.thresholds, flaggedFeatures: w.assessment.features.flagged },
        };
      }
      out.set(entry.key, {
        baseline: entry.baseline === null ? null : { id: entry.baseline.id, tokens: entry.baseline.tokens },
        rows: entry.rows,
        rowsDropped: { ...entry.dropped },
        assessmentErrors: entry.assessmentErrors,
        windows,
      });
    }
    return out;
  }

  firingAlerts(): ReadonlySet<string> {
    return this.alerts?.firing() ?? new Set();
  }

  webhookDeliveries(): Readonly<Record<'delivered' | 'failed' | 'dropped', number>> {
    return this.webhook?.counts ?? { delivered: 0, failed: 0, dropped: 0 };
  }

  /** Per SAE: baseline state, for `/readyz` details. Drift problems never make saegate unready. */
  readiness(): { ok: boolean; saes: { sae: string; hook: string; drift: boolean; baseline: string | null; problem: BaselineProblem | null }[]; unmatchedBaselines: BaselineProblem[]; recording: RecordingStatus['state'] } {
    const saes = this.entries.map((e) => ({ sae: e.spec.sae, hook: e.spec.hook, drift: e.baseline !== null, baseline: e.baseline?.source ?? null, problem: e.problem }));
    return { ok: saes.every((s) => s.problem === null) && this.unmatchedBaselines.length === 0, saes, unmatchedBaselines: this.unmatchedBaselines, recording: this.recordingStatus().state };
  }

  /** The admin API's `GET /admin/drift` body: everything JSON, feature labels included. */
  driftReport(): object {
    return {
      assessedAt: this.lastAssessedMs === null ? null : new Date(this.lastAssessedMs).toISOString(),
      alpha: this.alpha,
      saes: this.entries.map((entry) => {
        const label = (f: number): string | null => entry.spec.labels?.get(f) ?? entry.spec.watched?.find((w) => w.feature === f)?.label ?? null;
        return {
          model: entry.spec.model,
          sae: entry.spec.sae,
          hook: entry.spec.hook,
          baseline: entry.baseline === null ? null : { source: entry.baseline.source, id: entry.baseline.id, tokens: entry.baseline.tokens, documents: entry.baseline.documents, createdAt: entry.baseline.createdAt },
          baselineProblem: entry.problem,
          rows: entry.rows,
          rowsDropped: entry.dropped,
          windows: Object.fromEntries(
            [...entry.windows].map(([name, w]) => [
              name,
              {
                tokens: w.tokens,
                watched: Array.from(entry.watchedIndex, (feature, i) => ({
                  feature,
                  label: label(feature),
                  firingRate: w.tokens === 0 ? 0 : w.watchedFirings[i] / w.tokens,
                  meanActivation: w.watchedFirings[i] === 0 ? 0 : w.watchedSums[i] / w.watchedFirings[i],
                })),
                drift:
                  w.assessment === null
                    ? null
                    : {
                        scores: w.assessment.scores,
                        thresholds: w.assessment.thresholds,
                        exceeded: w.assessment.exceeded,
                        flaggedFeatures: w.assessment.features.flagged,
                        topFeatures: w.assessment.features.top.map((f) => ({ ...f, label: label(f.feature) })),
                      },
              },
            ]),
          ),
        };
      }),
      alerts: this.alerts?.status() ?? ([] as AlertStatus[]),
      recentAlertEvents: this.events,
      recording: this.recordingStatus(),
    };
  }

  /** Summaries of the last requests that ended, newest last. */
  recentRequests(sae: string): readonly RequestSummary[] {
    return this.entryByName(sae)?.recent ?? [];
  }

  /** Stops the timer; a recording in progress is written; later batches are counted as `stopped`. */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.drain();
    this.stopRecording();
    this.closed = true;
    this.queue.length = 0;
    this.queuedRows = 0;
    await this.webhook?.close();
    this.metrics?.unregister();
    const drift = this.drift;
    this.drift = null;
    if (drift !== null) await (await drift.catch(() => null))?.close();
  }
}
