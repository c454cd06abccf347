/**
 * The model server's HTTP layer through fastify's inject(): request resolution, response shapes,
 * streaming, stop sequences, errors. The engine is the scripted FakeEngine.
 */
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { SaegateError } from '../../../src/common/errors.js';
import { buildModelApp, type ModelAppOptions } from '../../../src/model/http/app.js';
import { BOS_ID, ByteTokenizer, FakeEngine, byteTokens, type FakeEngineOptions } from '../../helpers/fake-engine.js';

const MODEL = 'fake-model';

interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string };
}

/** One SSE frame: its event name (default 'message') and its data line. */
interface SseFrame {
  event: string;
  data: string;
}

function parseSse(body: string): SseFrame[] {
  expect(body.endsWith('\n\n')).toBe(true);
  return body
    .slice(0, -2)
    .split('\n\n')
    .map((block) => {
      const frame: SseFrame = { event: 'message', data: '' };
      for (const line of block.split('\n')) {
        if (line.startsWith('event: ')) frame.event = line.slice(7);
        else if (line.startsWith('data: ')) frame.data = line.slice(6);
        else throw new Error(`unexpected SSE line ${JSON.stringify(line)}`);
      }
      return frame;
    });
}

/** The JSON chunks of a stream that ended with [DONE] (asserted). */
function chunks<T>(response: LightMyRequestResponse): T[] {
  const frames = parseSse(response.body);
  expect(frames.at(-1)).toEqual({ event: 'message', data: '[DONE]' });
  return frames.slice(0, -1).map((f) => JSON.parse(f.data) as T);
}

interface CompletionChunk {
  id: string;
  object: string;
  model: string;
  choices: Array<{ index: number; text: string; finish_reason: string | null; logprobs: null }>;
  usage?: { prompt_tokens: number; completion_tokens: number; total_tokens: number } | null;
}

interface ChatChunk {
  id: string;
  object: string;
  choices: Array<{ index: number; delta: { role?: string; content?: string }; finish_reason: string | null }>;
  usage?: { prompt_tokens: number; completion_tokens: number; total_tokens: number } | null;
}

let app: FastifyInstance | null = null;

function setup(engineOptions: FakeEngineOptions = {}, appOptions: Partial<ModelAppOptions> = {}): { app: FastifyInstance; engine: FakeEngine; tokenizer: ByteTokenizer } {
  const engine = new FakeEngine(engineOptions);
  const tokenizer = appOptions.tokenizer instanceof ByteTokenizer ? appOptions.tokenizer : new ByteTokenizer();
  app = buildModelApp({ engine, tokenizer, modelName: MODEL, ...appOptions });
  return { app, engine, tokenizer };
}

afterEach(async () => {
  await app?.close();
  app = null;
});

/** Starts the request at once (inject() alone is lazy until awaited), so concurrent requests overlap. */
async function post(target: FastifyInstance, url: string, body: unknown, headers: Record<string, string> = {}): Promise<LightMyRequestResponse> {
  return await target.inject({ method: 'POST', url, payload: JSON.stringify(body), headers: { 'content-type': 'application/json', ...headers } });
}

describe('model listing and health', () => {
  // Listing and retrieving the model: test/integration/model-contract.test.ts, on both engines.
  it('answers /healthz with the model and the in-flight count', async () => {
    const { app } = setup({}, { maxConcurrentRequests: 7, planWaitTimeoutMs: 1500 });
    const response = await app.inject({ method: 'GET', url: '/healthz' });
    expect(response.json()).toEqual({ status: 'ok', model: MODEL, in_flight: 0, max_concurrent_requests: 7, plan_wait_timeout_ms: 1500 });
  });
});

