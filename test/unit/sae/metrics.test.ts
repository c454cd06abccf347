import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import type { MicroBatcherStats } from '../../../src/sae/batcher.js';
import { SAE_DROP_REASONS, SAE_METRIC_NAMES, SaeMetrics, type SaeHookStats } from '../../../src/sae/metrics.js';
import type { SaePoolStats } from '../../../src/sae/pool.js';
import { documentedMetrics } from '../../helpers/metrics-doc.js';

const HOOKS = ['blocks.0.hook_resid_post', 'blocks.1.hook_resid_post'];

function zeroStats(): SaeHookStats {
  const batcher: MicroBatcherStats = { rowsIn: 0, rowsEncoded: 0, rowsDropped: { queue_full: 0, sampled: 0, worker_exited: 0, encode_failed: 0 }, batches: 0, meanBatchRows: 0, urgentBatches: 0 };
  const pool: SaePoolStats = { batches: 0, rowsEncoded: 0, workerRestarts: 0, rowsLost: 0, runMs: 0 };
  return { batcher, pool, rowsRejected: 0, queuedRows: 0 };
}

/** The value of the sample line `name{labels}`, or undefined when absent. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('SaeMetrics', () => {
  it('exports every series at 0 for each hook before any row arrives, one per drop reason', async () => {
    const registry = new Registry();
    const stats = Object.fromEntries(HOOKS.map((h) => [h, zeroStats()]));
    new SaeMetrics({ registry, hooks: HOOKS, stats: () => stats });
    const text = await registry.metrics();
    for (const hook of HOOKS) {
      for (const name of ['saegate_sae_rows_total', 'saegate_sae_rows_encoded_total', 'saegate_sae_batches_total', 'saegate_sae_urgent_batches_total', 'saegate_sae_run_seconds_total', 'saegate_sae_worker_restarts_total', 'saegate_sae_queued_rows']) {
        expect(sample(text, `${name}{hook="${hook}"}`), name).toBe(0);
      }
      for (const reason of SAE_DROP_REASONS) expect(sample(text, `saegate_sae_rows_dropped_total{hook="${hook}",reason="${reason}"}`)).toBe(0);
      for (const name of ['saegate_sae_batch_rows', 'saegate_sae_encode_seconds', 'saegate_sae_result_latency_seconds']) {
        expect(sample(text, `${name}_count{hook="${hook}"}`), name).toBe(0);
      }
    }
    expect(SAE_DROP_REASONS).toEqual(['queue_full', 'sampled', 'worker_exited', 'encode_failed', 'bad_width']);
  });

  it('reads the counters from the stats at scrape time and observes the histograms once per batch', async () => {
    const registry = new Registry();
    const [hook, other] = HOOKS;
    const stats = { [hook]: zeroStats(), [other]: zeroStats() };
    const metrics = new SaeMetrics({ registry, hooks: HOOKS, stats: () => stats });
    const observer = metrics.observer(hook);
    const s = stats[hook];
    Object.assign(s.batcher, { rowsIn: 100, rowsEncoded: 60, batches: 3, urgentBatches: 2 });
    s.pool.runMs = 1250;
    Object.assign(s.batcher.rowsDropped, { queue_full: 5, sampled: 20, worker_exited: 8, encode_failed: 4 });
    s.rowsRejected = 7;
    s.queuedRows = 3;
    s.pool.workerRestarts = 1;
    observer.batchSent(32);
    observer.batchSent(20);
    observer.batchSent(8);
    observer.batchSettled({ rowCount: 32, ok: true, encodeSeconds: 0.004, latencySeconds: 0.006 });
    observer.batchSettled({ rowCount: 20, ok: true, encodeSeconds: 0.002, latencySeconds: 0.009 });
    observer.batchSettled({ rowCount: 8, ok: false, encodeSeconds: 0.5, latencySeconds: 0.6 });
    const text = await registry.metrics();
    const on = `{hook="${hook}"}`;
    // Rows refused for their width never reached the batcher but did reach the SAE.
    expect(sample(text, `saegate_sae_rows_total${on}`)).toBe(107);
    expect(sample(text, `saegate_sae_rows_encoded_total${on}`)).toBe(60);
    expect(sample(text, `saegate_sae_batches_total${on}`)).toBe(3);
    expect(sample(text, `saegate_sae_urgent_batches_total${on}`)).toBe(2);
    expect(sample(text, `saegate_sae_run_seconds_total${on}`)).toBe(1.25);
    expect(sample(text, `saegate_sae_queued_rows${on}`)).toBe(3);
    expect(sample(text, `saegate_sae_worker_restarts_total${on}`)).toBe(1);
    const dropped = Object.fromEntries(SAE_DROP_REASONS.map((reason) => [reason, sample(text, `saegate_sae_rows_dropped_total{hook="${hook}",reason="${reason}"}`)]));
    expect(dropped).toEqual({ queue_full: 5, sampled: 20, worker_exited: 8, encode_failed: 4, bad_width: 7 });
    expect(sample(text, `saegate_sae_batch_rows_count${on}`)).toBe(3);
    expect(sample(text, `saegate_sae_batch_rows_sum${on}`)).toBe(60);
    expect(sample(text, `saegate_sae_batch_rows_bucket{le="16",hook="${hook}"}`)).toBe(1);
    // Both settled batches spent time with the pool; only the encoded ones delivered results.
    expect(sample(text, `saegate_sae_encode_seconds_count${on}`)).toBe(3);
    expect(sample(text, `saegate_sae_encode_seconds_sum${on}`)).toBeCloseTo(0.506, 9);
    expect(sample(text, `saegate_sae_result_latency_seconds_count${on}`)).toBe(2);
    expect(sample(text, `saegate_sae_result_latency_seconds_sum${on}`)).toBeCloseTo(0.015, 9);
    // The other hook is untouched.
    expect(sample(text, `saegate_sae_batch_rows_count{hook="${other}"}`)).toBe(0);
    expect(sample(text, `saegate_sae_rows_total{hook="${other}"}`)).toBe(0);
    // Counters follow the stats: a later scrape shows the new totals, not a sum of scrapes.
    s.batcher.rowsEncoded = 90;
    expect(sample(await registry.metrics(), `saegate_sae_rows_encoded_total${on}`)).toBe(90);
  });

  it('registers exactly the saegate_sae_* metrics that docs/metrics.md lists', async () => {
    const registry = new Registry();
    new SaeMetrics({ registry, hooks: HOOKS, stats: () => ({}) });
    const exported = new Set([...(await registry.metrics()).matchAll(/^# TYPE (saegate_\w+) /gm)].map((m) => m[1]));
    const documented = documentedMetrics('SAE pipeline');
    expect(documented.size).toBe(11);
    expect([...exported].sort()).toEqual([...documented].sort());
    expect([...exported].sort()).toEqual([...SAE_METRIC_NAMES].sort());
  });

  it('leaves the registry as it was after unregister, so a failed start can be retried on it', () => {
    const registry = new Registry();
    new SaeMetrics({ registry, hooks: HOOKS, stats: () => ({}) }).unregister();
    expect(registry.getMetricsAsArray()).toHaveLength(0);
    // Registering again does not collide with leftovers.
    new SaeMetrics({ registry, hooks: HOOKS, stats: () => ({}) });
    expect(registry.getMetricsAsArray()).toHaveLength(SAE_METRIC_NAMES.length);
  });
});
