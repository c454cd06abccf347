/**
 * Prometheus metrics of the SAE pipeline, on the proxy's explicit Registry (docs/metrics.md, "SAE
 * pipeline"). Labelled by hook point only: the set of hooks is fixed when the sink starts, so the
 * label values are few and known.
 *
 * Counters and the queue gauge are read from the batchers' and pools' stats objects at scrape
 * time, so the row path does no metrics work at all. The three histograms are observed once per
 * batch (never per row) through a BatchObserver whose histogram children are resolved once per
 * hook, so an observation is a bucket search and two additions.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { DROP_REASONS, type BatchObserver, type DropReason, type MicroBatcherStats } from './batcher.js';
import type { SaePoolStats } from './pool.js';

/** `saegate_sae_rows_dropped_total{reason}`: the batcher's reasons plus rows refused for their width. */
export type SaeDropReason = DropReason | 'bad_width';

export const SAE_DROP_REASONS: readonly SaeDropReason[] = [...DROP_REASONS, 'bad_width'];

/** What one hook's SAE has done so far, read at scrape time. */
export interface SaeHookStats {
  batcher: MicroBatcherStats;
  pool: SaePoolStats;
  /** Rows refused because their width was not the SAE's d_in. */
  rowsRejected: number;
  /** Rows waiting for the pool now. */
  queuedRows: number;
}

export interface SaeMetricsOptions {
  registry: Registry;
  /** Hook points with an SAE; a series is created for each at start. */
  hooks: readonly string[];
  /** Per-hook stats, called at scrape time. */
  stats: () => Record<string, SaeHookStats>;
}

/** Rows per batch: 1 to 4096. */
const BATCH_ROW_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];
/** Time with the pool, seconds: 0.1 ms to 5 s. */
const ENCODE_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
/** First row pushed → results delivered, seconds: 0.5 ms to 10 s. */
const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** Every metric name SaeMetrics registers. */
export const SAE_METRIC_NAMES = [
  'saegate_sae_rows_total',
  'saegate_sae_rows_encoded_total',
  'saegate_sae_rows_dropped_total',
  'saegate_sae_batches_total',
  'saegate_sae_urgent_batches_total',
  'saegate_sae_run_seconds_total',
  'saegate_sae_batch_rows',
  'saegate_sae_encode_seconds',
  'saegate_sae_result_latency_seconds',
  'saegate_sae_queued_rows',
  'saegate_sae_worker_restarts_total',
] as const;

export class SaeMetrics {
  private readonly registry: Registry;
  private readonly batchRows: Histogram<'hook'>;
  private readonly encodeSeconds: Histogram<'hook'>;
  private readonly resultLatency: Histogram<'hook'>;

  constructor(options: SaeMetricsOptions) {
    this.registry = options.registry;
    const registers = [options.registry];
    const hooks = options.hooks;
    const read = options.stats;
    // Each collect() reads its own snapshot: prom-client collects metrics one by one.
    const perHook = (name: string, help: string, value: (s: SaeHookStats) => number): void => {
      new Counter({
        name,
        help,
        labelNames: ['hook'],
        registers,
        collect() {
          const stats = read();
          this.reset();
          for (const hook of hooks) this.inc({ hook }, stats[hook] === undefined ? 0 : value(stats[hook]));
        },
      });
    };
    perHook('saegate_sae_rows_total', 'Activation rows that reached an SAE (encoded, dropped or still queued).', (s) => s.batcher.rowsIn + s.rowsRejected);
    perHook('saegate_sae_rows_encoded_total', 'Activation rows encoded by the SAE.', (s) => s.batcher.rowsEncoded);
    perHook('saegate_sae_batches_total', 'Batches sent to the SAE worker pool.', (s) => s.batcher.batches);
    perHook('saegate_sae_urgent_batches_total', 'Batches sent on the short deadline (--sae-max-delay-ms) because a conditional policy waited on their rows.', (s) => s.batcher.urgentBatches);
    perHook('saegate_sae_run_seconds_total', "Time the SAE's workers spent inside onnxruntime's run (wall clock), seconds.", (s) => s.pool.runMs / 1000);
    perHook('saegate_sae_worker_restarts_total', 'SAE workers replaced after they crashed or exited.', (s) => s.pool.workerRestarts);
    new Counter({
      name: 'saegate_sae_rows_dropped_total',
      help: 'Activation rows the SAE pipeline dropped, by reason (queue_full, sampled, worker_exited, encode_failed, bad_width).',
      labelNames: ['hook', 'reason'],
      registers,
      collect() {
        const stats = read();
        this.reset();
        for (const hook of hooks) {
          const s = stats[hook];
          for (const reason of SAE_DROP_REASONS) {
            const value = s === undefined ? 0 : reason === 'bad_width' ? s.rowsRejected : s.batcher.rowsDropped[reason];
            this.inc({ hook, reason }, value);
          }
        }
      },
    });
    new Gauge({
      name: 'saegate_sae_queued_rows',
      help: 'Activation rows waiting for the SAE worker pool (open batch plus batches not yet sent).',
      labelNames: ['hook'],
      registers,
      collect() {
        const stats = read();
        for (const hook of hooks) this.set({ hook }, stats[hook]?.queuedRows ?? 0);
      },
    });
    this.batchRows = new Histogram({ name: 'saegate_sae_batch_rows', help: 'Rows per batch sent to the SAE worker pool.', labelNames: ['hook'], buckets: BATCH_ROW_BUCKETS, registers });
    this.encodeSeconds = new Histogram({
      name: 'saegate_sae_encode_seconds',
      help: 'Time a batch spent with the SAE worker pool (queueing in the worker included), encoded or failed.',
      labelNames: ['hook'],
      buckets: ENCODE_BUCKETS,
      registers,
    });
    this.resultLatency = new Histogram({
      name: 'saegate_sae_result_latency_seconds',
      help: "Time from a batch's first row being pushed to its results being delivered.",
      labelNames: ['hook'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    for (const hook of hooks) {
      this.batchRows.zero({ hook });
      this.encodeSeconds.zero({ hook });
      this.resultLatency.zero({ hook });
    }
  }

  /** Removes every SAE metric from the registry. */
  unregister(): void {
    for (const name of SAE_METRIC_NAMES) this.registry.removeSingleMetric(name);
  }

  /** The observer to give the hook's micro-batcher. */
  observer(hook: string): BatchObserver {
    const batchRows = this.batchRows.labels({ hook });
    const encodeSeconds = this.encodeSeconds.labels({ hook });
    const resultLatency = this.resultLatency.labels({ hook });
    return {
      batchSent(rowCount) {
        batchRows.observe(rowCount);
      },
      batchSettled(report) {
        encodeSeconds.observe(report.encodeSeconds);
        if (report.ok) resultLatency.observe(report.latencySeconds);
      },
    };
  }
}