describe('POST /v1/completions', () => {
  it('prepends BOS to a text prompt, defaults max_tokens to the rest of the context and answers in OpenAI shape', async () => {
    const { app, engine } = setup();
    const response = await post(app, '/v1/completions', { model: MODEL, prompt: 'Hi there' });
    expect(response.statusCode).toBe(200);
    expect(response.headers['content-type']).toMatch(/^application\/json/);
    const body = response.json() as CompletionChunk & { created: number };
    expect(body.id).toMatch(/^cmpl-[0-9a-f]{32}$/);
    expect(body.object).toBe('text_completion');
    expect(body.model).toBe(MODEL);
    expect(Math.abs(body.created - Date.now() / 1000)).toBeLessThan(5);
    expect(body.choices).toEqual([{ index: 0, text: 'Hello, world!', logprobs: null, finish_reason: 'stop' }]);
    // 1 BOS + 8 bytes; 13 bytes + the EOS the engine sampled.
    expect(body.usage).toEqual({ prompt_tokens: 9, completion_tokens: 14, total_tokens: 23 });
    const request = engine.requests[0];
    expect(request.promptTokens).toEqual([BOS_ID, ...byteTokens('Hi there')]);
    expect(request.maxTokens).toBe(128 - 9);
    expect(request.sampling).toEqual({ temperature: 1, topP: 1, seed: null });
    expect(request.stopTokenIds).toEqual([2]);
    expect(request.steering).toEqual([]);
    expect(request.planId).toBeNull();
  });

  it('accepts an array of one string and a token id array, the latter without an added BOS', async () => {
    const { app, engine } = setup();
    expect((await post(app, '/v1/completions', { model: MODEL, prompt: ['Hi'] })).statusCode).toBe(200);
    expect((await post(app, '/v1/completions', { model: MODEL, prompt: [10, 20, 30] })).statusCode).toBe(200);
    expect((await post(app, '/v1/completions', { model: MODEL, prompt: [[40, 50]] })).statusCode).toBe(200);
    expect(engine.requests.map((r) => r.promptTokens)).toEqual([[BOS_ID, ...byteTokens('Hi')], [10, 20, 30], [40, 50]]);
  });

  it('passes sampling parameters through and reports finish_reason length at max_tokens', async () => {
    const { app, engine } = setup();
    const response = await post(app, '/v1/completions', { model: MODEL, prompt: 'x', max_tokens: 5, temperature: 0.3, top_p: 0.5, seed: 42 });
    const body = response.json() as CompletionChunk;
    expect(body.choices[0]).toMatchObject({ text: 'Hello', finish_reason: 'length' });
    expect(body.usage).toEqual({ prompt_tokens: 2, completion_tokens: 5, total_tokens: 7 });
    expect(engine.requests[0].sampling).toEqual({ temperature: 0.3, topP: 0.5, seed: 42 });
    expect(engine.requests[0].maxTokens).toBe(5);
  });

  it('ignores fields it does not implement, as OpenAI servers do', async () => {
    const { app } = setup();
    const response = await post(app, '/v1/completions', { model: MODEL, prompt: 'x', presence_penalty: 0.5, logit_bias: { 50: 1 }, user: 'u1', n: 1 });
    expect(response.statusCode).toBe(200);
  });

  it('cuts the text before a stop string and counts tokens up to the one that completed it', async () => {
    const { app, engine } = setup({ respond: () => ({ tokens: byteTokens('Hello END and more text') }) });
    const response = await post(app, '/v1/completions', { model: MODEL, prompt: 'x', stop: 'END' });
    const body = response.json() as CompletionChunk;
    expect(body.choices[0]).toMatchObject({ text: 'Hello ', finish_reason: 'stop' });
    expect(body.usage?.completion_tokens).toBe(9);
    // The stop string aborted the engine request instead of letting it run on.
    expect(engine.aborted).toEqual([engine.requests[0].requestId]);
    expect(engine.emitted.get(engine.requests[0].requestId)!.length).toBeLessThan(byteTokens('Hello END and more text').length);
  });

  it('uses the x-request-id header as the engine request id and echoes it; replaces an invalid one', async () => {
    const { app, engine } = setup();
    const given = await post(app, '/v1/completions', { model: MODEL, prompt: 'x' }, { 'x-request-id': 'req-1.a:b_C' });
    expect(given.headers['x-request-id']).toBe('req-1.a:b_C');
    expect(engine.requests[0].requestId).toBe('req-1.a:b_C');
    const invalid = await post(app, '/v1/completions', { model: MODEL, prompt: 'x' }, { 'x-request-id': 'has space' });
    expect(invalid.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    expect(engine.requests[1].requestId).toBe(invalid.headers['x-request-id']);
  });

  it('passes x-saegate-plan-id to the engine and refuses a malformed one', async () => {
    const { app, engine } = setup();
    expect((await post(app, '/v1/completions', { model: MODEL, prompt: 'x' }, { 'x-saegate-plan-id': 'plan-7' })).statusCode).toBe(200);
    expect(engine.requests[0].planId).toBe('plan-7');
    const bad = await post(app, '/v1/completions', { model: MODEL, prompt: 'x' }, { 'x-saegate-plan-id': 'p/1' });
    expect(bad.statusCode).toBe(400);
    expect((bad.json() as ErrorBody).error).toMatchObject({ code: 'SAEGATE_ERR_BAD_REQUEST', param: 'x-saegate-plan-id' });
    expect(engine.requests).toHaveLength(1);
  });

  it('passes x-saegate-tap-max-delay-ms to the engine request (null without it) and refuses one that is not 0–60000 ms', async () => {
    const { app, engine } = setup();
    expect((await post(app, '/v1/completions', { model: MODEL, prompt: 'x' }, { 'x-saegate-tap-max-delay-ms': '50' })).statusCode).toBe(200);
    expect((await post(app, '/v1/completions', { model: MODEL, prompt: 'x' })).statusCode).toBe(200);
    expect(engine.requests.map((r) => r.tapMaxDelayMs)).toEqual([50, null]);
    for (const value of ['-1', '1.5', '60001', 'soon', '']) {
      const bad = await post(app, '/v1/completions', { model: MODEL, prompt: 'x' }, { 'x-saegate-tap-max-delay-ms': value });
      expect(bad.statusCode, value).toBe(400);
      expect((bad.json() as ErrorBody).error, value).toMatchObject({ code: 'SAEGATE_ERR_BAD_REQUEST', param: 'x-saegate-tap-max-delay-ms' });
      expect((bad.json() as ErrorBody).error.message, value).toContain('from 0 to 60000');
    }
    expect(engine.requests).toHaveLength(2);
  });

  it('reads a body sent without a JSON content type (curl -d)', async () => {
    const { app } = setup();
    const response = await app.inject({
      method: 'POST',
      url: '/v1/completions',
      payload: JSON.stringify({ model: MODEL, prompt: 'x' }),
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });
    expect(response.statusCode).toBe(200);
    expect((response.json() as CompletionChunk).choices[0].text).toBe('Hello, world!');
  });
});

describe('POST /v1/chat/completions', () => {
  it('renders the default template as role lines ending with "assistant:" and answers as an assistant message', async () => {
    const { app, engine, tokenizer } = setup();
    const response = await post(app, '/v1/chat/completions', {
      model: MODEL,
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: [{ type: 'text', text: 'Hi' }, { type: 'text', text: 'there' }] },
      ],
    });
    expect(response.statusCode).toBe(200);
    const body = response.json() as { id: string; object: string; choices: unknown[]; usage: { prompt_tokens: number } };
    expect(body.id).toMatch(/^chatcmpl-[0-9a-f]{32}$/);
    expect(body.object).toBe('chat.completion');
    expect(body.choices).toEqual([{ index: 0, message: { role: 'assistant', content: 'Hello, world!' }, logprobs: null, finish_reason: 'stop' }]);
    const prompt = engine.requests[0].promptTokens;
    expect(prompt[0]).toBe(BOS_ID);
    expect(tokenizer.decode(prompt)).toBe('system: Be brief.\nuser: Hi\nthere\nassistant:');
    expect(body.usage.prompt_tokens).toBe(prompt.length);
  });

  it("renders the tokenizer's Jinja template with bos_token, eos_token and add_generation_prompt, keeping one BOS", async () => {
    const template =
      "{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}";
    const tokenizer = new ByteTokenizer({ chatTemplate: template, specialTokenText: true });
    const { app, engine } = setup({}, { tokenizer });
    await post(app, '/v1/chat/completions', { model: MODEL, messages: [{ role: 'user', content: 'hey' }] });
    const prompt = engine.requests[0].promptTokens;
    expect(prompt.filter((t) => t === BOS_ID)).toHaveLength(1);
    expect(prompt[0]).toBe(BOS_ID);
    expect(tokenizer.decode(prompt.slice(1))).toBe('[user]hey</s>[assistant]');
  });

  it('refuses messages the template rejects with a 400 about messages', async () => {
    const tokenizer = new ByteTokenizer({ chatTemplate: "{% if messages[0].role != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}x" });
    const { app } = setup({}, { tokenizer });
    const response = await post(app, '/v1/chat/completions', { model: MODEL, messages: [{ role: 'assistant', content: 'hi' }] });
    expect(response.statusCode).toBe(400);
    const { error } = response.json() as ErrorBody;
    expect(error.param).toBe('messages');
    expect(error.message).toContain('first message must be from the user');
  });

});

