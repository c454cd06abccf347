/**
 * The tap endpoint of a running saegate: the reference model server connects to it, streams
 * activations for requests routed through saegate, takes steering plans before the request, and
 * saegate refuses bad tokens and survives garbage frames.
 */
import OpenAI from 'openai';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startModelServer, type ModelServer } from '../../src/model/server.js';
import { EMPTY_PLAN, type PlanResolver, type RequestPlan } from '../../src/proxy/plan.js';
import { startProxy, type ProxyServer } from '../../src/proxy/server.js';
import { CountingSink, type TapSource } from '../../src/tap/sink.js';
import { encodeMessage } from '../../src/tap/codec.js';
import type { ActivationsFrame } from '../../src/tap/server.js';
import { freePort } from '../helpers/ports.js';
import { waitFor } from '../helpers/wait.js';

const MODEL_ARG = 'synthetic:dim=64,layers=2,heads=4,kv=2,hidden=128,vocab=300,ctx=256,seed=3';
const HOOK = 'blocks.1.hook_resid_post';
const TAP_TOKEN = 'tap-secret';
const ADMIN = { authorization: 'Bearer admin-secret', 'content-type': 'application/json' };

/** Counts everything, and keeps f32 rows of HOOK by request and position (copied: frames are views). */
class RecordingSink extends CountingSink {
  readonly rowsOf = new Map<string, Map<number, Float32Array>>();
  override write(frame: ActivationsFrame, source: TapSource): number {
    const dropped = super.write(frame, source);
    if (frame.hook === HOOK && frame.dtype === 'f32') {
      for (let r = 0; r < frame.rowCount; r++) {
        const id = frame.requestIds[frame.rowRequestIndexes[r]];
        const byPosition = this.rowsOf.get(id) ?? new Map<number, Float32Array>();
        this.rowsOf.set(id, byPosition);
        byPosition.set(frame.positions[r], frame.data.slice(r * frame.dModel, (r + 1) * frame.dModel));
      }
    }
    return dropped;
  }
}

let model: ModelServer;
let proxy: ProxyServer;
let client: OpenAI;
const sink = new RecordingSink();
let plan: (requestId: string) => RequestPlan = () => EMPTY_PLAN;
const resolver: PlanResolver = { resolve: (request) => plan(request.requestId) };

async function metric(series: string): Promise<number> {
  const text = await (await fetch(`${proxy.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

async function subscribe(body: object): Promise<Response> {
  return fetch(`${proxy.url}/admin/tap/subscription`, { method: 'PUT', headers: ADMIN, body: JSON.stringify(body) });
}

/** Opens a raw WebSocket to the tap; resolves with how the attempt ended. */
function rawTap(token: string, onOpen?: (ws: WebSocket) => void): Promise<{ status: number | null; closeCode: number | null }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(proxy.tapUrl, { headers: { authorization: `Bearer ${token}` } });
    ws.on('unexpected-response', (_req, res) => {
      resolve({ status: res.statusCode ?? null, closeCode: null });
      ws.terminate();
    });
    ws.on('open', () => onOpen?.(ws));
    ws.on('close', (code) => resolve({ status: 101, closeCode: code }));
    ws.on('error', () => {});
  });
}

beforeAll(async () => {
  // The proxy needs the model server's URL and the model server needs the proxy's tap URL:
  // reserve the model server's port first.
  const modelPort = await freePort();
  proxy = await startProxy({ upstream: `http://127.0.0.1:${modelPort}`, port: 0, tapToken: TAP_TOKEN, adminToken: 'admin-secret', requireTap: true, sink, planResolver: resolver });
  const connected = proxy.tap.server.nextConnection();
  model = await startModelServer({ model: MODEL_ARG, port: modelPort, tapUrl: proxy.tapUrl, tapToken: TAP_TOKEN, planWaitTimeoutMs: 2000 });
  await connected;
  client = new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: 'unused', maxRetries: 0 });
});
afterAll(async () => {
  await model?.close();
  await proxy?.close({ timeoutMs: 0 });
});

