/**
 * The model server's HTTP layer on a real socket (port 0) with the official `openai` client, plus
 * raw node:http clients for what the SDK cannot do on purpose (hanging up mid-stream).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import OpenAI from 'openai';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SaegateError } from '../../../src/common/errors.js';
import { buildModelApp } from '../../../src/model/http/app.js';
import type { GenerateResult } from '../../../src/model/engine-types.js';
import { ByteTokenizer, FakeEngine, byteTokens } from '../../helpers/fake-engine.js';

const MODEL = 'fake-model';

let app: FastifyInstance;
let engine: FakeEngine;
let client: OpenAI;
let port: number;

beforeEach(async () => {
  engine = new FakeEngine();
  app = buildModelApp({ engine, tokenizer: new ByteTokenizer(), modelName: MODEL, maxConcurrentRequests: 1 });
  await app.listen({ port: 0, host: '127.0.0.1' });
  port = (app.server.address() as AddressInfo).port;
  client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'unused', maxRetries: 0 });
});

afterEach(async () => {
  engine.resume();
  await app.close();
});

/** Posts a streaming request with node:http, hangs up after the first body bytes, returns the request id. */
function hangUpAfterFirstBytes(path: string, body: object, requestId: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const request = http.request(
      { host: '127.0.0.1', port, path, method: 'POST', headers: { 'content-type': 'application/json', 'x-request-id': requestId } },
      (response) => {
        response.once('data', (chunk: Buffer) => {
          request.destroy();
          resolve(chunk.toString('utf8'));
        });
      },
    );
    request.on('error', (error) => {
      // ECONNRESET after our own destroy() is expected; anything before the first bytes is not.
      if (!request.destroyed) reject(error);
    });
    request.end(JSON.stringify(body));
  });
}