describe('streaming', () => {
  it('streams completion chunks that join to the non-streamed text, then a finish chunk, then [DONE]', async () => {
    const { app } = setup();
    const response = await post(app, '/v1/completions', { model: MODEL, prompt: 'x', stream: true }, { 'x-request-id': 'stream-1' });
    expect(response.statusCode).toBe(200);
    expect(response.headers['content-type']).toBe('text/event-stream');
    expect(response.headers['x-request-id']).toBe('stream-1');
    const list = chunks<CompletionChunk>(response);
    expect(list.every((c) => c.object === 'text_completion' && c.id === list[0].id && c.model === MODEL)).toBe(true);
    expect(list.map((c) => c.choices[0].text).join('')).toBe('Hello, world!');
    expect(list.at(-1)!.choices[0]).toEqual({ index: 0, text: '', logprobs: null, finish_reason: 'stop' });
    expect(list.slice(0, -1).every((c) => c.choices[0].finish_reason === null)).toBe(true);
    expect(list.some((c) => 'usage' in c)).toBe(false);
  });

  it('opens a chat stream with the assistant role and ends with a usage chunk when include_usage is set', async () => {
    const { app } = setup();
    const response = await post(app, '/v1/chat/completions', {
      model: MODEL,
      messages: [{ role: 'user', content: 'x' }],
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: 4,
    });
    const list = chunks<ChatChunk>(response);
    expect(list[0].object).toBe('chat.completion.chunk');
    expect(list[0].choices[0].delta).toEqual({ role: 'assistant', content: '' });
    const content = list.slice(1, -2).map((c) => c.choices[0].delta.content).join('');
    expect(content).toBe('Hell');
    expect(list.at(-2)!.choices[0]).toMatchObject({ delta: {}, finish_reason: 'length' });
    expect(list.at(-1)!.choices).toEqual([]);
    // "user: x\nassistant:" is 18 bytes, plus BOS.
    expect(list.at(-1)!.usage).toEqual({ prompt_tokens: 19, completion_tokens: 4, total_tokens: 23 });
    expect(list.slice(0, -1).every((c) => c.usage === null)).toBe(true);
  });

  it('never streams any part of a stop string split across tokens, and finishes with stop', async () => {
    const { app, engine } = setup({ respond: () => ({ tokens: byteTokens('a STOP-ish STOP! hidden') }) });
    const response = await post(app, '/v1/completions', { model: MODEL, prompt: 'x', stream: true, stop: ['STOP!', 'zzz'] });
    const list = chunks<CompletionChunk>(response);
    const texts = list.slice(0, -1).map((c) => c.choices[0].text);
    expect(texts.join('')).toBe('a STOP-ish ');
    // "STOP" was held back until "-" showed it was not "STOP!", then released in one piece.
    expect(texts).toContain('STOP-');
    expect(texts.join('')).not.toContain('hidden');
    expect(list.at(-1)!.choices[0].finish_reason).toBe('stop');
    expect(engine.aborted).toHaveLength(1);
  });

  it('streams a zero-token answer as a finish chunk and [DONE]', async () => {
    const { app } = setup({ respond: () => ({ tokens: [] }) });
    const list = chunks<ChatChunk>(await post(app, '/v1/chat/completions', { model: MODEL, messages: [{ role: 'user', content: 'x' }], stream: true }));
    expect(list.map((c) => c.choices[0])).toEqual([
      { index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null },
      { index: 0, delta: {}, logprobs: null, finish_reason: 'stop' },
    ]);
  });

  it('ends the stream with an error event and no [DONE] when the engine fails mid-stream', async () => {
    const failure = new SaegateError('SAEGATE_ERR_WORKER_EXITED', ['exit code 1']);
    const { app } = setup({ respond: () => ({ tokens: byteTokens('Hello, world!'), fail: { afterTokens: 3, error: failure } }) });
    const response = await post(app, '/v1/completions', { model: MODEL, prompt: 'x', stream: true });
    expect(response.statusCode).toBe(200);
    const frames = parseSse(response.body);
    expect(frames.some((f) => f.data === '[DONE]')).toBe(false);
    const last = frames.at(-1)!;
    expect(last.event).toBe('error');
    expect(JSON.parse(last.data)).toEqual(failure.toJSON());
    expect(
      frames
        .slice(0, -1)
        .map((f) => (JSON.parse(f.data) as CompletionChunk).choices[0].text)
        .join(''),
    ).toBe('Hel');
  });

  it('reports an engine failure before the first token as a plain JSON error with its status', async () => {
    const { app } = setup({ rejectWith: new SaegateError('SAEGATE_ERR_PLAN_TIMEOUT', ['plan-1', 'r1', 2000]) });
    const response = await post(app, '/v1/completions', { model: MODEL, prompt: 'x', stream: true });
    expect(response.statusCode).toBe(503);
    expect(response.headers['content-type']).toMatch(/^application\/json/);
    expect((response.json() as ErrorBody).error.code).toBe('SAEGATE_ERR_PLAN_TIMEOUT');
  });
});

