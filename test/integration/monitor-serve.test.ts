/**
 * The drift monitor inside `saegate serve` (startProxyWithSaes) over a seeded synthetic model server
 * and SAE, driven by the real `openai` client: a baseline recorded from live traffic (one document
 * per request) through the admin API, hot-swapped in, then drift scores on /metrics, `/readyz`
 * monitor details and `GET /admin/drift`; a restart loads the recorded file again while a corrupt
 * one beside it leaves saegate serving and says so in `/readyz`.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProxyWithSaes } from '../../src/cli/serve.js';
import type { MonitorFlags } from '../../src/cli/serve-monitor.js';
import { readBaseline } from '../../src/monitor/baseline.js';
import type { MonitorService } from '../../src/monitor/service.js';
import { startModelServer, type ModelServer } from '../../src/model/server.js';
import type { ProxyServer } from '../../src/proxy/server.js';
import type { SaeWeights } from '../../src/sae/types.js';
import { freePort } from '../helpers/ports.js';
import { seededStandardSae } from '../helpers/sae.js';
import { waitFor } from '../helpers/wait.js';

const HOOK = 'blocks.1.hook_resid_post';
const D_MODEL = 64;
const TOKEN = 'admin-secret';
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'saegate-monitor-serve-'));
const recorded = path.join(dir, 'recorded.json');

function sae(): SaeWeights {
  const weights = seededStandardSae({ dIn: D_MODEL, dSae: 128, hook: HOOK, seed: 42, scales: { W_enc: 0.5, b_enc: 0.1, W_dec: 0.5, b_dec: 0.1 } });
  return { ...weights, config: { ...weights.config, source: path.join(dir, 'toy-sae') } };
}

interface Stack {
  model: ModelServer;
  proxy: ProxyServer;
  monitor: MonitorService;
  client: OpenAI;
  close(): Promise<void>;
}

async function startStack(flags: MonitorFlags): Promise<Stack> {
  const port = await freePort();
  // The model server's tap client retries until the proxy listens on `port`.
  const model = await startModelServer({ model: `synthetic:dim=${D_MODEL},layers=2,heads=4,kv=2,hidden=128,vocab=300,ctx=256,seed=3`, port: 0, tapUrl: `ws://127.0.0.1:${port}/v1/tap` });
  const { server: proxy, monitor } = await startProxyWithSaes({ upstream: model.url, port, adminToken: TOKEN }, [sae()], undefined, flags);
  await waitFor('the model server subscribed to the SAE hook', () => proxy.tap.server.connections.length > 0 && model.tap!.client.subscription !== null);
  const client = new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  return {
    model,
    proxy,
    monitor: monitor!,
    client,
    close: async () => {
      await proxy.close({ timeoutMs: 500 });
      await model.close();
    },
  };
}

/** Sends `count` completions; waits until the monitor received every row they fed the tap. */
async function traffic(stack: Stack, count: number, prompt: (i: number) => string): Promise<void> {
  const before = [...stack.monitor.readings().values()][0].rows;
  let expected = 0;
  for (let i = 0; i < count; i += 4) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(4, count - i) }, (_, k) => stack.client.completions.create({ model: 'synthetic', prompt: prompt(i + k), max_tokens: 16, temperature: 0 })),
    );
    for (const c of batch) expected += c.usage!.prompt_tokens + c.usage!.completion_tokens - 1;
  }
  await waitFor('the monitor received every tapped row', () => [...stack.monitor.readings().values()][0].rows - before >= expected, {
    observed: () => ({ rows: [...stack.monitor.readings().values()][0].rows - before, expected }),
  });
}

