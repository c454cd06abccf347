/**
 * `saegate serve --tap-monitor-delay-ms`: while no loaded policy has a condition, saegate lets the
 * model servers hold tapped data that long (the subscription's `maxDelayMs`, docs/tap-protocol.md
 * 4.3), and takes it back as soon as a policy with a condition is loaded, by a reload included.
 * While it is taken back, requests no conditional rule reads get it per request
 * (`x-saegate-tap-max-delay-ms`), and so do requests whose rules have all fired (a `plan_update`'s
 * `maxDelayMs`), which the model server's bridge applies.
 * Real processes' parts: saegate's proxy with an SAE and a policy directory, a synthetic model
 * server tapped over a real WebSocket.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startProxyWithSaes } from '../../src/cli/serve.js';
import { startModelServer, type ModelServer } from '../../src/model/server.js';
import type { ProxyServer } from '../../src/proxy/server.js';
import { freePort } from '../helpers/ports.js';
import { seededStandardSae } from '../helpers/sae.js';
import { waitFor } from '../helpers/wait.js';

const MODEL = 'synthetic:dim=32,layers=2,heads=4,kv=2,hidden=64,vocab=300,ctx=1024,seed=7';
const HOOK = 'blocks.1.hook_resid_post';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function policy(name: string, action: string): string {
  return `apiVersion: saegate/v1\nkind: Policy\nmetadata: {name: ${name}}\nspec:\n  actions:\n    - ${action}\n`;
}

async function start(policyFiles: Record<string, string>): Promise<{ proxy: ProxyServer; model: ModelServer; dir: string }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'saegate-tap-delay-'));
  cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  for (const [file, text] of Object.entries(policyFiles)) fs.writeFileSync(path.join(dir, file), text);
  const sae = seededStandardSae({ dIn: 32, dSae: 64, hook: HOOK, seed: 3, scales: { W_enc: 1, b_enc: 0.1, W_dec: 0.5, b_dec: 0.1 } });
  const modelPort = await freePort();
  const { server: proxy } = await startProxyWithSaes({ upstream: `http://127.0.0.1:${modelPort}`, port: 0, tapMonitorDelayMs: 50 }, [sae], dir);
  cleanups.push(() => proxy.close({ timeoutMs: 0 }));
  const model = await startModelServer({ model: MODEL, name: 'synthetic', port: modelPort, tapUrl: proxy.tapUrl, maxBatch: 4, threads: 1 });
  cleanups.push(() => model.close());
  return { proxy, model, dir };
}

const WATCH = policy('watch', 'monitor: {sae: test, features: [{index: 1}]}');
const FLAG = policy('hot', 'flag: {name: hot, when: {feature: {sae: test, index: 1, above: 0}}}');

describe('saegate serve --tap-monitor-delay-ms', () => {
  it('lets the model server hold tapped data for it while no policy has a condition, and takes it back when a reload brings one', async () => {
    // Watching features is monitoring: nothing waits on the rows.
    const { model, dir } = await start({ 'watch.yaml': WATCH });
    const subscription = () => model.tap?.client.subscription ?? null;
    await waitFor('the relaxed subscription', () => subscription()?.maxDelayMs === 50, { observed: () => subscription() });
    expect(subscription()?.hooks).toEqual([HOOK]);

    // A conditional flag: from its load on, a trigger's lag matters again.
    fs.writeFileSync(path.join(dir, 'flag.yaml'), FLAG);
    await waitFor('the subscription without maxDelayMs', () => subscription() !== null && subscription()!.maxDelayMs === undefined, { observed: () => subscription(), deadlineMs: 10_000 });
    expect(subscription()?.hooks).toEqual([HOOK]);
  });

  it('while a condition keeps the subscription short, holds requests no rule reads for the monitoring delay, and a request whose rules have all fired from then on', async () => {
    // The conditional flag applies to requests with x-guard: 1 only; it fires at once (above −1).
    const guarded = policy('guard', 'flag: {name: seen, when: {feature: {sae: test, index: 1, above: -1}}}').replace('spec:\n', 'spec:\n  match: {headers: {x-guard: ["1"]}}\n');
    const { proxy, model } = await start({ 'watch.yaml': WATCH, 'guard.yaml': guarded });
    const bridge = model.tap!;
    await waitFor('a subscription', () => (bridge.client.subscription?.hooks.length ?? 0) > 0);
    expect(bridge.client.subscription?.maxDelayMs).toBeUndefined();
    const holds: (number | undefined)[] = [];
    bridge.client.on('planUpdate', (update) => holds.push(update.maxDelayMs));
    const complete = (headers: Record<string, string>, maxTokens: number) =>
      fetch(`${proxy.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ model: 'synthetic', prompt: 'abc', max_tokens: maxTokens, temperature: 0 }) });

    // No rule reads it: forwarded with the 50 ms hold, which its run on the model server took.
    const plain = await complete({}, 16);
    expect(plain.status).toBe(200);
    expect(plain.headers.get('x-saegate-applied')).toBe('policy=watch@1');
    await plain.text();
    expect(bridge.health().requests_with_own_hold).toBe(1);

    // The guard reads it: forwarded without a hold; its flag fires at the first row, and the
    // plan update that follows gives it the 50 ms hold for the rest of its 1000 tokens.
    const watched = await complete({ 'x-guard': '1' }, 1000);
    expect(watched.status).toBe(200);
    await watched.text();
    await waitFor('the hold to come with a plan update', () => holds.length > 0, { observed: () => holds });
    expect(holds).toEqual([50]);
    expect(bridge.health().requests_with_own_hold).toBe(2);
    // The model server's /healthz says the same, with its writes and the hold in force now (none
    // running: the subscription's, here its own 2 ms).
    const health = (await (await fetch(`${model.url}/healthz`)).json()) as { tap?: { connected: boolean; writes: number; delay_ms: number; requests_with_own_hold: number }; plan_wait_timeout_ms: number };
    expect(health.tap).toMatchObject({ connected: true, delay_ms: 2, requests_with_own_hold: 2 });
    expect(health.tap!.writes).toBeGreaterThan(0);
    expect(health.plan_wait_timeout_ms).toBe(2000);
    const metrics = await (await fetch(`${proxy.url}/metrics`)).text();
    expect(metrics).toContain('saegate_policy_tap_holds_total{when="forwarded"} 1');
    expect(metrics).toContain('saegate_policy_tap_holds_total{when="fired"} 1');
  });

  it('asks for nothing longer when the policies loaded at start already have a condition', async () => {
    const { model } = await start({ 'watch.yaml': WATCH, 'flag.yaml': FLAG });
    await waitFor('a subscription', () => model.tap?.client.subscription != null);
    expect(model.tap?.client.subscription?.maxDelayMs).toBeUndefined();
  });
});
