/**
 * Alert rules: the file is validated with every problem at file:line:column; the state machine goes
 * inactive → pending → firing → resolved by the rule's `for`, driven by the monitor's timer (fake
 * timers); the webhook retries with backoff against a real local HTTP server, keeps a bounded
 * queue and counts what it could not deliver; the same rules export as Prometheus rules that
 * promtool accepts.
 */
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { parseAlertRules, readAlertRules, toPrometheusRules, type AlertRule } from '../../../src/monitor/alert-rules.js';
import { AlertEvaluator, WebhookNotifier, type AlertEvent } from '../../../src/monitor/alerts.js';
import { BaselineRecorder } from '../../../src/monitor/baseline-recorder.js';
import { writeBaseline } from '../../../src/monitor/baseline.js';
import { MonitorService } from '../../../src/monitor/service.js';
import { formatProblem } from '../../../src/common/yaml-locate.js';
import { expectSaegateError } from '../../helpers/errors.js';
import { SyntheticTraffic } from '../../helpers/monitor-synthetic.js';
import { promtool, promtoolPath } from '../../helpers/prometheus.js';

const hook = 'blocks.0.hook_resid_post';
const context = { saes: [{ sae: 's', hook, watched: [3] }], windows: ['1m', '5m'] };
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'saegate-alerts-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function rule(text: string): AlertRule {
  const { rules, problems } = parseAlertRules(`rules:\n  - ${text}\n`, 'r.yaml', context);
  expect(problems.map(formatProblem)).toEqual([]);
  return rules!.rules[0];
}

describe('alert rules file', () => {
  it('reports every problem at its line and column', () => {
    const text = [
      'rules:',
      '  - name: A',
      '    sae: s',
      '    signal: jsd',
      '    windw: 5m',
      '  - name: A',
      '    sae: nope',
      '    signal: {featureRate: 9}',
      '    window: 10m',
      '    for: soon',
    ].join('\n');
    const { rules, problems } = parseAlertRules(text, 'r.yaml', context);
    expect(rules).toBeNull();
    expect(problems.map(formatProblem)).toEqual(["r.yaml:5:5: rules[0].windw: unknown key 'windw'", expect.stringMatching(/^r\.yaml:10:10: rules\[1\]\.for: .*duration/)]);
    const second = parseAlertRules(text.replace('    windw: 5m\n', '').replace('    for: soon', '    for: 1m'), 'r.yaml', context).problems.map(formatProblem);
    expect(second).toEqual([
      "r.yaml:5:11: rules[1].name: alert 'A' is declared twice",
      'r.yaml:5:5: rules[1].threshold: a featureRate or featureMeanActivation signal needs a numeric threshold (a firing rate, 0 to 1, or an activation)',
      "r.yaml:8:13: rules[1].window: no window '10m' (monitored: 1m, 5m)",
      expect.stringContaining("r.yaml:6:10: rules[1].sae: no monitored SAE 'nope'"),
    ]);
  });

  it('is a typed error naming the file when read', () => {
    const file = path.join(dir, 'bad.yaml');
    fs.writeFileSync(file, 'rules: [{name: 1}]\n');
    expectSaegateError(() => readAlertRules(file, context), 'SAEGATE_ERR_ALERT_RULES', file, 'rules[0].name');
    expectSaegateError(() => readAlertRules(path.join(dir, 'missing.yaml')), 'SAEGATE_ERR_ALERT_RULES', 'cannot read (ENOENT)');
  });

  it.skipIf(!fs.existsSync(promtoolPath))('exports Prometheus alerting rules that promtool accepts', () => {
    const file = path.join(dir, 'rules.yaml');
    fs.writeFileSync(
      file,
      [
        'rules:',
        '  - {name: DriftJsd, sae: s, signal: jsd, window: 5m, for: 10m}',
        '  - {name: DriftFixed, sae: s, hook: blocks.0.hook_resid_post, signal: mean_fvu, threshold: 0.3, window: 1m, severity: critical}',
        '  - {name: Flagged, sae: s, signal: flagged_features, threshold: 5}',
        '  - {name: Feature3, sae: s, signal: {featureRate: 3}, threshold: 0.2, window: 1m, for: 2m, severity: info}',
        '  - {name: Feature3Mean, sae: s, signal: {featureMeanActivation: 3}, threshold: 4.5}',
      ].join('\n'),
    );
    const out = path.join(dir, 'prom.yml');
    fs.writeFileSync(out, toPrometheusRules(readAlertRules(file, context), file, 0.01));
    const checked = promtool('check', 'rules', out);
    expect(checked.output).toContain('SUCCESS: 5 rules found');
    expect(checked.status).toBe(0);
    const text = fs.readFileSync(out, 'utf8');
    expect(text).toContain('saegate_drift_score{sae=\\"s\\",statistic=\\"jsd\\",window=\\"5m\\"} > on(model, sae, hook, statistic, window) saegate_drift_threshold');
    expect(text).toContain('saegate_feature_firing_rate{sae=\\"s\\",feature=\\"3\\",window=\\"1m\\"} > 0.2');
    expect(text).toContain('saegate_feature_mean_activation{sae=\\"s\\",feature=\\"3\\",window=\\"5m\\"} > 4.5');
    expectSaegateError(() => toPrometheusRules({ rules: [rule('{name: X, sae: s, signal: jsd, threshold: {falseAlarmRate: 0.001}}')] }, 'r.yaml', 0.01), 'SAEGATE_ERR_ALERT_RULES', 'falseAlarmRate 0.001');
  });
});

