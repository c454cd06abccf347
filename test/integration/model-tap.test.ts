/**
 * The model server connected to a real TapServer over a real WebSocket: subscribed activations and
 * tokens tagged with the request id, request ends, plans sent before the HTTP request, plan updates
 * taking effect mid-generation, plan timeouts, and reconnecting after saegate goes away.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startModelServer, type ModelServer } from '../../src/model/server.js';
import { f16BitsToF32 } from '../../src/common/f16.js';
import type { TokensMessage } from '../../src/tap/messages.js';
import { TapServer, type ActivationsFrame, type TapConnection } from '../../src/tap/server.js';
import type { RequestEnd } from '../../src/tap/messages.js';
import { hasSharedModels, stories260K } from '../helpers/fixtures.js';
import { waitFor } from '../helpers/wait.js';

const modelArg = hasSharedModels ? stories260K.model : 'synthetic:dim=64,layers=4,heads=4,kv=2,hidden=128,vocab=300,ctx=256,seed=5';
const HOOK = 'blocks.2.hook_resid_post';

interface Collected {
  rows: Map<string, Map<string, Map<number, Float32Array>>>;
  tokens: Map<string, { position: number; tokenId: number; text: string }[]>;
  ends: Map<string, RequestEnd>;
  /** Per request, the kind of each message that mentioned it, in arrival order. */
  arrivals: Map<string, ('rows' | 'tokens' | 'end')[]>;
}

function collect(conn: TapConnection): Collected {
  const c: Collected = { rows: new Map(), tokens: new Map(), ends: new Map(), arrivals: new Map() };
  const arrived = (ids: Iterable<string>, kind: 'rows' | 'tokens' | 'end'): void => {
    for (const id of new Set(ids)) c.arrivals.set(id, [...(c.arrivals.get(id) ?? []), kind]);
  };
  conn.on('activations', (frame: ActivationsFrame) => {
    arrived(Array.from(frame.rowRequestIndexes, (i) => frame.requestIds[i]), 'rows');
    for (let r = 0; r < frame.rowCount; r++) {
      const id = frame.requestIds[frame.rowRequestIndexes[r]];
      const byHook = c.rows.get(id) ?? new Map<string, Map<number, Float32Array>>();
      c.rows.set(id, byHook);
      const byPos = byHook.get(frame.hook) ?? new Map<number, Float32Array>();
      byHook.set(frame.hook, byPos);
      const row = new Float32Array(frame.dModel);
      for (let d = 0; d < frame.dModel; d++) {
        row[d] = frame.dtype === 'f16' ? f16BitsToF32(frame.data[r * frame.dModel + d]) : frame.data[r * frame.dModel + d];
      }
      byPos.set(frame.positions[r], row);
    }
  });
  conn.on('tokens', (msg: TokensMessage) => {
    arrived(Array.from(msg.rowRequestIndexes, (i) => msg.requestIds[i]), 'tokens');
    msg.tokenIds.forEach((tokenId, i) => {
      const id = msg.requestIds[msg.rowRequestIndexes[i]];
      c.tokens.set(id, [...(c.tokens.get(id) ?? []), { position: msg.positions[i], tokenId, text: msg.texts[i] }]);
    });
  });
  conn.on('end', (end) => {
    arrived([end.requestId], 'end');
    c.ends.set(end.requestId, end);
  });
  return c;
}

