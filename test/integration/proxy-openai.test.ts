/**
 * The `openai` client through saegate to the reference model server (a tiny synthetic model):
 * the same results as talking to the server directly, streaming and not, the same SSE bytes
 * apart from saegate's one trailing comment, and aborts that reach the engine.
 */
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GenerateResult } from '../../src/model/engine-types.js';
import { startModelServer, type ModelServer } from '../../src/model/server.js';
import { startProxy, type ProxyServer } from '../../src/proxy/server.js';
import { readBody } from '../helpers/stub-upstream.js';
import { waitFor } from '../helpers/wait.js';

const MODEL_ARG = 'synthetic:dim=64,layers=2,heads=4,kv=2,hidden=128,vocab=300,ctx=1024,seed=3';
const APPLIED_COMMENT = ': x-saegate-applied=none\n\n';

let model: ModelServer;
let proxy: ProxyServer;
let direct: OpenAI;
let viaSaegate: OpenAI;
let ends: Map<string, GenerateResult>;

beforeAll(async () => {
  model = await startModelServer({ model: MODEL_ARG, port: 0 });
  proxy = await startProxy({ upstream: model.url, port: 0 });
  direct = new OpenAI({ baseURL: `${model.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  viaSaegate = new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  ends = new Map();
  model.engine.onEnd((requestId, result) => ends.set(requestId, result));
});
afterAll(async () => {
  await proxy?.close({ timeoutMs: 0 });
  await model?.close();
});

/** Response ids are random and `created` is a clock: the only fields allowed to differ between two runs. */
function normalise(text: string): string {
  return text.replace(/"id":"(chatcmpl|cmpl)-[0-9a-f]+"/g, '"id":"$1-X"').replace(/"created":\d+/g, '"created":0');
}

describe('openai client through saegate', () => {
  const client = (via: 'direct' | 'saegate'): OpenAI => (via === 'direct' ? direct : viaSaegate);

  it('lists the same models', async () => {
    const [a, b] = await Promise.all([direct.models.list(), viaSaegate.models.list()]);
    expect(b.data.map((m) => m.id)).toEqual(a.data.map((m) => m.id));
    expect(b.data.map((m) => m.id)).toEqual([model.model.name]);
  });

  it('gets the same completion as directly', async () => {
    const run = (via: 'direct' | 'saegate') => client(via).completions.create({ model: model.model.name, prompt: 'Once upon a time', max_tokens: 12, temperature: 0 });
    const [a, b] = [await run('direct'), await run('saegate')];
    expect(b.choices).toEqual(a.choices);
    expect(b.usage).toEqual(a.usage);
    expect(b.choices[0].finish_reason).toBe('length');
  });

  it('gets the same chat completion as directly', async () => {
    const run = (via: 'direct' | 'saegate') =>
      client(via).chat.completions.create({ model: model.model.name, messages: [{ role: 'user', content: 'Tell me a story' }], max_tokens: 10, temperature: 0 });
    const [a, b] = [await run('direct'), await run('saegate')];
    expect(b.choices).toEqual(a.choices);
    expect(b.usage).toEqual(a.usage);
  });

  it('streams the same completion chunks as directly', async () => {
    const run = async (via: 'direct' | 'saegate') => {
      const stream = await client(via).completions.create({ model: model.model.name, prompt: 'Once upon a time', max_tokens: 12, temperature: 0, stream: true });
      const chunks: { text: string; finish: string | null }[] = [];
      for await (const chunk of stream) chunks.push({ text: chunk.choices[0].text, finish: chunk.choices[0].finish_reason });
      return chunks;
    };
    const [a, b] = [await run('direct'), await run('saegate')];
    expect(b).toEqual(a);
    expect(b.length).toBeGreaterThan(10);
    expect(b.at(-1)!.finish).toBe('length');
  });

  it('streams the same chat chunks as directly', async () => {
    const run = async (via: 'direct' | 'saegate') => {
      const stream = await client(via).chat.completions.create({ model: model.model.name, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 8, temperature: 0, stream: true });
      const chunks: { content: string | null | undefined; role: string | undefined; finish: string | null }[] = [];
      for await (const chunk of stream) chunks.push({ content: chunk.choices[0]?.delta.content, role: chunk.choices[0]?.delta.role, finish: chunk.choices[0]?.finish_reason ?? null });
      return chunks;
    };
    const [a, b] = [await run('direct'), await run('saegate')];
    expect(b).toEqual(a);
    expect(b[0].role).toBe('assistant');
  });

  it.each([
    ['/v1/completions', { prompt: 'Once upon a time', max_tokens: 8 }],
    ['/v1/chat/completions', { messages: [{ role: 'user', content: 'Hi' }], max_tokens: 8, stream_options: { include_usage: true } }],
  ])('sends the same SSE bytes as %s directly, plus only the trailing applied comment', async (path, fields) => {
    const body = JSON.stringify({ model: model.model.name, temperature: 0, stream: true, ...fields });
    const fetchText = async (base: string) => {
      const res = await fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      expect(res.status).toBe(200);
      return (await readBody(res)).text;
    };
    const a = await fetchText(model.url);
    const b = await fetchText(proxy.url);
    expect(a.endsWith('data: [DONE]\n\n')).toBe(true);
    expect(normalise(b)).toBe(normalise(a) + APPLIED_COMMENT);
  });

  it('returns the same non-streaming bytes as directly, with the request id both ways', async () => {
    const body = JSON.stringify({ model: model.model.name, prompt: 'Hello', max_tokens: 5, temperature: 0 });
    const headers = { 'content-type': 'application/json', 'x-request-id': 'same-bytes-1' };
    const a = await fetch(`${model.url}/v1/completions`, { method: 'POST', headers: { ...headers, 'x-request-id': 'same-bytes-0' }, body });
    const b = await fetch(`${proxy.url}/v1/completions`, { method: 'POST', headers, body });
    expect(normalise(await b.text())).toBe(normalise(await a.text()));
    expect(b.headers.get('x-request-id')).toBe('same-bytes-1');
    expect(b.headers.get('x-saegate-applied')).toBe('none');
    await waitFor('the end of same-bytes-1 on the tap', () => ends.has('same-bytes-1'));
    expect(ends.get('same-bytes-1')).toMatchObject({ finishReason: 'length', completionTokens: 5 });
  });

  it('cancels generation on the model server when the client aborts a stream', async () => {
    const maxTokens = 900;
    const stream = await viaSaegate.completions.create(
      { model: model.model.name, prompt: 'Once upon a time', max_tokens: maxTokens, temperature: 0, stream: true },
      { headers: { 'x-request-id': 'abort-me' } },
    );
    let received = 0;
    for await (const chunk of stream) {
      expect(chunk.choices[0].finish_reason).toBeNull();
      if (++received === 3) stream.controller.abort();
    }
    await waitFor('the end of abort-me on the tap', () => ends.has('abort-me'));
    const end = ends.get('abort-me')!;
    expect(end.finishReason).toBe('abort');
    expect(end.completionTokens).toBeLessThan(maxTokens);
    expect(model.engine.isActive('abort-me')).toBe(false);
    await waitFor('no request in flight on the proxy', () => proxy.inFlight.size === 0);
  });

  it('gives the client an error, not a clean end, when the model server dies mid-stream', async () => {
    const stream = await viaSaegate.completions.create(
      { model: model.model.name, prompt: 'Once upon a time', max_tokens: 900, temperature: 0, stream: true },
      { headers: { 'x-request-id': 'killed-1' } },
    );
    let received = 0;
    const consume = async (): Promise<unknown> => {
      try {
        for await (const _chunk of stream) {
          // Kill every connection the model server holds (ours included) once tokens flow.
          if (++received === 2) model.app.server.closeAllConnections();
        }
        return null;
      } catch (error) {
        return error;
      }
    };
    const error = await consume();
    expect(error).toBeInstanceOf(OpenAI.APIError);
    expect((error as InstanceType<typeof OpenAI.APIError>).message).toContain('upstream failed after the response started');
    expect(received).toBeGreaterThanOrEqual(2);
    await waitFor('the end of killed-1 on the tap', () => ends.has('killed-1'));
    expect(ends.get('killed-1')!.finishReason).toBe('abort');
  });
});