describe('alert state machine', () => {
  it('goes pending, then firing after `for`, then resolved, notifying each transition', () => {
    const events: AlertEvent[] = [];
    const evaluator = new AlertEvaluator([rule('{name: A, sae: s, signal: jsd, for: 1m, severity: critical}')], () => hook, (e) => events.push(e));
    const at = (ms: number, value: number | null): void => evaluator.evaluate(ms, () => (value === null ? null : { value, threshold: 1 }));
    at(0, 2);
    expect(evaluator.status()[0]).toMatchObject({ state: 'pending', activeSinceMs: 0 });
    at(30_000, 0.5); // dips below before `for`: back to inactive, silently
    expect(evaluator.status()[0].state).toBe('inactive');
    at(40_000, 2);
    at(99_000, 2);
    expect(evaluator.firing().size).toBe(0);
    at(100_000, 3);
    expect([...evaluator.firing()]).toEqual(['A']);
    at(105_000, null); // cannot be evaluated (no baseline, empty window): does not hold
    expect(evaluator.firing().size).toBe(0);
    expect(events.map((e) => [e.status, e.value, e.threshold, e.activeSince])).toEqual([
      ['firing', 3, 1, new Date(40_000).toISOString()],
      ['resolved', 3, 1, new Date(40_000).toISOString()],
    ]);
    expect(events[0]).toMatchObject({ alert: 'A', severity: 'critical', sae: 's', hook, signal: 'jsd', window: '5m' });
  });

  describe('driven by the monitor timer', () => {
    afterEach(() => {
      vi.useRealTimers();
    });

    it('fires a feature-rate alert after `for` of ticks and resolves it when the window empties', async () => {
      vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval', 'Date'] });
      const recorder = new BaselineRecorder({ dSae: 64 });
      const traffic = new SyntheticTraffic({ dSae: 64, seed: 3 });
      for (let d = 0; d < 50; d++) recorder.addDocument(traffic.document());
      const baseline = path.join(dir, 'b.json');
      writeBaseline(baseline, recorder.toBaseline({ model: 'm', sae: { id: 's', hash: 'h' }, hook, saegateVersion: '0' }));
      const rules = parseAlertRules('rules:\n  - {name: Hot, sae: s, signal: {featureRate: 3}, threshold: 0.01, window: 1m, for: 20s}\n', 'r.yaml', { ...context, windows: ['1m'] }).rules!;
      const service = new MonitorService({
        saes: [{ model: 'm', sae: 's', hook, dSae: 64, watched: [{ feature: 3, label: 'three' }] }],
        windows: [{ name: '1m', durationMs: 60_000, buckets: 6 }],
        calibration: { replicates: 100 },
        assessIntervalMs: 5000,
        alertRules: rules,
      });
      service.loadBaselineFiles([baseline]);
      service.start();
      const rows = new SyntheticTraffic({ dSae: 64, seed: 4 });
      for (let d = 0; d < 5; d++) service.offerRows(hook, rows.document());
      // Each tick assesses one window per event-loop turn; `assessed()` resolves when it is done.
      const tick = async (ms: number): Promise<void> => {
        for (let t = 0; t < ms; t += 5000) {
          vi.advanceTimersByTime(5000);
          await service.assessed();
        }
      };
      await tick(5000);
      expect(service.alerts!.status()[0].state).toBe('pending');
      await tick(15_000);
      expect(service.alerts!.status()[0].state).toBe('pending');
      await tick(5000);
      expect([...service.firingAlerts()]).toEqual(['Hot']);
      await tick(70_000);
      expect(service.firingAlerts().size).toBe(0);
      await service.close();
    });
  });
});