describe('the openai client against a listening server', () => {
  it('lists the model, not labelled synthetic', async () => {
    const list = await client.models.list();
    expect(list.data.map((m) => [m.id, m.owned_by])).toEqual([[MODEL, 'saegate']]);
    expect(list.data[0]).toMatchObject({ synthetic: false });
  });

  it('labels a synthetic model in /v1/models and /v1/models/{id}, and the openai client still lists and retrieves it', async () => {
    const synthetic = buildModelApp({ engine, tokenizer: new ByteTokenizer(), modelName: 'synthetic', synthetic: true });
    await synthetic.listen({ port: 0, host: '127.0.0.1' });
    try {
      const other = new OpenAI({ baseURL: `http://127.0.0.1:${(synthetic.server.address() as AddressInfo).port}/v1`, apiKey: 'unused', maxRetries: 0 });
      const list = await other.models.list();
      expect(list.data).toHaveLength(1);
      expect(list.data[0]).toMatchObject({ id: 'synthetic', object: 'model', owned_by: 'saegate', synthetic: true });
      expect(await other.models.retrieve('synthetic')).toMatchObject({ id: 'synthetic', synthetic: true });
    } finally {
      await synthetic.close();
    }
  });

  describe.each([false, true])('completions with stream=%s', (stream) => {
    it('returns the scripted text, finish reason and usage', async () => {
      let text = '';
      let finish: string | null = null;
      let usage: OpenAI.CompletionUsage | undefined;
      if (stream) {
        for await (const chunk of await client.completions.create({ model: MODEL, prompt: 'Hi', max_tokens: 5, stream: true, stream_options: { include_usage: true } })) {
          text += chunk.choices[0]?.text ?? '';
          finish = chunk.choices[0]?.finish_reason ?? finish;
          usage = chunk.usage ?? usage;
        }
      } else {
        const full = await client.completions.create({ model: MODEL, prompt: 'Hi', max_tokens: 5 });
        text = full.choices[0].text;
        finish = full.choices[0].finish_reason;
        usage = full.usage;
      }
      expect(text).toBe('Hello');
      expect(finish).toBe('length');
      expect(usage).toEqual({ prompt_tokens: 3, completion_tokens: 5, total_tokens: 8 });
    });
  });

  describe.each([false, true])('chat completions with stream=%s', (stream) => {
    it('returns the assistant message cut before a stop string, with finish reason stop', async () => {
      engine.respond = () => ({ tokens: byteTokens('Sure.\nuser: next question') });
      const params = { model: MODEL, messages: [{ role: 'user' as const, content: 'Hi' }], stop: ['\nuser:'] };
      let content = '';
      let finish: string | null = null;
      if (stream) {
        const deltas: string[] = [];
        for await (const chunk of await client.chat.completions.create({ ...params, stream: true })) {
          if (chunk.choices[0]?.delta.content) deltas.push(chunk.choices[0].delta.content);
          finish = chunk.choices[0]?.finish_reason ?? finish;
        }
        content = deltas.join('');
        expect(deltas.some((d) => d.includes('\n'))).toBe(false);
      } else {
        const full = await client.chat.completions.create(params);
        expect(full.choices[0].message.role).toBe('assistant');
        content = full.choices[0].message.content ?? '';
        finish = full.choices[0].finish_reason;
        // "user: Hi\nassistant:" plus BOS is 20 tokens; "Sure.\nuser:" is 11.
        expect(full.usage).toEqual({ prompt_tokens: 20, completion_tokens: 11, total_tokens: 31 });
      }
      expect(content).toBe('Sure.');
      expect(finish).toBe('stop');
    });
  });

  it('raises BadRequestError with the context limit and the requested total', async () => {
    const error = await client.completions.create({ model: MODEL, prompt: 'Hi', max_tokens: 200 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
    const apiError = error as InstanceType<typeof OpenAI.BadRequestError>;
    expect(apiError.code).toBe('SAEGATE_ERR_CONTEXT_LENGTH');
    expect(apiError.param).toBe('max_tokens');
    expect(apiError.message).toContain('128');
    expect(apiError.message).toContain('203');
  });

  it('raises NotFoundError for another model', async () => {
    const error = await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.NotFoundError);
    expect((error as Error).message).toContain('gpt-4o');
  });

  it('raises RateLimitError when the server is at its concurrency limit', async () => {
    engine.respond = () => ({ tokens: byteTokens('ok'), pauseAfter: 1 });
    const first = client.completions.create({ model: MODEL, prompt: 'x' });
    await engine.whenRunning(1);
    const error = await client.completions.create({ model: MODEL, prompt: 'x' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.RateLimitError);
    expect((error as InstanceType<typeof OpenAI.RateLimitError>).headers.get('retry-after')).toBe('1');
    engine.resume();
    expect((await first).choices[0].text).toBe('ok');
  });

  it('raises an APIError from the stream when the engine fails after the first tokens', async () => {
    engine.respond = () => ({ tokens: byteTokens('Hello'), fail: { afterTokens: 2, error: new SaegateError('SAEGATE_ERR_WORKER_EXITED', ['exit code 3']) } });
    let text = '';
    const error = await (async () => {
      for await (const chunk of await client.completions.create({ model: MODEL, prompt: 'x', stream: true })) text += chunk.choices[0]?.text ?? '';
    })().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.APIError);
    expect((error as Error).message).toContain('worker thread exited: exit code 3');
    expect(text).toBe('He');
  });
});

describe('client disconnects', () => {
  it('aborts the engine request when the client hangs up mid-stream', async () => {
    engine.respond = () => ({ tokens: byteTokens('Hello, world!'), pauseAfter: 3 });
    const firstBytes = await hangUpAfterFirstBytes('/v1/completions', { model: MODEL, prompt: 'x', stream: true }, 'gone-1');
    expect(firstBytes.startsWith('data: {')).toBe(true);
    const outcome = (await engine.outcome('gone-1')) as GenerateResult;
    expect(outcome.finishReason).toBe('abort');
    expect(engine.aborted).toEqual(['gone-1']);
    expect(engine.emitted.get('gone-1')).toEqual(byteTokens('Hel'));
    // The slot is free again: the limit of one request admits the next.
    engine.respond = () => ({ tokens: byteTokens('ok') });
    expect((await client.completions.create({ model: MODEL, prompt: 'x' })).choices[0].text).toBe('ok');
  });

  it('aborts the engine request when the client of a non-streaming request hangs up', async () => {
    engine.respond = () => ({ tokens: byteTokens('Hello'), pauseAfter: 2 });
    const request = http.request({ host: '127.0.0.1', port, path: '/v1/completions', method: 'POST', headers: { 'content-type': 'application/json', 'x-request-id': 'gone-2' } });
    request.on('error', () => {});
    request.end(JSON.stringify({ model: MODEL, prompt: 'x' }));
    await engine.whenRunning(1);
    request.destroy();
    const outcome = (await engine.outcome('gone-2')) as GenerateResult;
    expect(outcome.finishReason).toBe('abort');
    expect(engine.aborted).toEqual(['gone-2']);
  });
});
