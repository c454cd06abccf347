/**
 * A policy abort (`ProxyApp.abortRequest`, the RequestAborter seam in src/proxy/plan.ts), called
 * directly: the upstream request is cancelled and the client's response ends cleanly with
 * `finish_reason: "content_filter"`, streaming or not, read by the real `openai` client.
 *
 * Against a stub upstream the test decides exactly where in the stream the abort lands (between
 * events, in the middle of one, before any byte); against the reference model server it checks
 * that generation really stops there (the engine ends the request with finishReason 'abort').
 */
import type http from 'node:http';
import OpenAI from 'openai';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { GenerateResult } from '../../src/model/engine-types.js';
import { startModelServer, type ModelServer } from '../../src/model/server.js';
import { startProxy, type ProxyServer } from '../../src/proxy/server.js';
import { readBody, startStub, type StubRequest, type StubUpstream } from '../helpers/stub-upstream.js';
import { waitFor } from '../helpers/wait.js';

const ABORT = { policy: 'no-sadness@3', reason: 'feature 17 above 4 for 2 tokens' };

function event(id: string, text: string): string {
  return `data: ${JSON.stringify({ id, object: 'text_completion', created: 1234, model: 'stub', choices: [{ index: 0, text, logprobs: null, finish_reason: null }] })}\n\n`;
}

describe('policy abort against a stub upstream', () => {
  let stub: StubUpstream;
  let proxy: ProxyServer;
  let client: OpenAI;
  /** The stub's responses, held open until the test writes to them. */
  let held: { request: StubRequest; res: http.ServerResponse }[];

  beforeAll(async () => {
    stub = await startStub();
    proxy = await startProxy({ upstream: stub.url, port: 0 });
    client = new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  });
  afterEach(() => {
    held = [];
  });
  afterAll(async () => {
    await proxy?.close({ timeoutMs: 0 });
    await stub?.close();
  });

  function holdResponses(): void {
    held = [];
    stub.handle = (request, res) => held.push({ request, res });
  }

  async function policyAborts(): Promise<number> {
    const { values } = await proxy.metrics.streamAborts.get();
    return values.find((v) => v.labels.side === 'policy')?.value ?? 0;
  }

  it('ends a stream aborted mid-event after that event, with a content_filter chunk, and cancels the upstream', async () => {
    holdResponses();
    const before = await policyAborts();
    // The client's headers come with the first body byte, so the stream is awaited after the stub writes.
    const opening = client.completions.create({ model: 'stub', prompt: 'x', max_tokens: 100, stream: true }, { headers: { 'x-request-id': 'abort-between' } });
    await waitFor('the stub to get the request', () => held.length === 1);
    const { request, res } = held[0];
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    // One whole event and half of the next in one write: the abort lands mid-event.
    const second = event('cmpl-77', ' b');
    res.write(event('cmpl-77', 'a') + second.slice(0, 20));
    const stream = await opening;
    const seen: { text: string; finish: string | null; id: string }[] = [];
    for await (const chunk of stream) {
      seen.push({ text: chunk.choices[0].text, finish: chunk.choices[0].finish_reason, id: chunk.id });
      if (seen.length === 1) {
        expect(proxy.abortRequest('abort-between', ABORT)).toBe(true);
        expect(proxy.abortRequest('abort-between', ABORT)).toBe(false); // taken once
        // The rest of the half-forwarded event, then one the client must never see.
        res.write(second.slice(20) + event('cmpl-77', ' never'));
      }
    }
    expect(seen).toEqual([
      { text: 'a', finish: null, id: 'cmpl-77' },
      { text: ' b', finish: null, id: 'cmpl-77' },
      { text: '', finish: 'content_filter', id: 'cmpl-77' },
    ]);
    await request.aborted; // the upstream request was cancelled
    expect(await policyAborts()).toBe(before + 1);
    await waitFor('no request in flight on the proxy', () => proxy.inFlight.size === 0);
  });

  it('answers an aborted non-streaming chat request with a complete content_filter response', async () => {
    holdResponses();
    const pending = client.chat.completions.create({ model: 'stub-chat', messages: [{ role: 'user', content: 'hi' }], n: 2 }, { headers: { 'x-request-id': 'abort-json' } }).withResponse();
    await waitFor('the stub to get the request', () => held.length === 1);
    expect(proxy.abortRequest('abort-json', ABORT)).toBe(true);
    const { data, response } = await pending;
    expect(response.status).toBe(200);
    expect(response.headers.get('x-saegate-applied')).toBe('abort=no-sadness@3');
    expect(data.object).toBe('chat.completion');
    expect(data.model).toBe('stub-chat');
    expect(data.choices).toEqual([
      { index: 0, message: { role: 'assistant', content: '' }, logprobs: null, finish_reason: 'content_filter' },
      { index: 1, message: { role: 'assistant', content: '' }, logprobs: null, finish_reason: 'content_filter' },
    ]);
    await held[0].request.aborted;
  });

  it('ends a chat stream aborted before its first byte with exactly the ending bytes, the header naming the abort', async () => {
    holdResponses();
    const pending = fetch(`${proxy.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': 'abort-early' },
      body: JSON.stringify({ model: 'stub-chat', messages: [{ role: 'user', content: 'hi' }], stream: true }),
    });
    await waitFor('the stub to get the request', () => held.length === 1);
    expect(proxy.abortRequest('abort-early', { policy: 'bad name, with\nnewline' })).toBe(true);
    const response = await pending;
    expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    expect(response.headers.get('x-saegate-applied')).toBe('abort=bad_name__with_newline');
    const { text, error } = await readBody(response);
    expect(error).toBeNull();
    const [data, done, comment, rest] = text.split('\n\n');
    expect(JSON.parse(data.replace(/^data: /, ''))).toMatchObject({
      id: 'saegate-abort-early',
      object: 'chat.completion.chunk',
      model: 'stub-chat',
      choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: 'content_filter' }],
    });
    expect([done, comment, rest]).toEqual(['data: [DONE]', ': x-saegate-applied=abort=bad_name__with_newline', '']);
    await held[0].request.aborted;
  });

  it('takes no abort for an unknown request, a finished one, or an upstream error answer', async () => {
    expect(proxy.abortRequest('nobody', ABORT)).toBe(false);
    stub.handle = (_request, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"id":"cmpl-1","object":"text_completion","created":1,"model":"stub","choices":[]}');
    };
    await client.completions.create({ model: 'stub', prompt: 'x' }, { headers: { 'x-request-id': 'finished-1' } });
    expect(proxy.abortRequest('finished-1', ABORT)).toBe(false);

    holdResponses();
    const pending = fetch(`${proxy.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': 'erroring-1' },
      body: JSON.stringify({ model: 'stub', prompt: 'x', stream: true }),
    });
    await waitFor('the stub to get the request', () => held.length === 1);
    held[0].res.writeHead(400, { 'content-type': 'application/json' });
    held[0].res.write('{"error":');
    const response = await pending; // the head goes out with the first body byte
    expect(proxy.abortRequest('erroring-1', ABORT)).toBe(false);
    held[0].res.end('{"message":"bad"}}');
    expect(response.status).toBe(400);
    expect((await readBody(response)).text).toBe('{"error":{"message":"bad"}}');
  });
});