describe('errors', () => {
  it('answers an empty JSON body and a non-object body with 400s', async () => {
    const { app } = setup();
    const empty = await app.inject({ method: 'POST', url: '/v1/completions', payload: '', headers: { 'content-type': 'application/json' } });
    expect(empty.statusCode).toBe(400);
    expect((empty.json() as ErrorBody).error.code).toBe('SAEGATE_ERR_INVALID_JSON');
    const array = await post(app, '/v1/completions', [1, 2]);
    expect(array.statusCode).toBe(400);
    expect((array.json() as ErrorBody).error.code).toBe('SAEGATE_ERR_BAD_REQUEST');
  });

  it.each([
    ['a string temperature', { temperature: 'hot' }, 'temperature'],
    ['a temperature above 2', { temperature: 2.5 }, 'temperature'],
    ['top_p of 0', { top_p: 0 }, 'top_p'],
    ['a fractional seed', { seed: 1.5 }, 'seed'],
    ['max_tokens of 0', { max_tokens: 0 }, 'max_tokens'],
    ['five stop strings', { stop: ['a', 'b', 'c', 'd', 'e'] }, 'stop'],
    ['a numeric stop', { stop: 5 }, 'stop'],
    ['n = 2', { n: 2 }, 'n'],
    ['a string stream flag', { stream: 'yes' }, 'stream'],
    ['two prompts', { prompt: ['a', 'b'] }, 'prompt'],
    ['a missing model', { model: undefined }, 'model'],
  ])('refuses %s with a 400 naming the parameter', async (_name, patch, param) => {
    const { app, engine } = setup();
    const response = await post(app, '/v1/completions', { model: MODEL, prompt: 'x', ...patch });
    expect(response.statusCode).toBe(400);
    const { error } = response.json() as ErrorBody;
    expect(error).toMatchObject({ type: 'invalid_request_error', code: 'SAEGATE_ERR_BAD_REQUEST', param });
    expect(error.message.startsWith(`${param}: `)).toBe(true);
    expect(engine.requests).toHaveLength(0);
  });

  it('refuses n = 2 saying only n = 1 is supported', async () => {
    const { app } = setup();
    const { error } = (await post(app, '/v1/completions', { model: MODEL, prompt: 'x', n: 2 })).json() as ErrorBody;
    expect(error.message).toBe('n: only n = 1 is supported');
  });

  it('refuses a chat message with an image part, naming the message content', async () => {
    const { app } = setup();
    const response = await post(app, '/v1/chat/completions', {
      model: MODEL,
      messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }],
    });
    expect(response.statusCode).toBe(400);
    expect((response.json() as ErrorBody).error.param).toBe('messages[0].content');
  });

  it('refuses prompt plus max_tokens over the context with the limit and the requested total in the message', async () => {
    const { app, engine } = setup();
    const response = await post(app, '/v1/completions', { model: MODEL, prompt: 'Hi there', max_tokens: 120 });
    expect(response.statusCode).toBe(400);
    const { error } = response.json() as ErrorBody;
    expect(error).toMatchObject({ code: 'SAEGATE_ERR_CONTEXT_LENGTH', param: 'max_tokens' });
    expect(error.message).toContain('128');
    expect(error.message).toContain(String(9 + 120));
    expect(engine.requests).toHaveLength(0);
  });

  it('refuses a prompt that fills the whole context when max_tokens is left to its default', async () => {
    const { app } = setup();
    const response = await post(app, '/v1/completions', { model: MODEL, prompt: 'y'.repeat(127) });
    expect(response.statusCode).toBe(400);
    const { error } = response.json() as ErrorBody;
    expect(error).toMatchObject({ code: 'SAEGATE_ERR_CONTEXT_LENGTH', param: 'prompt' });
    expect(error.message).toContain('128 tokens, but the request asks for 129');
  });

  it('refuses prompt token ids outside the vocabulary', async () => {
    const { app } = setup();
    const response = await post(app, '/v1/completions', { model: MODEL, prompt: [5, 259] });
    expect(response.statusCode).toBe(400);
    expect((response.json() as ErrorBody).error).toMatchObject({ param: 'prompt' });
    expect((response.json() as ErrorBody).error.message).toContain('259');
  });

  it('answers a body over the limit with an OpenAI-shaped 413', async () => {
    const { app } = setup({}, { bodyLimit: 64 });
    const response = await post(app, '/v1/completions', { model: MODEL, prompt: 'x'.repeat(100) });
    expect(response.statusCode).toBe(413);
    expect((response.json() as ErrorBody).error).toMatchObject({ code: 'SAEGATE_ERR_BODY_TOO_LARGE', type: 'invalid_request_error' });
    expect((response.json() as ErrorBody).error.message).toContain('64');
  });

  it('passes an engine SaegateError through with its status and turns any other error into 500 SAEGATE_ERR_RUNTIME', async () => {
    const { app, engine } = setup({ rejectWith: new SaegateError('SAEGATE_ERR_SHUTTING_DOWN') });
    const shutting = await post(app, '/v1/completions', { model: MODEL, prompt: 'x' });
    expect(shutting.statusCode).toBe(503);
    expect((shutting.json() as ErrorBody).error.code).toBe('SAEGATE_ERR_SHUTTING_DOWN');
    engine.rejectWith = new TypeError('cannot read properties of undefined');
    const bug = await post(app, '/v1/completions', { model: MODEL, prompt: 'x' });
    expect(bug.statusCode).toBe(500);
    expect(bug.json()).toEqual({
      error: { message: 'model runtime failed: cannot read properties of undefined', type: 'server_error', param: null, code: 'SAEGATE_ERR_RUNTIME' },
    });
  });

  it('answers 429 with Retry-After: 1 above maxConcurrentRequests and serves again once a slot frees', async () => {
    const { app, engine } = setup({ respond: () => ({ tokens: byteTokens('ok'), pauseAfter: 0 }) }, { maxConcurrentRequests: 2 });
    const first = post(app, '/v1/completions', { model: MODEL, prompt: 'x' });
    const second = post(app, '/v1/completions', { model: MODEL, prompt: 'x' });
    await engine.whenRunning(2);
    const third = await post(app, '/v1/completions', { model: MODEL, prompt: 'x' });
    expect(third.statusCode).toBe(429);
    expect(third.headers['retry-after']).toBe('1');
    expect((third.json() as ErrorBody).error).toMatchObject({ type: 'rate_limit_error', code: 'SAEGATE_ERR_TOO_MANY_REQUESTS' });
    expect(engine.requests).toHaveLength(2);
    engine.respond = () => ({ tokens: byteTokens('ok') });
    engine.resume();
    expect((await first).statusCode).toBe(200);
    expect((await second).statusCode).toBe(200);
    expect((await post(app, '/v1/completions', { model: MODEL, prompt: 'x', max_tokens: 1 })).statusCode).toBe(200);
  });
});