interface Hook {
  url: string;
  received: AlertEvent[];
  /** Status to answer with, per request in order; 200 after the list runs out. */
  statuses: number[];
  /** When set, requests wait until it resolves. */
  gate: Promise<void> | null;
  close(): Promise<void>;
}

async function webhookServer(): Promise<Hook> {
  const hook: Hook = { url: '', received: [], statuses: [], gate: null, close: async () => {} };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const answer = (): void => {
        const status = hook.statuses.shift() ?? 200;
        if (status === 200) hook.received.push(JSON.parse(Buffer.concat(chunks).toString('utf8')) as AlertEvent);
        res.writeHead(status).end();
      };
      if (hook.gate === null) answer();
      else void hook.gate.then(answer);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  hook.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
  hook.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return hook;
}

function event(alert: string): AlertEvent {
  return { alert, status: 'firing', severity: 'warning', sae: 's', hook, signal: 'jsd', window: '5m', value: 1, threshold: 0.5, activeSince: '', at: '', summary: '' };
}

describe('alert webhook', () => {
  it('retries failed POSTs with backoff and delivers the JSON event', async () => {
    const server = await webhookServer();
    server.statuses = [500, 503];
    const notifier = new WebhookNotifier({ url: server.url, maxQueue: 8, attempts: 5, backoffMs: 1, timeoutMs: 5000 });
    notifier.send(event('A'));
    await notifier.idle();
    expect(notifier.counts).toEqual({ delivered: 1, failed: 0, dropped: 0 });
    expect(notifier.attemptFailures).toBe(2);
    expect(server.received).toEqual([event('A')]);
    await notifier.close();
    await server.close();
  });

  it('counts an event as failed when every attempt fails, and goes on with the next', async () => {
    const server = await webhookServer();
    server.statuses = [500, 500, 500];
    const notifier = new WebhookNotifier({ url: server.url, maxQueue: 8, attempts: 3, backoffMs: 1, timeoutMs: 5000 });
    notifier.send(event('lost'));
    notifier.send(event('kept'));
    await notifier.idle();
    expect(notifier.counts).toEqual({ delivered: 1, failed: 1, dropped: 0 });
    expect(server.received.map((e) => e.alert)).toEqual(['kept']);
    await notifier.close();
    await server.close();
  });

  it('keeps a bounded queue while the receiver is slow, never waiting in send', async () => {
    const server = await webhookServer();
    let release!: () => void;
    server.gate = new Promise((resolve) => (release = resolve));
    const notifier = new WebhookNotifier({ url: server.url, maxQueue: 2, attempts: 1, backoffMs: 1, timeoutMs: 5000 });
    for (const name of ['a', 'b', 'c', 'd']) notifier.send(event(name));
    expect(notifier.counts.dropped).toBe(2);
    expect(notifier.queued).toBe(2);
    release();
    await notifier.idle();
    expect(notifier.counts).toEqual({ delivered: 2, failed: 0, dropped: 2 });
    expect(server.received.map((e) => e.alert)).toEqual(['a', 'b']);
    await notifier.close();
    await server.close();
  });
});
