/**
 * `saegate serve --tap-monitor-delay-ms`: while no loaded policy has a condition, saegate lets the
 * model servers hold tapped data that long (the subscription's `maxDelayMs`, docs/tap-protocol.md
 * 4.3), and takes it back as soon as a policy with a condition is loaded, by a reload included.
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

const MODEL = 'synthetic:dim=32,layers=2,heads=4,kv=2,hidden=64,vocab=300,ctx=96,seed=7';
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

  it('asks for nothing longer when the policies loaded at start already have a condition', async () => {
    const { model } = await start({ 'watch.yaml': WATCH, 'flag.yaml': FLAG });
    await waitFor('a subscription', () => model.tap?.client.subscription != null);
    expect(model.tap?.client.subscription?.maxDelayMs).toBeUndefined();
  });
});