describe('steering field', () => {
  const vector = (n: number, start = 0): number[] => Array.from({ length: n }, (_, i) => start + i / 4);

  it('converts hook, layer and each positions form to engine SteeringEntry values', async () => {
    const { app, engine } = setup();
    const response = await post(app, '/v1/completions', {
      model: MODEL,
      prompt: 'abc',
      steering: [
        { hook: 'blocks.0.hook_resid_pre', vector: vector(8), scale: 2.5 },
        { layer: 1, vector: vector(8, 1), positions: 'prompt' },
        { hook: 'blocks.1.hook_resid_pre', vector: vector(8, 2), scale: -1, positions: 'generated' },
        { layer: 0, vector: vector(8, 3), positions: { from: 2, until: 6 } },
        { layer: 0, vector: vector(8, 4), positions: { from: 3 } },
      ],
    });
    expect(response.statusCode).toBe(200);
    const entries = engine.requests[0].steering;
    // "abc" with BOS is 4 prompt tokens.
    expect(entries.map(({ hook, scale, fromPosition, untilPosition }) => ({ hook, scale, fromPosition, untilPosition }))).toEqual([
      { hook: 'blocks.0.hook_resid_pre', scale: 2.5, fromPosition: 0, untilPosition: null },
      { hook: 'blocks.1.hook_resid_post', scale: 1, fromPosition: 0, untilPosition: 4 },
      { hook: 'blocks.1.hook_resid_pre', scale: -1, fromPosition: 4, untilPosition: null },
      { hook: 'blocks.0.hook_resid_post', scale: 1, fromPosition: 2, untilPosition: 6 },
      { hook: 'blocks.0.hook_resid_post', scale: 1, fromPosition: 3, untilPosition: null },
    ]);
    expect(entries[1].vector).toBeInstanceOf(Float32Array);
    expect(Array.from(entries[1].vector)).toEqual(vector(8, 1));
  });

  it('refuses an unknown hook naming it and the form of valid hooks', async () => {
    const { app, engine } = setup();
    const response = await post(app, '/v1/completions', { model: MODEL, prompt: 'x', steering: [{ hook: 'blocks.5.hook_mlp_out', vector: vector(8) }] });
    expect(response.statusCode).toBe(400);
    const { error } = response.json() as ErrorBody;
    expect(error).toMatchObject({ code: 'SAEGATE_ERR_STEERING', param: 'steering[0].hook' });
    expect(error.message).toContain("'blocks.5.hook_mlp_out'");
    expect(error.message).toContain('blocks.<layer>.hook_resid_pre and blocks.<layer>.hook_resid_post for layer 0..1');
    expect(engine.requests).toHaveLength(0);
  });

  it('refuses a vector whose length is not d_model with both numbers', async () => {
    const { app } = setup();
    const response = await post(app, '/v1/completions', { model: MODEL, prompt: 'x', steering: [{ layer: 0, vector: vector(5) }] });
    expect(response.statusCode).toBe(400);
    const { error } = response.json() as ErrorBody;
    expect(error).toMatchObject({ code: 'SAEGATE_ERR_STEERING', param: 'steering[0].vector' });
    expect(error.message).toContain('has 5 values');
    expect(error.message).toContain("d_model is 8");
  });

  it.each([
    ['an infinite value (1e999 in JSON)', '{"layer":0,"vector":[0,0,1e999,0,0,0,0,0]}', 'steering[0].vector[2]'],
    ['a value beyond float32', '{"layer":0,"vector":[0,0,0,1e39,0,0,0,0]}', 'steering[0].vector[3]'],
    ['a string value', '{"layer":0,"vector":[0,"1",0,0,0,0,0,0]}', 'steering[0].vector[1]'],
    ['a layer the model lacks', '{"layer":2,"vector":[0,0,0,0,0,0,0,0]}', 'steering[0].layer'],
    ['both hook and layer', '{"layer":0,"hook":"blocks.0.hook_resid_post","vector":[0,0,0,0,0,0,0,0]}', 'steering[0]'],
    ['neither hook nor layer', '{"vector":[0,0,0,0,0,0,0,0]}', 'steering[0]'],
    ['until before from', '{"layer":0,"vector":[0,0,0,0,0,0,0,0],"positions":{"from":5,"until":5}}', 'steering[0].positions'],
    ['an unknown positions keyword', '{"layer":0,"vector":[0,0,0,0,0,0,0,0],"positions":"tail"}', 'steering[0].positions'],
  ])('refuses a steering entry with %s as SAEGATE_ERR_STEERING', async (_name, entry, param) => {
    const { app, engine } = setup();
    const response = await app.inject({
      method: 'POST',
      url: '/v1/completions',
      payload: `{"model":"${MODEL}","prompt":"x","steering":[${entry}]}`,
      headers: { 'content-type': 'application/json' },
    });
    expect(response.statusCode).toBe(400);
    expect((response.json() as ErrorBody).error).toMatchObject({ code: 'SAEGATE_ERR_STEERING', param, type: 'invalid_request_error' });
    expect(engine.requests).toHaveLength(0);
  });
});

describe('request bodies with a byte order mark', () => {
  it('accepts a JSON body that begins with a UTF-8 byte order mark (the proxy forwards such bodies unchanged)', async () => {
    const { app: target } = setup();
    const payload = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(JSON.stringify({ model: MODEL, prompt: 'hi', max_tokens: 2 }))]);
    const response = await target.inject({ method: 'POST', url: '/v1/completions', payload, headers: { 'content-type': 'application/json' } });
    expect(response.statusCode).toBe(200);
  });
});