async function complete(server: ModelServer, requestId: string, body: Record<string, unknown>, headers: Record<string, string> = {}) {
  const res = await fetch(`${server.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-request-id': requestId, ...headers },
    body: JSON.stringify({ model: server.model.name, temperature: 0, ...body }),
  });
  return { status: res.status, body: (await res.json()) as { choices: { text: string }[]; error?: { code: string; message: string } } };
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe('model server on the tap', () => {
  let httpServer: http.Server;
  let tapServer: TapServer;
  let server: ModelServer;
  let conn: TapConnection;
  let seen: Collected;

  beforeAll(async () => {
    httpServer = http.createServer();
    tapServer = new TapServer({});
    tapServer.attach(httpServer);
    await new Promise<void>((r) => httpServer.listen(0, '127.0.0.1', r));
    const next = tapServer.nextConnection();
    server = await startModelServer({ model: modelArg, port: 0, tapUrl: `ws://127.0.0.1:${(httpServer.address() as AddressInfo).port}/v1/tap`, planWaitTimeoutMs: 500 });
    conn = await next;
    seen = collect(conn);
  });
  afterAll(async () => {
    await server?.close();
    await tapServer?.close();
    httpServer?.close();
  });

  it('says hello with the model id, width and every hook point', () => {
    const cfg = server.model.weights.config;
    expect(conn.hello).toMatchObject({ modelId: server.model.name, dModel: cfg.dim, nLayers: cfg.nLayers, canSteer: true });
    expect(conn.hello.hookPoints).toHaveLength(2 * cfg.nLayers);
    expect(conn.hello.hookPoints).toContain(HOOK);
  });

  it('streams subscribed rows for prompt and generated positions, tokens with their text, and the end, all under the request id', async () => {
    conn.subscribe({ hooks: [HOOK, 'blocks.0.hook_resid_pre'], dtype: 'f16', includePrompt: true });
    await waitFor("the model server's tap subscribed to two hooks", () => server.tap!.client.subscription?.hooks.length === 2);
    const res = await complete(server, 'req-1', { prompt: 'Once upon a time', max_tokens: 10 });
    expect(res.status).toBe(200);
    await waitFor('the end of req-1 on the tap', () => seen.ends.has('req-1'));
    const end = seen.ends.get('req-1')!;
    expect(end).toMatchObject({ finishReason: 'length', completionTokens: 10 });
    const fedPositions = end.promptTokens + end.completionTokens - 1;
    for (const hook of [HOOK, 'blocks.0.hook_resid_pre']) {
      const positions = [...seen.rows.get('req-1')!.get(hook)!.keys()].sort((a, b) => a - b);
      expect(positions).toEqual(Array.from({ length: fedPositions }, (_, i) => i));
    }
    const tokens = seen.tokens.get('req-1')!.filter((t) => t.position >= end.promptTokens);
    expect(tokens.map((t) => t.position)).toEqual(Array.from({ length: 10 }, (_, i) => end.promptTokens + i));
    // A character is sent with the token that completes it; bytes that never complete one (the
    // response shows them as U+FFFD at its very end) have no token to travel with.
    expect(tokens.map((t) => t.text).join('')).toBe(res.body.choices[0].text.replace(/\uFFFD+$/u, ''));
  });

  it('sends the prompt tokens, ids and pieces as the tokenizer gives them, before any row of the request when the subscription includes the prompt', async () => {
    // Every hook and a long prompt: the prefill step alone has more rows than a flush holds, so its
    // rows leave at once, and the prompt tokens must still be ahead of them.
    conn.subscribe({ hooks: conn.hello.hookPoints, dtype: 'f32', includePrompt: true });
    await waitFor("the model server's tap subscribed to every hook point", () => server.tap!.client.subscription?.hooks.length === conn.hello.hookPoints.length);
    // Non-ASCII characters fall back to byte tokens in both vocabularies: pieces of split characters.
    const prompt = 'Once upon a time, a naïve café — fin. The little dog ran to the park and saw a big red ball under the tree. She was happy and they played all day in the sun.';
    const res = await complete(server, 'req-prompt', { prompt, max_tokens: 3 });
    expect(res.status).toBe(200);
    await waitFor('the end of req-prompt on the tap', () => seen.ends.has('req-prompt'));
    const tokenizer = server.model.tokenizer!;
    const ids = tokenizer.encode(prompt, { addBos: true });
    const end = seen.ends.get('req-prompt')!;
    expect(end.promptTokens).toBe(ids.length);
    expect(ids.length * conn.hello.hookPoints.length).toBeGreaterThan(512);
    const promptEntries = seen.tokens.get('req-prompt')!.filter((t) => t.position < end.promptTokens);
    expect(promptEntries.map((t) => t.position)).toEqual(ids.map((_, i) => i));
    expect(promptEntries.map((t) => t.tokenId)).toEqual(ids);
    // Piece i is what token i adds to the decode of the prompt up to it ('' while a character is unfinished).
    const expected: string[] = [];
    let released = 0;
    for (let i = 0; i < ids.length; i++) {
      const text = tokenizer.decode(ids.slice(0, i + 1));
      if (text.endsWith('\uFFFD')) {
        expected.push('');
      } else {
        expected.push(text.slice(released));
        released = text.length;
      }
    }
    expect(expected.filter((p) => p === '').length).toBeGreaterThan(0);
    expect(promptEntries.map((t) => t.text)).toEqual(expected);
    expect(promptEntries.map((t) => t.text).join('')).toBe(tokenizer.decode(ids));
    // The generated tokens follow, and their text is still the answer's.
    const generated = seen.tokens.get('req-prompt')!.filter((t) => t.position >= end.promptTokens);
    expect(generated.map((t) => t.position)).toEqual([0, 1, 2].map((i) => end.promptTokens + i));
    expect(generated.map((t) => t.text).join('')).toBe(res.body.choices[0].text.replace(/\uFFFD+$/u, ''));
    const arrivals = seen.arrivals.get('req-prompt')!;
    expect(arrivals[0]).toBe('tokens');
    expect(arrivals).toContain('rows');
    expect(arrivals.at(-1)).toBe('end');
  });

  it('sends f16 rows that match the f32 rows of the same greedy request to f16 precision', async () => {
    conn.subscribe({ hooks: [HOOK], dtype: 'f32', includePrompt: true });
    await waitFor("the model server's tap subscribed as f32", () => server.tap!.client.subscription?.dtype === 'f32');
    await complete(server, 'req-1-f32', { prompt: 'Once upon a time', max_tokens: 10 });
    await waitFor('the end of req-1-f32 on the tap', () => seen.ends.has('req-1-f32'));
    const f16 = seen.rows.get('req-1')!.get(HOOK)!;
    const f32 = seen.rows.get('req-1-f32')!.get(HOOK)!;
    for (const [p, row] of f32) {
      const scale = Math.max(...row.map(Math.abs));
      expect(maxAbsDiff(f16.get(p)!, row)).toBeLessThan(scale * 1e-3 + 1e-4);
    }
  });

  it('applies a plan sent before the HTTP request from prefill on: the hook shows exactly + scale × vector', async () => {
    conn.subscribe({ hooks: [HOOK], dtype: 'f32', includePrompt: true });
    await waitFor("the model server's tap subscribed as f32", () => server.tap!.client.subscription?.dtype === 'f32');
    const D = server.model.weights.config.dim;
    const vector = Float32Array.from({ length: D }, (_, i) => Math.cos(i * 0.37));
    const vectorId = conn.sendVector(vector);
    conn.sendPlan({ requestId: 'req-2', planId: 'plan-2', entries: [{ hook: HOOK, vectorId, scale: 3, fromPosition: 0, untilPosition: null }] });
    const [steered] = await Promise.all([
      complete(server, 'req-2', { prompt: 'Once upon a time', max_tokens: 8 }, { 'x-saegate-plan-id': 'plan-2' }),
      complete(server, 'req-2-plain', { prompt: 'Once upon a time', max_tokens: 8 }),
    ]);
    expect(steered.status).toBe(200);
    expect((await conn.waitForPlanAck('plan-2')).accepted).toBe(true);
    await waitFor('the ends of req-2 and req-2-plain on the tap', () => seen.ends.has('req-2') && seen.ends.has('req-2-plain'));
    // Position 0 is BOS for both; the hook's input there is identical, so the difference is the vector.
    const delta = seen.rows.get('req-2')!.get(HOOK)!.get(0)!.map((v, d) => v - seen.rows.get('req-2-plain')!.get(HOOK)!.get(0)![d]);
    expect(maxAbsDiff(delta, vector.map((v) => 3 * v))).toBeLessThan(1e-4);
  });

  it("resolves a plan's 'prompt' and 'generated' spans with the prompt's length: each steers only its own positions", async () => {
    conn.subscribe({ hooks: [HOOK], dtype: 'f32', includePrompt: true });
    await waitFor("the model server's tap subscribed as f32", () => server.tap!.client.subscription?.dtype === 'f32');
    expect(conn.hello.relativeSpans).toBe(true);
    const D = server.model.weights.config.dim;
    const vector = Float32Array.from({ length: D }, (_, i) => Math.sin(i * 0.53 + 0.2));
    const vectorId = conn.sendVector(vector);
    conn.sendPlan({ requestId: 'req-gen', planId: 'plan-gen', entries: [{ hook: HOOK, vectorId, scale: 2, fromPosition: 0, untilPosition: null, span: 'generated' }] });
    conn.sendPlan({ requestId: 'req-pro', planId: 'plan-pro', entries: [{ hook: HOOK, vectorId, scale: 2, fromPosition: 1, untilPosition: null, span: 'prompt' }] });
    const body = { prompt: 'Once upon a time', max_tokens: 6 };
    await Promise.all([
      complete(server, 'req-gen', body, { 'x-saegate-plan-id': 'plan-gen' }),
      complete(server, 'req-pro', body, { 'x-saegate-plan-id': 'plan-pro' }),
      complete(server, 'req-span-plain', body),
    ]);
    await waitFor('the ends of the span requests on the tap', () => ['req-gen', 'req-pro', 'req-span-plain'].every((id) => seen.ends.has(id)));
    const promptTokens = seen.ends.get('req-span-plain')!.promptTokens;
    const plain = seen.rows.get('req-span-plain')!.get(HOOK)!;
    const changed = (id: string): number[] => {
      const rows = seen.rows.get(id)!.get(HOOK)!;
      return [...rows.keys()].sort((a, b) => a - b).filter((p) => maxAbsDiff(rows.get(p)!, plain.get(p)!) > 1e-4);
    };
    // 'generated': the prompt's rows are untouched; the first generated position is exactly + 2 × vector.
    expect(changed('req-gen')[0]).toBe(promptTokens);
    const gen = seen.rows.get('req-gen')!.get(HOOK)!.get(promptTokens)!;
    expect(maxAbsDiff(gen.map((v, d) => v - plain.get(promptTokens)![d]), vector.map((v) => 2 * v))).toBeLessThan(1e-4);
    // 'prompt' from 1: BOS untouched, steered from position 1; generated rows differ only through the steered prefix.
    expect(changed('req-pro')[0]).toBe(1);
    const pro = seen.rows.get('req-pro')!.get(HOOK)!.get(1)!;
    expect(maxAbsDiff(pro.map((v, d) => v - plain.get(1)![d]), vector.map((v) => 2 * v))).toBeLessThan(1e-4);
  });

  it('applies a plan update to a running request from a later step on', async () => {
    const D = server.model.weights.config.dim;
    const vector = Float32Array.from({ length: D }, (_, i) => Math.sin(i * 0.11));
    const vectorId = conn.sendVector(vector);
    const plainRun = complete(server, 'req-3-plain', { prompt: 'Once upon a time', max_tokens: 60 });
    const running = complete(server, 'req-3', { prompt: 'Once upon a time', max_tokens: 60 });
    await waitFor('three tokens of req-3 on the tap', () => (seen.tokens.get('req-3')?.length ?? 0) >= 3);
    conn.sendPlanUpdate({ requestId: 'req-3', planId: 'upd-3', entries: [{ hook: HOOK, vectorId, scale: 2, fromPosition: 0, untilPosition: null }] });
    await Promise.all([running, plainRun]);
    await waitFor('the ends of req-3 and req-3-plain on the tap', () => seen.ends.has('req-3') && seen.ends.has('req-3-plain'));
    const steered = seen.rows.get('req-3')!.get(HOOK)!;
    const plain = seen.rows.get('req-3-plain')!.get(HOOK)!;
    const positions = [...steered.keys()].sort((a, b) => a - b);
    const firstChanged = positions.find((p) => maxAbsDiff(steered.get(p)!, plain.get(p)!) > 1e-4)!;
    expect(firstChanged).toBeGreaterThan(5);
    // At the first steered step the input is still the unsteered prefix: the delta is exactly the vector.
    const delta = steered.get(firstChanged)!.map((v, d) => v - plain.get(firstChanged)![d]);
    expect(maxAbsDiff(delta, vector.map((v) => 2 * v))).toBeLessThan(1e-4);
  });

  it('refuses a request whose announced plan never arrives with a 503 naming the plan', async () => {
    const res = await complete(server, 'req-4', { prompt: 'Hi', max_tokens: 2 }, { 'x-saegate-plan-id': 'never-sent' });
    expect(res.status).toBe(503);
    expect(res.body.error).toMatchObject({ code: 'SAEGATE_ERR_PLAN_TIMEOUT' });
    expect(res.body.error!.message).toContain('never-sent');
  });

  it('keeps serving while saegate is gone and reconnects when it is back', async () => {
    const next = tapServer.nextConnection();
    conn.terminate();
    const res = await complete(server, 'req-5', { prompt: 'Once', max_tokens: 4 });
    expect(res.status).toBe(200);
    conn = await next;
    expect(conn.hello.modelId).toBe(server.model.name);
    seen = collect(conn);
    conn.subscribe({ hooks: [HOOK], dtype: 'f32', includePrompt: false });
    await waitFor("the model server's tap subscribed without prompt rows", () => server.tap!.client.subscription?.includePrompt === false);
    await complete(server, 'req-6', { prompt: 'Once', max_tokens: 4 });
    await waitFor('the end of req-6 on the tap', () => seen.ends.has('req-6'));
    // Without prompt rows, only generated positions are streamed.
    const end = seen.ends.get('req-6')!;
    expect([...seen.rows.get('req-6')!.get(HOOK)!.keys()].sort((a, b) => a - b)).toEqual([end.promptTokens, end.promptTokens + 1, end.promptTokens + 2]);
    // ... and only generated tokens.
    expect(seen.tokens.get('req-6')!.map((t) => t.position)).toEqual([0, 1, 2, 3].map((i) => end.promptTokens + i));
  });
});
