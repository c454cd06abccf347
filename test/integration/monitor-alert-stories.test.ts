/**
 * A drift alert end to end on stories260K, as an operator runs it: `saegate serve` with an SAE at
 * blocks.3, a baseline recorded from live story traffic through the admin API and hot-swapped in,
 * and an alert rule on the calibrated JSD threshold (α = 1%). More stories keep the alert quiet;
 * random-character prompts (tokens the model never saw together in training) push the 1-minute
 * window's JSD past its threshold and the alert fires: `saegate_alert_firing` goes to 1 on
 * /metrics and the monitor's status says firing. The offline study with score distributions is
 * test/integration/drift-stories.test.ts and test/bench/drift-study.ts.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProxyWithSaes } from '../../src/cli/serve.js';
import { SeededRandom } from '../../src/common/random.js';
import type { MonitorService } from '../../src/monitor/service.js';
import { startModelServer, type ModelServer } from '../../src/model/server.js';
import type { ProxyServer } from '../../src/proxy/server.js';
import { hasSharedModels, needsSharedModels, stories260K } from '../helpers/fixtures.js';
import { freePort } from '../helpers/ports.js';
import { seededStandardSae } from '../helpers/sae.js';
import { waitFor } from '../helpers/wait.js';

const HOOK = 'blocks.3.hook_resid_post';
const TOKEN = 'admin-secret';
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'saegate-alert-stories-'));
const baselineFile = path.join(dir, 'stories-baseline.json');
const rulesFile = path.join(dir, 'rules.yaml');

const names = ['Lily', 'Tom', 'Sue', 'Ben', 'Mia', 'Max', 'Anna', 'Tim', 'Lucy', 'Sam'];
const things = ['a red ball', 'a little dog', 'a big tree', 'a shiny toy', 'a kind bird', 'a new hat', 'a small boat', 'a funny cat'];
/** Story openings: index i picks a name and a thing, so the recording and the held-out sets never share a prompt. */
const story = (i: number): string => `Once upon a time, ${names[i % names.length]} had ${things[Math.floor(i / names.length) % things.length]}. One day,`;

let model: ModelServer;
let proxy: ProxyServer;
let monitor: MonitorService;
let client: OpenAI;

async function admin(method: string, route: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${proxy.url}${route}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
    ...(body !== undefined && { body: JSON.stringify(body) }),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

/** Sends the prompts, four at a time; waits until the monitor has every row they fed the tap. */
async function traffic(prompts: readonly string[]): Promise<void> {
  const rows = (): number => [...monitor.readings().values()][0].rows;
  const before = rows();
  let expected = 0;
  for (let i = 0; i < prompts.length; i += 4) {
    const done = await Promise.all(prompts.slice(i, i + 4).map((prompt) => client.completions.create({ model: 'stories260K', prompt, max_tokens: 40, temperature: 0 })));
    for (const c of done) expected += c.usage!.prompt_tokens + c.usage!.completion_tokens - 1;
  }
  await waitFor('the monitor received every tapped row', () => rows() - before >= expected, { observed: () => ({ rows: rows() - before, expected }) });
}

async function alertFiring(): Promise<{ firing: boolean; jsd: number; threshold: number; metric: string | undefined }> {
  const drift = await admin('GET', '/admin/drift?assess=1');
  expect(drift.status).toBe(200);
  const window = (drift.json.saes as { windows: Record<string, { drift: { scores: { jsd: number }; thresholds: { jsd: number } } }> }[])[0].windows['1m'];
  const metrics = await (await fetch(`${proxy.url}/metrics`)).text();
  const metric = /^saegate_alert_firing\{alert="StoriesDrift"[^}]*\} (\d)$/m.exec(metrics)?.[1];
  return { firing: monitor.firingAlerts().has('StoriesDrift'), jsd: window.drift.scores.jsd, threshold: window.drift.thresholds.jsd, metric };
}

beforeAll(async () => {
  if (!hasSharedModels) return;
  fs.writeFileSync(rulesFile, 'rules:\n  - {name: StoriesDrift, sae: stories-sae, signal: jsd, window: 1m, for: 0s, severity: critical}\n');
  const weights = seededStandardSae({ dIn: 64, dSae: 256, hook: HOOK, seed: 5, scales: { W_enc: 0.6, b_enc: 0.3, W_dec: 0.5, b_dec: 0.05 } });
  const sae = { ...weights, config: { ...weights.config, source: path.join(dir, 'stories-sae') } };
  const port = await freePort();
  model = await startModelServer({ model: stories260K.model, port: 0, tapUrl: `ws://127.0.0.1:${port}/v1/tap` });
  const started = await startProxyWithSaes({ upstream: model.url, port, adminToken: TOKEN }, [sae], undefined, { alertRules: rulesFile, assessIntervalMs: 3_600_000 });
  proxy = started.server;
  monitor = started.monitor!;
  client = new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  await waitFor('the model server subscribed to the SAE hook', () => proxy.tap.server.connections.length > 0 && model.tap!.client.subscription !== null);
}, 60_000);

afterAll(async () => {
  await proxy?.close({ timeoutMs: 500 });
  await model?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!hasSharedModels)(needsSharedModels('a drift alert on stories260K through serve'), () => {
  it('records a story baseline live, stays quiet on more stories and fires on random-character prompts', async () => {
    expect((await admin('POST', '/admin/baselines/record', { action: 'start', file: baselineFile })).json).toMatchObject({ state: 'recording' });
    await traffic(Array.from({ length: 64 }, (_, i) => story(i)));
    expect((await admin('POST', '/admin/baselines/record', { action: 'stop' })).json).toMatchObject({ state: 'written', documents: 64 });
    expect((await admin('PUT', '/admin/baselines/stories-sae', { path: baselineFile })).status).toBe(200);

    await traffic(Array.from({ length: 16 }, (_, i) => story(64 + i)));
    const quiet = await alertFiring();
    expect(quiet.jsd, 'held-out stories stay under the calibrated JSD threshold').toBeLessThan(quiet.threshold);
    expect(quiet.firing).toBe(false);
    expect(quiet.metric).toBe('0');

    const random = new SeededRandom(3);
    const letters = 'qxzjkvwy';
    const gibberish = Array.from({ length: 24 }, () => Array.from({ length: 40 }, () => (random.next() < 0.15 ? ' ' : letters[Math.floor(random.next() * letters.length)])).join(''));
    await traffic(gibberish);
    const shifted = await alertFiring();
    expect(shifted.jsd, 'random-character traffic pushes the window past the threshold').toBeGreaterThan(shifted.threshold);
    expect(shifted.firing).toBe(true);
    expect(shifted.metric).toBe('1');
  });
});