describe('policy abort against the reference model server', () => {
  const MODEL_ARG = 'synthetic:dim=64,layers=2,heads=4,kv=2,hidden=128,vocab=300,ctx=1024,seed=3';
  let model: ModelServer;
  let proxy: ProxyServer;
  let client: OpenAI;
  const ends = new Map<string, GenerateResult>();

  beforeAll(async () => {
    model = await startModelServer({ model: MODEL_ARG, port: 0 });
    proxy = await startProxy({ upstream: model.url, port: 0 });
    client = new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    model.engine.onEnd((requestId, result) => ends.set(requestId, result));
  });
  afterAll(async () => {
    await proxy?.close({ timeoutMs: 0 });
    await model?.close();
  });

  it('stops generation on the model server and ends the chat stream with content_filter', async () => {
    const maxTokens = 900;
    const stream = await client.chat.completions.create(
      { model: model.model.name, messages: [{ role: 'user', content: 'Tell me a story' }], max_tokens: maxTokens, temperature: 0, stream: true },
      { headers: { 'x-request-id': 'policy-abort-1' } },
    );
    const finishes: (string | null)[] = [];
    const ids = new Set<string>();
    for await (const chunk of stream) {
      ids.add(chunk.id);
      finishes.push(chunk.choices[0]?.finish_reason ?? null);
      if (finishes.length === 3) expect(proxy.abortRequest('policy-abort-1', ABORT)).toBe(true);
    }
    expect(finishes.slice(0, -1).every((f) => f === null)).toBe(true);
    expect(finishes.at(-1)).toBe('content_filter');
    expect(ids.size).toBe(1); // the closing chunk carries the upstream's completion id
    await waitFor('the end of policy-abort-1 in the engine', () => ends.has('policy-abort-1'));
    const end = ends.get('policy-abort-1')!;
    expect(end.finishReason).toBe('abort');
    expect(end.completionTokens).toBeLessThan(maxTokens);
    expect(model.engine.isActive('policy-abort-1')).toBe(false);
  });
});
