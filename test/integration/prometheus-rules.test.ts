/**
 * The dashboards and Prometheus rules against a real Prometheus: a small HTTP server on port 0
 * serves a registry with MonitorMetrics (fed by a real windowed monitor on shifted synthetic
 * traffic, plus an SAE without a baseline), ProxyMetrics and SaeMetrics, with new data on every
 * scrape; Prometheus scrapes it every second with recording.yml and alerts.yml loaded. Every
 * PromQL expression in the committed dashboards and both rule files must evaluate without error
 * and return series. promtool checks the rule files and configs; every metric name the dashboards
 * use must exist in the registry.
 */
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MonitorMetrics, type MonitoredSae, type MonitorMetricsSource } from '../../src/monitor/metrics.js';
import { DEFAULT_WINDOWS } from '../../src/monitor/windows.js';
import { PolicyRuntimeMetrics } from '../../src/policies/metrics.js';
import { ProxyMetrics } from '../../src/proxy/metrics.js';
import type { MicroBatcherStats } from '../../src/sae/batcher.js';
import { SaeMetrics, type SaeHookStats } from '../../src/sae/metrics.js';
import type { TapServerStats } from '../../src/tap/server.js';
import { dashboardQueries, metricNames, prometheusDir, ruleQueries, variableMetrics, type NamedQuery } from '../helpers/dashboards.js';
import { InMemoryMonitorSource } from '../helpers/monitor-source.js';
import { SyntheticTraffic } from '../helpers/monitor-synthetic.js';
import { waitFor } from '../helpers/wait.js';
import { freePort } from '../helpers/ports.js';
import { needsPrometheus, promtool, skipPrometheusTests, startPrometheus, type RunningPrometheus } from '../helpers/prometheus.js';

const HOOK = 'blocks.0.hook_resid_post';
const dSae = 128;
const drifting: MonitoredSae = { model: 'stories260K', sae: 'res-0', hook: HOOK, windows: DEFAULT_WINDOWS.map((w) => w.name), watched: [{ feature: 0, label: 'common' }, { feature: 1, label: 'second' }] };
const unbaselined: MonitoredSae = { model: 'stories260K', sae: 'res-1', hook: 'blocks.1.hook_resid_post', windows: ['5m'] };

/** Grafana's variables replaced by what a user choosing "All" gets. */
function substitute(expr: string): string {
  return expr.replaceAll('$__rate_interval', '10s').replace(/\$(model|sae|hook|window|label|instance)\b/g, '.*');
}

interface QueryResponse {
  status: 'success' | 'error';
  error?: string;
  data?: { resultType: string; result: unknown[] };
}

async function query(prometheus: RunningPrometheus, expr: string): Promise<QueryResponse> {
  const res = await fetch(`${prometheus.url}/api/v1/query?query=${encodeURIComponent(expr)}`);
  return (await res.json()) as QueryResponse;
}

let server: http.Server | undefined;
let prometheus: RunningPrometheus | undefined;
let tmp = '';
let registry: Registry;
let configFile = '';