describe('saegate tap endpoint', () => {
  it('accepts the model server with the token, reports it in /admin/status, and is ready with a tap connected', async () => {
    const status = (await (await fetch(`${proxy.url}/admin/status`, { headers: ADMIN })).json()) as { tap: { connections: { modelId: string; dModel: number; canSteer: boolean }[] } };
    expect(status.tap.connections).toHaveLength(1);
    expect(status.tap.connections[0]).toMatchObject({ modelId: model.model.name, dModel: 64, canSteer: true });
    const ready = await fetch(`${proxy.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ ready: true, tap: { ok: true, required: true, connections: 1 } });
  });

  it('delivers the activation rows of a request routed through saegate to the sink, tagged with its request id', async () => {
    const res = await subscribe({ hooks: [HOOK], dtype: 'f32', includePrompt: true });
    expect(res.status).toBe(200);
    await waitFor("the model server's tap subscribed to the hook", () => model.tap!.client.subscription?.hooks[0] === HOOK);
    const completion = await client.completions.create({ model: model.model.name, prompt: 'Once upon a time', max_tokens: 6, temperature: 0 }, { headers: { 'x-request-id': 'tap-req-1' } });
    await waitFor('the end of tap-req-1 in the sink', () => sink.request('tap-req-1')?.end !== null && sink.request('tap-req-1')?.end !== undefined);
    const counts = sink.request('tap-req-1')!;
    const end = counts.end!;
    expect(end).toMatchObject({ requestId: 'tap-req-1', completionTokens: 6, finishReason: 'length', promptTokens: completion.usage!.prompt_tokens });
    // Every fed position: the prompt, then each generated token but the last.
    const fed = end.promptTokens + end.completionTokens - 1;
    expect(counts.rowsByHook.get(HOOK)).toBe(fed);
    expect([...sink.rowsOf.get('tap-req-1')!.keys()].sort((a, b) => a - b)).toEqual(Array.from({ length: fed }, (_, i) => i));
    // With includePrompt the reference server sends the prompt tokens too, then the 6 generated ones.
    expect(counts.tokens).toBe(end.promptTokens + 6);
    expect(counts.sessionId).toBe(proxy.tap.connections[0].sessionId);
    expect(proxy.tap.connectionFor('tap-req-1')).toBeUndefined(); // released at its end
    expect(await metric('saegate_tap_rows_total')).toBeGreaterThanOrEqual(fed);
  });

  it('refuses a tap connection with a wrong token and counts it', async () => {
    const before = await metric('saegate_tap_auth_failures_total');
    expect(await rawTap('wrong')).toEqual({ status: 401, closeCode: null });
    expect(await metric('saegate_tap_auth_failures_total')).toBe(before + 1);
    expect(proxy.tap.connections).toHaveLength(1);
  });

  it('counts garbage frames, closes only the connection that sent them, and keeps serving requests', async () => {
    const before = await metric('saegate_tap_malformed_frames_total');
    // Garbage instead of a hello.
    expect(await rawTap(TAP_TOKEN, (ws) => ws.send(Buffer.from([0xde, 0xad, 0xbe, 0xef, 1, 2, 3])))).toEqual({ status: 101, closeCode: 1007 });
    // A proper hello, then garbage.
    const hello = encodeMessage({ type: 'hello', protocolVersions: [1], modelId: 'rogue', dModel: 4, nLayers: 1, hookPoints: [], dtypes: ['f32'], canSteer: false });
    const result = await rawTap(TAP_TOKEN, (ws) => {
      ws.send(hello);
      ws.once('message', () => ws.send(Buffer.from([0x04, 0, 0, 0, 9, 9])));
    });
    expect(result).toEqual({ status: 101, closeCode: 1007 });
    expect(await metric('saegate_tap_malformed_frames_total')).toBe(before + 2);
    expect(proxy.tap.connections.map((c) => c.hello.modelId)).toEqual([model.model.name]);
    await client.completions.create({ model: model.model.name, prompt: 'still here', max_tokens: 3, temperature: 0 }, { headers: { 'x-request-id': 'after-garbage' } });
    await waitFor('the end of after-garbage in the sink', () => sink.request('after-garbage')?.end != null);
    expect(sink.request('after-garbage')!.rows).toBeGreaterThan(0);
  });

  it('sends the steering plan down the tap before forwarding, so it applies from prefill, and says so', async () => {
    const vector = Float32Array.from({ length: 64 }, (_, i) => Math.cos(i * 0.37));
    plan = (requestId) => (requestId === 'steered-1' ? { policies: ['test-steer'], steering: [{ hook: HOOK, vector, scale: 3, fromPosition: 0, untilPosition: null }] } : EMPTY_PLAN);
    try {
      const body = JSON.stringify({ model: model.model.name, prompt: 'Once upon a time', max_tokens: 4, temperature: 0, stream: true });
      const post = (id: string) => fetch(`${proxy.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-request-id': id }, body });
      const [steered, plain] = await Promise.all([post('steered-1'), post('plain-1')]);
      const applied = steered.headers.get('x-saegate-applied')!;
      expect(applied).toMatch(/^policy=test-steer, steering=plan-[0-9a-f]{8}-[0-9a-z]+$/);
      expect(plain.headers.get('x-saegate-applied')).toBe('none');
      expect((await steered.text()).endsWith(`data: [DONE]\n\n: x-saegate-applied=${applied}\n\n`)).toBe(true);
      await plain.text();
      const planId = applied.split('steering=')[1];
      expect(await proxy.tap.connections[0].waitForPlanAck(planId)).toEqual({ requestId: 'steered-1', planId, accepted: true });
      await waitFor('the ends of steered-1 and plain-1 in the sink', () => sink.request('steered-1')?.end != null && sink.request('plain-1')?.end != null);
      // Position 0 is the prompt's first token, computed in prefill: the plan was already in place.
      const delta = sink.rowsOf.get('steered-1')!.get(0)!.map((v, d) => v - sink.rowsOf.get('plain-1')!.get(0)![d]);
      const expected = vector.map((v) => 3 * v);
      expect(Math.max(...delta.map((v, d) => Math.abs(v - expected[d])))).toBeLessThan(1e-4);
      expect(await metric('saegate_steering_plans_total{outcome="sent"}')).toBe(1);
    } finally {
      plan = () => EMPTY_PLAN;
    }
  });

  it('forwards unsteered and says steering=skipped when no model server can apply the plan, or refuses when fail-closed', async () => {
    const wrongHook = { hook: 'blocks.7.hook_resid_post', vector: new Float32Array(64), scale: 1, fromPosition: 0, untilPosition: null };
    plan = () => ({ policies: ['p'], steering: [wrongHook] });
    try {
      const post = () => fetch(`${proxy.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: model.model.name, prompt: 'x', max_tokens: 2 }) });
      const skipped = await post();
      expect(skipped.status).toBe(200);
      expect(skipped.headers.get('x-saegate-applied')).toBe('policy=p, steering=skipped');
      plan = () => ({ policies: ['p'], steering: [wrongHook], failClosed: true });
      const refused = await post();
      expect(refused.status).toBe(503);
      expect(refused.headers.get('retry-after')).toBe('1');
      expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('SAEGATE_ERR_STEERING_UNAVAILABLE');
      expect(await metric('saegate_steering_plans_total{outcome="skipped"}')).toBe(1);
      expect(await metric('saegate_steering_plans_total{outcome="refused"}')).toBe(1);
    } finally {
      plan = () => EMPTY_PLAN;
    }
  });
});
