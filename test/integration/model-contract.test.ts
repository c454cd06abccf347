/**
 * The reference model server's OpenAI API as a contract: the same HTTP-visible behaviour checked
 * against the scripted FakeEngine (what the unit tests of the HTTP layer use) and the real engine on
 * a seeded synthetic model, both served over real HTTP on port 0. A case here holds for any engine,
 * so it is written in terms of what the server itself answered (the greedy text, the context
 * length), never in terms of one engine's script. What only one engine can show (scripted failures,
 * pauses, a particular story) stays in test/unit/model/http-app.test.ts and model-server.test.ts.
 */
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildModelApp } from '../../src/model/http/app.js';
import { startModelServer } from '../../src/model/server.js';
import { ByteTokenizer, FakeEngine } from '../helpers/fake-engine.js';

const NAME = 'contract-model';
/**
 * Seeded sampling: the same text for the same request on either engine, and (unlike greedy
 * decoding, which repeats one byte on the synthetic model) varied text, so joins and cuts of it
 * are worth checking.
 */
const SEEDED = { temperature: 1, seed: 1 };

/** A running model server: its base URL and context length. */
interface Served {
  url: string;
  contextLength: number;
  close(): Promise<void>;
}

async function listen(app: FastifyInstance): Promise<string> {
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  if (address === null || typeof address === 'string') throw new Error(`unexpected listen address ${String(address)}`);
  return `http://127.0.0.1:${address.port}`;
}

const engines: { engine: string; start: () => Promise<Served> }[] = [
  {
    engine: 'the fake engine',
    async start() {
      const engine = new FakeEngine();
      const app = buildModelApp({ engine, tokenizer: new ByteTokenizer(), modelName: NAME });
      const url = await listen(app);
      return { url, contextLength: engine.config.maxSeqLen, close: () => app.close() };
    },
  },
  {
    engine: 'the real engine on a seeded synthetic model',
    async start() {
      const server = await startModelServer({ model: 'synthetic:dim=32,layers=2,heads=4,kv=2,hidden=64,vocab=300,ctx=96,seed=7', name: NAME, port: 0, maxBatch: 4, threads: 1 });
      return { url: server.url, contextLength: server.model.weights.config.maxSeqLen, close: () => server.close() };
    },
  },
];

interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}
interface Completion {
  id: string;
  object: string;
  model: string;
  choices: { index: number; text: string; finish_reason: string | null; logprobs: null }[];
  usage: Usage;
}
interface ChatCompletion {
  id: string;
  object: string;
  model: string;
  choices: { index: number; message: { role: string; content: string }; finish_reason: string | null }[];
  usage: Usage;
}
interface CompletionChunk {
  object: string;
  choices: { index: number; text: string; finish_reason: string | null }[];
  usage?: Usage | null;
}
interface ChatChunk {
  object: string;
  choices: { index: number; delta: { role?: string; content?: string }; finish_reason: string | null }[];
  usage?: Usage | null;
}
interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string };
}

