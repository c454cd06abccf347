/**
 * `saegate serve --upstream-steering MODE` for model servers without the tap: a steer policy's
 * plan travels in the request body, in the server's own field.
 *
 * - reference: on stories260K, greedy output through saegate with a steer policy equals a direct
 *   request to the reference server carrying the same `steering` field (and differs from the
 *   unsteered output, so the field did something).
 * - easysteer and vllm-xargs: a stub server on port 0 captures what saegate forwards; the bodies
 *   must parse under the documented formats (the full schemas are in
 *   test/unit/steering/upstream.test.ts; here the captured body's field is checked end to end).
 * - requests no policy steers, bodies that are not JSON and bodies over the limit behave as today.
 * - conditions are refused when the policies load, naming the policy.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startProxyWithSaes } from '../../src/cli/serve.js';
import { startModelServer, type ModelServer } from '../../src/model/server.js';
import type { ProxyServer } from '../../src/proxy/server.js';
import { readVectorFile, writeVectorFile } from '../../src/steering/formats.js';
import { VLLM_XARGS_KEY, type VllmXargsPlan } from '../../src/steering/upstream.js';
import { makeSteeringVector } from '../../src/steering/vector.js';
import { expectSaegateRejection } from '../helpers/errors.js';
import { startStub, type StubUpstream } from '../helpers/stub-upstream.js';

const MODEL = path.resolve(import.meta.dirname, '..', '..', '..', 'shared', 'models', 'stories260K', 'stories260K.bin');
const hasModel = fs.existsSync(MODEL);
const HOOK = 'blocks.2.hook_resid_post';
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'saegate-upstream-steering-'));
const policyDir = path.join(dir, 'policies');
const vectorDir = path.join(dir, 'exported');
// A seeded direction at the middle block (as in policy-steering.test.ts), at a scale that moves greedy
// decoding without saturating it: at 3 it decodes "lo lo lo …", which a wrong scale would give too.
const DIRECTION = Float32Array.from({ length: 64 }, (_, i) => Math.sin(1.7 * i + 0.3));
const SCALE = 1.5;

beforeAll(() => {
  fs.mkdirSync(policyDir);
  writeVectorFile(path.join(policyDir, 'push.safetensors'), makeSteeringVector('<memory>', new Map([[HOOK, DIRECTION]])));
  fs.writeFileSync(
    path.join(policyDir, 'steer.yaml'),
    `apiVersion: saegate/v1\nkind: Policy\nmetadata: {name: push}\nspec:\n  match:\n    headers: {x-tenant: [steered]}\n  actions:\n    - steer: {vector: push.safetensors, scale: ${SCALE}}\n`,
  );
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function client(base: string, headers: Record<string, string> = {}): OpenAI {
  return new OpenAI({ baseURL: `${base}/v1`, apiKey: 'unused', maxRetries: 0, defaultHeaders: headers });
}

describe.skipIf(!hasModel)('--upstream-steering reference, end to end on stories260K', () => {
  let model: ModelServer;
  let proxy: ProxyServer;
  const prompt = 'Once upon a time, there was a little girl';

  beforeAll(async () => {
    model = await startModelServer({ model: MODEL, port: 0 });
    ({ server: proxy } = await startProxyWithSaes({ upstream: model.url, port: 0, upstreamSteering: 'reference' }, [], policyDir));
  });
  afterAll(async () => {
    await proxy?.close({ timeoutMs: 0 });
    await model?.close();
  });

  it('gives the greedy text of a direct request carrying the same steering field, and says how it steered', async () => {
    const body = { model: 'stories260K', prompt, max_tokens: 24, temperature: 0 };
    const steeringField = [{ hook: HOOK, vector: Array.from(DIRECTION), scale: SCALE }];
    const [direct, plain, { data: steered, response }] = await Promise.all([
      client(model.url).completions.create({ ...body, steering: steeringField } as OpenAI.CompletionCreateParamsNonStreaming),
      client(model.url).completions.create(body),
      client(proxy.url, { 'x-tenant': 'steered' }).completions.create(body).withResponse(),
    ]);
    expect(steered.choices[0].text).toBe(direct.choices[0].text);
    expect(steered.choices[0].text).not.toBe(plain.choices[0].text);
    expect(response.headers.get('x-saegate-applied')).toBe('policy=push@1, steering=upstream:reference');
  });

  it('streams the same steered text, ending with the applied comment', async () => {
    const res = await fetch(`${proxy.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-tenant': 'steered' },
      body: JSON.stringify({ model: 'stories260K', prompt, max_tokens: 24, temperature: 0, stream: true }),
    });
    const text = await res.text();
    expect(text.endsWith(': x-saegate-applied=policy=push@1, steering=upstream:reference\n\n')).toBe(true);
    const streamed = text
      .split('\n')
      .filter((line) => line.startsWith('data: {'))
      .map((line) => (JSON.parse(line.slice(6)) as { choices: { text: string }[] }).choices[0]?.text ?? '')
      .join('');
    const direct = await client(model.url).completions.create({ model: 'stories260K', prompt, max_tokens: 24, temperature: 0, steering: [{ hook: HOOK, vector: Array.from(DIRECTION), scale: SCALE }] } as OpenAI.CompletionCreateParamsNonStreaming);
    expect(streamed).toBe(direct.choices[0].text);
  });

  it('reports steering via reference without activations on /readyz', async () => {
    const res = await fetch(`${proxy.url}/readyz`);
    expect(res.status).toBe(200);
    expect(((await res.json()) as { steering: unknown }).steering).toEqual({ mode: 'reference', activations: false, details: 'steering via reference, no activations' });
  });
});

describe.each([
  { mode: 'easysteer' as const, field: 'steering' },
  { mode: 'vllm-xargs' as const, field: 'vllm_xargs' },
])('--upstream-steering $mode against a capturing server', ({ mode, field }) => {
  let stub: StubUpstream;
  let proxy: ProxyServer;

  beforeAll(async () => {
    stub = await startStub();
    stub.handle = (_request, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ id: 'cmpl-stub', object: 'chat.completion', created: 1, model: 'stub', choices: [{ index: 0, message: { role: 'assistant', content: 'ok' }, finish_reason: 'stop' }] }));
    };
    ({ server: proxy } = await startProxyWithSaes(
      { upstream: stub.url, port: 0, upstreamSteering: mode, upstreamSteeringVectorDir: mode === 'easysteer' ? vectorDir : null, maxBodyBytes: 4096 },
      [],
      policyDir,
    ));
  });
  afterAll(async () => {
    await proxy?.close({ timeoutMs: 0 });
    await stub?.close();
  });
  afterEach(() => {
    stub.requests.length = 0;
  });

  it(`writes the plan into the body's ${field} field, in the documented format`, async () => {
    const { response } = await client(proxy.url, { 'x-tenant': 'steered' })
      .chat.completions.create({ model: 'stub', messages: [{ role: 'user', content: 'hello' }], max_tokens: 8 })
      .withResponse();
    expect(response.headers.get('x-saegate-applied')).toBe(`policy=push@1, steering=upstream:${mode}`);
    expect(stub.requests).toHaveLength(1);
    const sent = JSON.parse(stub.requests[0].body.toString('utf8')) as Record<string, unknown>;
    expect(sent.messages).toEqual([{ role: 'user', content: 'hello' }]);
    expect(stub.requests[0].headers['x-saegate-plan-id']).toBeUndefined();
    if (mode === 'easysteer') {
      const spec = sent.steering as { vectors: { source: string; layers: number[]; scale: number; algorithm: string; apply: unknown }[] };
      expect(spec.vectors).toHaveLength(1);
      expect(spec.vectors[0]).toMatchObject({ algorithm: 'direct', layers: [2], scale: SCALE, apply: { prompt: 'all', generation: 'all' } });
      expect(readVectorFile(spec.vectors[0].source).hooks.get(HOOK)).toEqual(DIRECTION);
    } else {
      const xargs = sent.vllm_xargs as Record<string, unknown>;
      const plan = JSON.parse(xargs[VLLM_XARGS_KEY] as string) as VllmXargsPlan;
      expect(plan.terms).toMatchObject([{ hook: HOOK, layer: 2, scale: SCALE, from: 0, until: null, dModel: 64 }]);
    }
  });

  it('forwards a request no policy steers byte for byte', async () => {
    const raw = '{"model":"stub",  "messages":[{"role":"user","content":"hi"}], "steering": 7}';
    const res = await fetch(`${proxy.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: raw });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-saegate-applied')).toBe('none');
    expect(stub.requests[0].body.toString('utf8')).toBe(raw);
  });

  it('answers a steered body that is not valid JSON with 400 and forwards nothing', async () => {
    const res = await fetch(`${proxy.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-tenant': 'steered' }, body: '{"model":"stub","messages":[1,]}' });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('SAEGATE_ERR_INVALID_JSON');
    expect(stub.requests).toHaveLength(0);
  });

  it('answers a body over --max-body-bytes with 413, as without upstream steering', async () => {
    const res = await fetch(`${proxy.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-tenant': 'steered' },
      body: JSON.stringify({ model: 'stub', messages: [{ role: 'user', content: 'x'.repeat(5000) }] }),
    });
    expect(res.status).toBe(413);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('SAEGATE_ERR_BODY_TOO_LARGE');
    expect(stub.requests).toHaveLength(0);
  });

  it(`refuses a client's own value in the field saegate writes with 400 SAEGATE_ERR_STEERING`, async () => {
    const own = mode === 'easysteer' ? { steering: false } : { vllm_xargs: { [VLLM_XARGS_KEY]: '{}' } };
    const res = await fetch(`${proxy.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-tenant': 'steered' },
      body: JSON.stringify({ model: 'stub', messages: [], ...own }),
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('SAEGATE_ERR_STEERING');
    expect(stub.requests).toHaveLength(0);
  });

  it(`says "steering via ${mode}, no activations" on /readyz`, async () => {
    const body = (await (await fetch(`${proxy.url}/readyz`)).json()) as { ready: boolean; steering: { details: string; activations: boolean } };
    expect(body.ready).toBe(true);
    expect(body.steering).toEqual({ mode, activations: false, details: `steering via ${mode}, no activations` });
  });
});

describe('what a server without the tap cannot do', () => {
  it('refuses a policy with a condition at load, naming the policy', async () => {
    const bad = path.join(dir, 'conditional');
    fs.mkdirSync(bad);
    fs.copyFileSync(path.join(policyDir, 'push.safetensors'), path.join(bad, 'push.safetensors'));
    fs.writeFileSync(
      path.join(bad, 'p.yaml'),
      'apiVersion: saegate/v1\nkind: Policy\nmetadata: {name: when-it-fires}\nspec:\n  actions:\n    - monitor: {sae: demo, features: [{index: 1}]}\n    - steer:\n        vector: push.safetensors\n        scale: 1\n        when: {feature: {sae: demo, index: 1, above: 2}}\n',
    );
    const error = await expectSaegateRejection(() => startProxyWithSaes({ upstream: 'http://127.0.0.1:9', port: 0, upstreamSteering: 'reference' }, [], bad), 'SAEGATE_ERR_CONFIG', 'invalid policy files');
    expect(error.message).toMatch(/p\.yaml:\d+:\d+: spec\.actions\[1\]\.steer\.when: policy 'when-it-fires': conditions need activations from the tap, but --upstream-steering reference/);
  });

  it('refuses --sae with a body-field mode', async () => {
    await expectSaegateRejection(
      () => startProxyWithSaes({ upstream: 'http://127.0.0.1:9', port: 0, upstreamSteering: 'vllm-xargs' }, [{ config: { source: '/x' } } as never]),
      'SAEGATE_ERR_CONFIG',
      "'sae'",
      'no activations',
    );
  });
});