describe.skipIf(skipPrometheusTests)(needsPrometheus('dashboards and rules on a real Prometheus'), () => {
  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'saegate-prometheus-'));
    registry = new Registry();
    // The monitor: one SAE with a baseline and traffic whose FVU and features are shifted, one without a baseline.
    const source = new InMemoryMonitorSource({ monitored: drifting, dSae, baselineDocuments: 400, windows: DEFAULT_WINDOWS, alertWindows: { DriftHigh: '1m' }, now: Date.now });
    const bare = new InMemoryMonitorSource({ monitored: unbaselined, dSae, baselineDocuments: 0, windows: [{ name: '5m', durationMs: 300_000, buckets: 10 }], now: Date.now });
    const both: MonitorMetricsSource = {
      readings: () => new Map([...source.readings(), ...bare.readings()]),
      firingAlerts: () => new Set([...source.firingAlerts(), ...bare.firingAlerts()]),
    };
    const monitor = new MonitorMetrics({ registry, monitored: [drifting, unbaselined], alerts: [{ alert: 'DriftHigh', severity: 'warning' }], source: both });
    source.observeWith(monitor.rowObserver('res-0', HOOK));
    bare.observeWith(monitor.rowObserver('res-1', unbaselined.hook));
    // The proxy and tap.
    const tap: TapServerStats = { connections: { current: 1, total: 1 }, framesReceived: 0, rowsReceived: 0, bytesReceived: 0, malformedFrames: 0, protocolErrors: 0, rowsDroppedReported: 0, authFailures: 0 };
    let sinkDropped = 0;
    const proxy = new ProxyMetrics({ registry, tapStats: () => tap, sinkDroppedRows: () => sinkDropped });
    // The SAE pipeline.
    const batcher: MicroBatcherStats = { rowsIn: 0, rowsEncoded: 0, rowsDropped: { queue_full: 0, sampled: 0, worker_exited: 0, encode_failed: 0 }, batches: 0, meanBatchRows: 0, urgentBatches: 0 };
    const saeStats: SaeHookStats = { batcher, pool: { batches: 0, rowsEncoded: 0, workerRestarts: 0, rowsLost: 0, runMs: 0 }, rowsRejected: 0, queuedRows: 3 };
    const sae = new SaeMetrics({ registry, hooks: [HOOK], stats: () => ({ [HOOK]: saeStats }) });
    const observer = sae.observer(HOOK);
    // Conditional policies.
    const policy = new PolicyRuntimeMetrics(registry);

    // Every scrape brings new traffic, so counters increase and rates are positive.
    let seed = 100;
    const traffic = (): void => {
      source.feed(3, seed++, { boostFeatures: 4, boostFactor: 5, fvuOffset: 0.6 });
      source.drop(new SyntheticTraffic({ dSae, seed: seed++ }).document(), 'backlog');
      bare.feed(2, seed++);
      source.assess();
      bare.assess();
      for (const route of ['chat_completions', 'completions'] as const) {
        proxy.requests.inc({ route, status: '200' });
        proxy.requestDuration.observe({ route }, 0.2);
        proxy.upstreamDuration.observe({ route }, 0.19);
        proxy.overhead.observe({ route }, 0.002);
        proxy.timeToFirstToken.observe({ route }, 0.05);
      }
      proxy.interToken.observe(0.02);
      proxy.streamAborts.inc({ side: 'client' });
      proxy.upstreamFailures.inc({ kind: 'unavailable' });
      proxy.retries.inc({ reason: 'status_503' });
      proxy.plans.inc({ outcome: 'sent' });
      tap.framesReceived += 10;
      tap.rowsReceived += 200;
      tap.bytesReceived += 20_000;
      tap.malformedFrames += 1;
      tap.protocolErrors += 1;
      tap.authFailures += 1;
      tap.rowsDroppedReported += 2;
      sinkDropped += 3;
      batcher.rowsIn += 200;
      batcher.rowsEncoded += 190;
      batcher.rowsDropped.queue_full += 10;
      batcher.batches += 4;
      batcher.urgentBatches += 1;
      saeStats.pool.workerRestarts += 1;
      policy.lagSteps.observe(3);
      policy.lagSeconds.observe(0.02);
      policy.planUpdates.inc({ outcome: 'sent' });
      observer.batchSent(50);
      observer.batchSettled({ rowCount: 50, ok: true, encodeSeconds: 0.004, latencySeconds: 0.01 });
    };
    traffic();
    server = http.createServer((req, res) => {
      traffic();
      registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
        (error: unknown) => res.writeHead(500).end(String(error)),
      );
    });
    await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('no address');

    const rules = ['recording.yml', 'alerts.yml'].map((f) => fileURLToPath(new URL(f, prometheusDir)));
    configFile = path.join(tmp, 'prometheus.yml');
    fs.writeFileSync(
      configFile,
      [
        'global:',
        '  scrape_interval: 1s',
        '  evaluation_interval: 1s',
        'rule_files:',
        ...rules.map((r) => `  - ${JSON.stringify(r)}`),
        'scrape_configs:',
        '  - job_name: saegate',
        '    static_configs:',
        `      - targets: ['127.0.0.1:${address.port}']`,
        '',
      ].join('\n'),
    );
    prometheus = startPrometheus({ configFile, storageDir: path.join(tmp, 'data'), port: await freePort() });
    const running = prometheus;
    let last = '';
    await waitFor(
      'Prometheus to scrape saegate three times',
      async () => {
        try {
          const response = await query(running, 'count_over_time(up{job="saegate"}[1m]) >= 3 and up{job="saegate"} == 1');
          if (response.data !== undefined && response.data.result.length === 1) return true;
          last = JSON.stringify(response);
        } catch (error) {
          last = `${String(error)}; log: ${running.log().slice(-500)}`;
        }
        return false;
      },
      { deadlineMs: 30_000, intervalMs: 250, observed: () => last },
    );
  });

  afterAll(async () => {
    try {
      await prometheus?.stop();
    } finally {
      await new Promise<void>((resolve) => (server === undefined ? resolve() : server.close(() => resolve())));
      if (tmp !== '') fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('promtool accepts the rule files, the example scrape config and the test config', () => {
    for (const args of [
      ['check', 'rules', fileURLToPath(new URL('recording.yml', prometheusDir)), fileURLToPath(new URL('alerts.yml', prometheusDir))],
      ['check', 'config', fileURLToPath(new URL('scrape.yml', prometheusDir))],
      ['check', 'config', configFile],
    ]) {
      const result = promtool(...args);
      expect(result.status, result.output).toBe(0);
      expect(result.output).toContain('SUCCESS');
    }
  });

  it('has every metric the dashboards and rules read in the registry', () => {
    const names = new Set(registry.getMetricsAsArray().map((m) => m.name));
    const queries = [...dashboardQueries(), ...variableMetrics(), ...ruleQueries('recording.yml'), ...ruleQueries('alerts.yml')];
    const missing = queries.flatMap(({ source, expr }) => metricNames(expr).filter((n) => !names.has(n) && !names.has(n.replace(/_(bucket|sum|count)$/, ''))).map((n) => `${source}: ${n}`));
    expect(missing).toEqual([]);
  });

  it('evaluates every dashboard, recording-rule and alert expression without error, each returning series', async () => {
    const running = prometheus;
    if (running === undefined) throw new Error('Prometheus did not start');
    const all: NamedQuery[] = [...dashboardQueries(), ...ruleQueries('recording.yml'), ...ruleQueries('alerts.yml')].map((q) => ({ source: q.source, expr: substitute(q.expr) }));
    expect(all.length).toBeGreaterThan(40);
    // Recording rules and rates need a few evaluations; poll until every query has series, failing
    // at once on a query error.
    let empty: string[] = [];
    await waitFor(
      'every expression to return series',
      async () => {
        empty = [];
        for (const { source, expr } of all) {
          const response = await query(running, expr);
          if (response.status !== 'success') throw new Error(`${source}: ${expr}: ${response.error ?? 'error'}`);
          if ((response.data?.result.length ?? 0) === 0) empty.push(`${source}: ${expr}`);
        }
        return empty.length === 0;
      },
      { deadlineMs: 30_000, intervalMs: 250, observed: () => empty.join('\n') },
    );
    expect(empty).toEqual([]);
    // And the fleet view says what the traffic was: the one pod drifts, the worst ratio is above 1.
    const fraction = await query(running, 'model_sae_hook:saegate_pods_drifting:ratio{sae="res-0"}');
    expect(fraction.data?.result).toEqual([expect.objectContaining({ value: [expect.any(Number), '1'] })]);
  });
});