describe.each(engines)('model server OpenAI API contract, on $engine', ({ start }) => {
  let served: Served;
  beforeAll(async () => {
    served = await start();
  });
  afterAll(async () => {
    await served?.close();
  });

  const post = (route: string, body: unknown): Promise<Response> =>
    fetch(`${served.url}${route}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body) });

  /** The JSON payloads of an SSE response; asserts the content type and that `[DONE]` ends it. */
  async function streamed<T>(response: Response): Promise<T[]> {
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const text = await response.text();
    const data = text
      .split('\n\n')
      .filter((frame) => frame.length > 0)
      .map((frame) => {
        expect(frame.startsWith('data: ')).toBe(true);
        return frame.slice('data: '.length);
      });
    expect(data.at(-1)).toBe('[DONE]');
    return data.slice(0, -1).map((d) => JSON.parse(d) as T);
  }

  async function complete(body: Record<string, unknown>): Promise<Completion> {
    const response = await post('/v1/completions', { model: NAME, ...SEEDED, ...body });
    expect(response.status).toBe(200);
    return (await response.json()) as Completion;
  }

  /** A stop string taken from the text itself: two characters from its middle, no U+FFFD, not at its start. */
  function stopStringIn(text: string): string {
    for (let i = Math.max(1, Math.floor(text.length / 2)); i + 2 <= text.length; i++) {
      const candidate = text.slice(i, i + 2);
      if (!candidate.includes('\uFFFD') && text.indexOf(candidate) > 0) return candidate;
    }
    throw new Error(`no stop string candidate in ${JSON.stringify(text)}`);
  }

  describe('/v1/models', () => {
    it('lists exactly the served model, owned by saegate, retrieves it by id, and 404s any other id', async () => {
      const list = (await (await fetch(`${served.url}/v1/models`)).json()) as { object: string; data: { id: string; object: string; owned_by: string; created: number }[] };
      expect(list.object).toBe('list');
      expect(list.data).toHaveLength(1);
      expect(list.data[0]).toMatchObject({ id: NAME, object: 'model', owned_by: 'saegate' });
      expect(Number.isInteger(list.data[0].created)).toBe(true);
      expect(await (await fetch(`${served.url}/v1/models/${NAME}`)).json()).toMatchObject({ id: NAME, object: 'model' });
      const missing = await fetch(`${served.url}/v1/models/other`);
      expect(missing.status).toBe(404);
      expect(((await missing.json()) as ErrorBody).error).toMatchObject({ type: 'not_found_error', code: 'SAEGATE_ERR_MODEL_NOT_FOUND' });
    });
  });

  describe('/v1/completions', () => {
    it.each([1, 4])('answers in OpenAI shape and stops at max_tokens = %i with finish_reason length', async (maxTokens) => {
      const completion = await complete({ prompt: 'Hi there', max_tokens: maxTokens });
      expect(completion).toMatchObject({ object: 'text_completion', model: NAME });
      expect(completion.id).toMatch(/^cmpl-/);
      expect(completion.choices).toHaveLength(1);
      expect(completion.choices[0]).toMatchObject({ index: 0, finish_reason: 'length', logprobs: null });
      expect(typeof completion.choices[0].text).toBe('string');
      expect(completion.usage.completion_tokens).toBe(maxTokens);
      expect(completion.usage.prompt_tokens).toBeGreaterThan(0);
      expect(completion.usage.total_tokens).toBe(completion.usage.prompt_tokens + maxTokens);
    });

    it('streams chunks that join to the non-streamed text, a finish chunk, a usage chunk, then [DONE]', async () => {
      const full = await complete({ prompt: 'Once', max_tokens: 8 });
      const chunks = await streamed<CompletionChunk>(await post('/v1/completions', { model: NAME, prompt: 'Once', max_tokens: 8, ...SEEDED, stream: true, stream_options: { include_usage: true } }));
      for (const chunk of chunks) expect(chunk.object).toBe('text_completion');
      const usageChunk = chunks.at(-1)!;
      expect(usageChunk.choices).toEqual([]);
      expect(usageChunk.usage).toEqual(full.usage);
      const choices = chunks.slice(0, -1).map((c) => c.choices[0]);
      expect(choices.map((c) => c.text).join('')).toBe(full.choices[0].text);
      expect(choices.at(-1)!.finish_reason).toBe('length');
      expect(choices.slice(0, -1).every((c) => c.finish_reason === null)).toBe(true);
    });

    it('cuts the text before a stop string, streamed and not, with finish_reason stop', async () => {
      const text = (await complete({ prompt: 'Once', max_tokens: 12 })).choices[0].text;
      const stop = stopStringIn(text);
      const expected = text.slice(0, text.indexOf(stop));
      expect(expected.length).toBeGreaterThan(0);
      const cut = await complete({ prompt: 'Once', max_tokens: 12, stop: [stop] });
      expect(cut.choices[0]).toMatchObject({ text: expected, finish_reason: 'stop' });
      expect(cut.usage.completion_tokens).toBeLessThanOrEqual(12);
      const chunks = await streamed<CompletionChunk>(await post('/v1/completions', { model: NAME, prompt: 'Once', max_tokens: 12, ...SEEDED, stop, stream: true }));
      expect(chunks.map((c) => c.choices[0]?.text ?? '').join('')).toBe(expected);
      expect(chunks.at(-1)!.choices[0].finish_reason).toBe('stop');
    });
  });

  describe('/v1/chat/completions', () => {
    const messages = [{ role: 'user', content: 'Tell me a story.' }];

    it('answers as an assistant message, and streams the same content opened by the assistant role, with the same usage', async () => {
      const response = await post('/v1/chat/completions', { model: NAME, messages, max_tokens: 6, ...SEEDED });
      expect(response.status).toBe(200);
      const full = (await response.json()) as ChatCompletion;
      expect(full).toMatchObject({ object: 'chat.completion', model: NAME });
      expect(full.id).toMatch(/^chatcmpl-/);
      expect(full.choices).toHaveLength(1);
      expect(full.choices[0].message.role).toBe('assistant');
      expect(full.choices[0].finish_reason).toBe('length');
      expect(full.usage.completion_tokens).toBe(6);
      expect(full.usage.total_tokens).toBe(full.usage.prompt_tokens + 6);

      const chunks = await streamed<ChatChunk>(await post('/v1/chat/completions', { model: NAME, messages, max_tokens: 6, ...SEEDED, stream: true, stream_options: { include_usage: true } }));
      for (const chunk of chunks) expect(chunk.object).toBe('chat.completion.chunk');
      expect(chunks[0].choices[0].delta.role).toBe('assistant');
      expect(chunks.at(-1)!.usage).toEqual(full.usage);
      const choices = chunks.slice(0, -1).map((c) => c.choices[0]);
      expect(choices.map((c) => c.delta.content ?? '').join('')).toBe(full.choices[0].message.content);
      expect(choices.at(-1)!.finish_reason).toBe('length');
    });

    it('prefers max_completion_tokens over max_tokens', async () => {
      const response = await post('/v1/chat/completions', { model: NAME, messages, max_tokens: 6, max_completion_tokens: 2, temperature: 0 });
      const body = (await response.json()) as ChatCompletion;
      expect(body.usage.completion_tokens).toBe(2);
      expect(body.choices[0].finish_reason).toBe('length');
    });
  });

  describe('errors', () => {
    it('answers malformed JSON with an OpenAI-shaped 400 SAEGATE_ERR_INVALID_JSON', async () => {
      const response = await post('/v1/completions', '{"model": ');
      expect(response.status).toBe(400);
      const { error } = (await response.json()) as ErrorBody;
      expect(error).toMatchObject({ type: 'invalid_request_error', code: 'SAEGATE_ERR_INVALID_JSON', param: null });
      expect(error.message).toMatch(/^request body is not valid JSON: .+/);
    });

    it.each([
      ['n = 2', { n: 2 }, 'n'],
      ['a temperature above 2', { temperature: 2.5 }, 'temperature'],
      ['a missing model', { model: undefined }, 'model'],
    ])('refuses %s with a 400 naming the parameter', async (_name, patch, param) => {
      const response = await post('/v1/completions', { model: NAME, prompt: 'x', ...patch });
      expect(response.status).toBe(400);
      const { error } = (await response.json()) as ErrorBody;
      expect(error).toMatchObject({ type: 'invalid_request_error', code: 'SAEGATE_ERR_BAD_REQUEST', param });
      expect(error.message.startsWith(`${param}: `)).toBe(true);
    });

    it('answers an unknown model with 404 SAEGATE_ERR_MODEL_NOT_FOUND naming it and the served one', async () => {
      const response = await post('/v1/chat/completions', { model: 'gpt-4', messages: [{ role: 'user', content: 'x' }] });
      expect(response.status).toBe(404);
      const { error } = (await response.json()) as ErrorBody;
      expect(error).toMatchObject({ type: 'not_found_error', code: 'SAEGATE_ERR_MODEL_NOT_FOUND', param: 'model' });
      expect(error.message).toContain("'gpt-4'");
      expect(error.message).toContain(NAME);
    });

    it('refuses prompt plus max_tokens over the context with the context length in the message', async () => {
      const response = await post('/v1/completions', { model: NAME, prompt: 'Hi', max_tokens: served.contextLength });
      expect(response.status).toBe(400);
      const { error } = (await response.json()) as ErrorBody;
      expect(error).toMatchObject({ type: 'invalid_request_error', code: 'SAEGATE_ERR_CONTEXT_LENGTH', param: 'max_tokens' });
      expect(error.message).toContain(String(served.contextLength));
    });

    it('answers an unknown route with an OpenAI-shaped 404', async () => {
      const response = await fetch(`${served.url}/v1/embeddings`);
      expect(response.status).toBe(404);
      expect(await response.json()).toEqual({ error: { message: 'no route GET /v1/embeddings', type: 'not_found_error', param: null, code: 'SAEGATE_ERR_NOT_FOUND' } });
      expect(response.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    });
  });
});

describe('model server /healthz engine counters', () => {
  it('counts the prefill, the decode steps and the generated tokens of a request, and the time inside onnxruntime', async () => {
    const server = await startModelServer({ model: 'synthetic:dim=32,layers=2,heads=4,kv=2,hidden=64,vocab=300,ctx=96,seed=7', name: NAME, port: 0, maxBatch: 4, threads: 1 });
    try {
      interface Health {
        engine: { prefill_steps: number; decode_steps: number; generated_tokens: number; onnxruntime_ms: number };
      }
      const health = async (): Promise<Health['engine']> => ((await (await fetch(`${server.url}/healthz`)).json()) as Health).engine;
      expect(await health()).toEqual({ prefill_steps: 0, decode_steps: 0, generated_tokens: 0, onnxruntime_ms: 0 });
      const response = await fetch(`${server.url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: NAME, prompt: 'Hi there', max_tokens: 6, temperature: 0 }),
      });
      expect(((await response.json()) as Completion).usage.completion_tokens).toBe(6);
      // The prefill emits the first token, each decode step one more.
      const after = await health();
      expect(after).toMatchObject({ prefill_steps: 1, decode_steps: 5, generated_tokens: 6 });
      expect(Number.isInteger(after.onnxruntime_ms) && after.onnxruntime_ms >= 0).toBe(true);
    } finally {
      await server.close();
    }
  });
});
