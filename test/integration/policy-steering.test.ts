/**
 * `saegate serve --policies DIR` on stories260K: a steer policy that matches a header changes greedy
 * output through the proxy, while a request that matches no policy, sent in the same batch, gets
 * exactly the text a direct request to the model server gets. Every response names what applied.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProxyWithSaes } from '../../src/cli/serve.js';
import { startModelServer, type ModelServer } from '../../src/model/server.js';
import type { ProxyServer } from '../../src/proxy/server.js';
import { writeVectorFile } from '../../src/steering/formats.js';
import { makeSteeringVector } from '../../src/steering/vector.js';
import { expectSaegateRejection } from '../helpers/errors.js';
import { freePort } from '../helpers/ports.js';

const MODEL = path.resolve(import.meta.dirname, '..', '..', '..', 'shared', 'models', 'stories260K', 'stories260K.bin');
const hasModel = fs.existsSync(MODEL);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'saegate-policy-steer-'));
let model: ModelServer;
let proxy: ProxyServer;

async function complete(base: string, headers: Record<string, string> = {}): Promise<{ text: string; applied: string | null }> {
  const res = await fetch(`${base}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ model: 'stories260K', prompt: 'Once upon a time, there was a little girl', max_tokens: 24, temperature: 0 }),
  });
  expect(res.status).toBe(200);
  const body = (await res.json()) as { choices: { text: string }[] };
  return { text: body.choices[0].text, applied: res.headers.get('x-saegate-applied') };
}

beforeAll(async () => {
  if (!hasModel) return;
  // A seeded direction at the middle block, large enough to move greedy decoding.
  const direction = Float32Array.from({ length: 64 }, (_, i) => Math.sin(1.7 * i + 0.3));
  writeVectorFile(path.join(dir, 'push.safetensors'), makeSteeringVector('<memory>', new Map([['blocks.2.hook_resid_post', direction]])));
  fs.writeFileSync(
    path.join(dir, 'steer.yaml'),
    `apiVersion: saegate/v1\nkind: Policy\nmetadata: {name: push}\nspec:\n  match:\n    headers: {x-tenant: [steered]}\n  actions:\n    - steer: {vector: push.safetensors, scale: 3}\n`,
  );
  const modelPort = await freePort();
  ({ server: proxy } = await startProxyWithSaes({ upstream: `http://127.0.0.1:${modelPort}`, port: 0 }, [], dir));
  const connected = proxy.tap.server.nextConnection();
  model = await startModelServer({ model: MODEL, port: modelPort, tapUrl: proxy.tapUrl, planWaitTimeoutMs: 2000 });
  await connected;
});
afterAll(async () => {
  await model?.close();
  await proxy?.close({ timeoutMs: 0 });
  fs.rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!hasModel)('steering by policy through saegate', () => {
  it('steers the matched request and leaves an unmatched one in the same batch exactly as a direct request', async () => {
    const direct = await complete(model.url);
    const [steered, plain] = await Promise.all([complete(proxy.url, { 'x-tenant': 'steered' }), complete(proxy.url)]);
    expect(plain.text).toBe(direct.text);
    expect(plain.applied).toBe('none');
    expect(steered.text).not.toBe(direct.text);
    expect(steered.applied).toMatch(/^policy=push@1, steering=plan-[0-9a-f]+-\d+$/);
  });

  it('refuses to start on an invalid policy directory, listing every problem', async () => {
    const bad = path.join(dir, 'bad');
    fs.mkdirSync(bad);
    fs.writeFileSync(path.join(bad, 'p.yaml'), 'apiVersion: saegate/v1\nkind: Policy\nmetadata: {name: x}\nspec:\n  actions:\n    - steer: {vector: nowhere.safetensors, scael: 1}\n');
    const error = await expectSaegateRejection(() => startProxyWithSaes({ upstream: 'http://127.0.0.1:9', port: 0 }, [], bad), 'SAEGATE_ERR_CONFIG', 'invalid policy files');
    expect(error.message).toMatch(/p\.yaml:6:\d+: spec\.actions\[0\]\.steer\.scael: unknown key 'scael'/);
  });
});