async function admin(stack: Stack, method: string, route: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${stack.proxy.url}${route}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
    ...(body !== undefined && { body: JSON.stringify(body) }),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

const prompts = ['Once upon a time', 'the cat sat on', 'in a small town', 'she looked at the', 'a long time ago', 'he ran to the'];

describe('the drift monitor in saegate serve', () => {
  let first: Stack;
  beforeAll(async () => {
    first = await startStack({ assessIntervalMs: 60_000 });
  });
  afterAll(async () => {
    await first?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('records a baseline from live traffic, hot-swaps it in and reports drift on /metrics, /readyz and /admin/drift', async () => {
    const start = await admin(first, 'POST', '/admin/baselines/record', { action: 'start', file: recorded });
    expect(start.json).toMatchObject({ state: 'recording', file: recorded });
    await traffic(first, 16, (i) => `${prompts[i % prompts.length]} ${i}`);
    const stop = await admin(first, 'POST', '/admin/baselines/record', { action: 'stop' });
    expect(stop.status).toBe(200);
    expect(stop.json).toMatchObject({ state: 'written', documents: 16 });
    const baseline = readBaseline(recorded);
    expect(baseline.provenance).toMatchObject({ model: 'synthetic', sae: { id: 'toy-sae' }, hook: HOOK, dSae: 128, documents: 16 });

    // No baseline yet: scores are absent, /readyz says drift is off for the SAE.
    let ready = (await (await fetch(`${first.proxy.url}/readyz`)).json()) as { ready: boolean; monitor: { saes: { drift: boolean }[] } };
    expect(ready.ready).toBe(true);
    expect(ready.monitor.saes).toMatchObject([{ sae: 'toy-sae', hook: HOOK, drift: false, problem: null }]);

    const refused = await admin(first, 'PUT', '/admin/baselines/toy-sae', { baseline: { version: 1, provenance: {} } });
    expect(refused.status).toBe(400);
    expect(String((refused.json.error as { message: string }).message)).toContain('SAEGATE_ERR_BASELINE_FILE');
    const swapped = await admin(first, 'PUT', '/admin/baselines/toy-sae', { path: recorded });
    expect(swapped.status).toBe(200);
    expect(swapped.json).toMatchObject({ baseline: { source: recorded, documents: 16 } });

    await traffic(first, 8, (i) => `${prompts[(i + 1) % prompts.length]} again ${i}`);
    const drift = await admin(first, 'GET', '/admin/drift?assess=1');
    expect(drift.status).toBe(200);
    const entry = (drift.json.saes as Record<string, unknown>[])[0] as { baseline: { documents: number }; windows: Record<string, { tokens: number; drift: { scores: { jsd: number }; thresholds: { jsd: number }; exceeded: object; topFeatures: { feature: number; label: string | null }[] } }> };
    expect(entry.baseline.documents).toBe(16);
    expect(entry.windows['1m'].tokens).toBeGreaterThan(0);
    expect(entry.windows['1m'].drift.scores.jsd).toBeGreaterThan(0);
    expect(entry.windows['1m'].drift.thresholds.jsd).toBeGreaterThan(0);
    expect(entry.windows['1m'].drift.exceeded).toHaveProperty('jsd');

    const metrics = await (await fetch(`${first.proxy.url}/metrics`)).text();
    for (const statistic of ['jsd', 'l0_psi', 'fvu_psi', 'mean_fvu']) {
      expect(metrics).toMatch(new RegExp(`saegate_drift_score\\{model="unknown",sae="toy-sae",hook="${HOOK}",statistic="${statistic}",window="1m"\\} `));
    }
    expect(metrics).toMatch(/saegate_baseline_loaded\{model="unknown",sae="toy-sae",hook="blocks.1.hook_resid_post"\} 1/);
    expect(metrics).toMatch(/saegate_monitor_rows_dropped_total\{[^}]*reason="backlog"\} 0/);

    ready = (await (await fetch(`${first.proxy.url}/readyz`)).json()) as typeof ready;
    expect(ready.monitor.saes).toMatchObject([{ drift: true, baseline: recorded }]);
  });

  it('loads the recorded baseline again after a restart, and serves on with a corrupt one beside it', async () => {
    const corrupt = path.join(dir, 'corrupt.json');
    fs.writeFileSync(corrupt, '{"version": 1, "provenance": {');
    const second = await startStack({ baseline: [recorded, corrupt], assessIntervalMs: 60_000 });
    try {
      const res = await fetch(`${second.proxy.url}/readyz`);
      const ready = (await res.json()) as { ready: boolean; monitor: { ok: boolean; saes: unknown[]; unmatchedBaselines: { code: string; source: string }[] } };
      expect(res.status).toBe(200);
      expect(ready.monitor.ok).toBe(false);
      expect(ready.monitor.saes).toMatchObject([{ sae: 'toy-sae', drift: true, baseline: recorded, problem: null }]);
      expect(ready.monitor.unmatchedBaselines).toMatchObject([{ code: 'SAEGATE_ERR_BASELINE_FILE', source: corrupt }]);
      await traffic(second, 4, (i) => prompts[i]);
      second.monitor.assess();
      expect(await (await fetch(`${second.proxy.url}/metrics`)).text()).toMatch(/saegate_drift_score\{[^}]*statistic="jsd",window="5m"\} \d/);
    } finally {
      await second.close();
    }
  });
});
