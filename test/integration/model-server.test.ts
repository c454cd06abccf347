/**
 * The reference model server as a user runs it: real HTTP on port 0, the real `openai` client,
 * the real stories260K model (or a synthetic one when ../shared/models is absent).
 */
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startModelServer, type ModelServer } from '../../src/model/server.js';
import { hasSharedModels, stories260K } from '../helpers/fixtures.js';

const modelArg = hasSharedModels ? stories260K.model : 'synthetic:dim=64,layers=2,heads=4,kv=2,hidden=128,vocab=300,ctx=256,seed=3';

describe('reference model server over HTTP', () => {
  let server: ModelServer;
  let client: OpenAI;
  let model: string;
  beforeAll(async () => {
    server = await startModelServer({ model: modelArg, port: 0, maxBatch: 4 });
    model = server.model.name;
    client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('lists the model under its file base name', async () => {
    const list = await client.models.list();
    expect(list.data.map((m) => m.id)).toEqual([hasSharedModels ? 'stories260K' : model]);
  });

  it.skipIf(!hasSharedModels)('completes "Once upon a time" greedily with the same text streamed and not streamed', async () => {
    const params = { model, prompt: 'Once upon a time', max_tokens: 24, temperature: 0 } as const;
    const full = await client.completions.create(params);
    expect(full.choices[0].text.length).toBeGreaterThan(10);
    expect(full.choices[0].finish_reason).toBe('length');
    expect(full.usage).toMatchObject({ completion_tokens: 24 });
    let streamed = '';
    let finish: string | null = null;
    for await (const chunk of await client.completions.create({ ...params, stream: true })) {
      streamed += chunk.choices[0]?.text ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    expect(streamed).toBe(full.choices[0].text);
    expect(finish).toBe('length');
  });

  it('serves chat completions streamed and not, with the same content and usage counts', async () => {
    const params = { model, messages: [{ role: 'user' as const, content: 'Tell me a story about a cat.' }], max_tokens: 16, temperature: 0 };
    const full = await client.chat.completions.create(params);
    expect(full.choices[0].message.role).toBe('assistant');
    expect(full.usage!.completion_tokens).toBeLessThanOrEqual(16);
    expect(full.usage!.total_tokens).toBe(full.usage!.prompt_tokens + full.usage!.completion_tokens);
    let streamed = '';
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of await client.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } })) {
      streamed += chunk.choices[0]?.delta?.content ?? '';
      usage = chunk.usage ?? usage;
    }
    expect(streamed).toBe(full.choices[0].message.content);
    expect(usage).toEqual(full.usage);
  });

  it('gives the same sampled text for the same seed and different text for another seed', async () => {
    const ask = (seed: number) => client.completions.create({ model, prompt: 'The dog', max_tokens: 20, temperature: 1, top_p: 0.9, seed });
    const [a, b, c] = await Promise.all([ask(11), ask(11), ask(12)]);
    expect(a.choices[0].text).toBe(b.choices[0].text);
    expect(a.choices[0].text).not.toBe(c.choices[0].text);
  });

  it('refuses prompt plus max_tokens over the context length with both numbers in a 400', async () => {
    const ctx = server.model.weights.config.maxSeqLen;
    const error = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: ctx }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
    const message = (error as InstanceType<typeof OpenAI.BadRequestError>).message;
    expect(message).toContain(String(ctx));
    const promptTokens = server.model.tokenizer!.encode('Once upon a time', { addBos: true }).length;
    expect(message).toContain(String(ctx + promptTokens));
  });

  it('answers an unknown model with a 404 naming it', async () => {
    const error = await client.completions.create({ model: 'nope', prompt: 'x', max_tokens: 1 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.NotFoundError);
    expect((error as Error).message).toContain('nope');
  });

  it('steers from the request body: a large vector changes the greedy text', async () => {
    const D = server.model.weights.config.dim;
    const base = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 12, temperature: 0 });
    const body = {
      model,
      prompt: 'Once upon a time',
      max_tokens: 12,
      temperature: 0,
      steering: [{ hook: 'blocks.1.hook_resid_post', vector: Array.from({ length: D }, (_, i) => Math.sin(i)), scale: 8 }],
    };
    const steered = await client.completions.create(body as unknown as OpenAI.CompletionCreateParamsNonStreaming);
    expect(steered.choices[0].text).not.toBe(base.choices[0].text);
  });
});
