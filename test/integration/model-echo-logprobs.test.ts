/**
 * Prompt log-probabilities on the reference server (`echo: true, logprobs: N, max_tokens: 0` on
 * `/v1/completions`), through real HTTP and the real `openai` client, against the float64
 * reference forward pass: values, top alternatives, OpenAI's legacy shape, streaming, steering,
 * and the combinations the server refuses.
 */
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startModelServer, type ModelServer } from '../../src/model/server.js';
import { hasSharedModels, stories260K } from '../helpers/fixtures.js';
import { referenceForward, type ReferenceSteering } from '../helpers/reference-forward.js';

const modelArg = hasSharedModels ? stories260K.model : 'synthetic:dim=64,layers=2,heads=4,kv=2,hidden=128,vocab=300,ctx=256,seed=3';
const PROMPT = 'Once upon a time, there was a little dog named Max.';
const TOP = 3;

/** log-softmax of one row, float64. */
function logSoftmax(logits: Float64Array): Float64Array {
  let max = -Infinity;
  for (const v of logits) max = Math.max(max, v);
  let sum = 0;
  for (const v of logits) sum += Math.exp(v - max);
  const logZ = max + Math.log(sum);
  return logits.map((v) => v - logZ);
}

type Logprobs = NonNullable<OpenAI.Completions.CompletionChoice['logprobs']>;

describe('prompt log-probabilities (echo + logprobs) on the reference server', () => {
  let server: ModelServer;
  let client: OpenAI;
  let model: string;
  let tokens: number[];
  beforeAll(async () => {
    server = await startModelServer({ model: modelArg, port: 0, maxBatch: 4 });
    model = server.model.name;
    client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    tokens = server.model.tokenizer!.encode(PROMPT, { addBos: true });
  });
  afterAll(async () => {
    await server?.close();
  });

  /** The reference's log-probability of each prompt token after the first, and its top ids per position. */
  function reference(steering: ReferenceSteering[] = []): { tokenLogprobs: number[]; top: number[][]; topValues: number[][] } {
    const { logits } = referenceForward(server.model.weights, tokens, { steering });
    const tokenLogprobs: number[] = [];
    const top: number[][] = [];
    const topValues: number[][] = [];
    for (let t = 0; t + 1 < tokens.length; t++) {
      const lp = logSoftmax(logits[t]);
      tokenLogprobs.push(lp[tokens[t + 1]]);
      const order = [...lp.keys()].sort((a, b) => lp[b] - lp[a]).slice(0, TOP);
      top.push(order);
      topValues.push(order.map((i) => lp[i]));
    }
    return { tokenLogprobs, top, topValues };
  }

  function expectMatchesReference(logprobs: Logprobs, text: string, ref: ReturnType<typeof reference>): void {
    const tokenizer = server.model.tokenizer!;
    expect(logprobs.tokens).toHaveLength(tokens.length);
    expect(logprobs.tokens!.join('')).toBe(text);
    expect(text).toBe(tokenizer.decode(tokens));
    logprobs.text_offset!.forEach((offset, i) => expect(text.slice(offset).startsWith(logprobs.tokens![i])).toBe(true));
    expect(logprobs.token_logprobs![0]).toBeNull();
    expect(logprobs.top_logprobs![0]).toBeNull();
    for (let t = 1; t < tokens.length; t++) {
      expect(logprobs.token_logprobs![t]).toBeCloseTo(ref.tokenLogprobs[t - 1], 4);
      const alternatives = logprobs.top_logprobs![t]!;
      // Alternatives read in place: decoded after the token before them (no leading space after BOS).
      const inPlace = (id: number): string => tokenizer.decode([tokens[t - 1], id]).slice(tokenizer.decode([tokens[t - 1]]).length);
      const expected = ref.top[t - 1].map(inPlace);
      // Distinct ids that decode alike share a key: compare keys as a set, values by key.
      expect(Object.keys(alternatives).sort()).toEqual([...new Set(expected)].sort());
      ref.top[t - 1].forEach((id, k) => {
        const name = inPlace(id);
        if (expected.indexOf(name) === k) expect(alternatives[name]).toBeCloseTo(ref.topValues[t - 1][k], 4);
      });
    }
  }

  it('returns every prompt token log-probability equal to the reference forward pass, null for the first', async () => {
    const response = await client.completions.create({ model, prompt: PROMPT, echo: true, logprobs: TOP, max_tokens: 0 });
    const choice = response.choices[0];
    if (hasSharedModels) {
      // The first word after BOS has no leading space, in the token and among the alternatives alike.
      expect(choice.logprobs!.tokens![1]).toBe('Once');
      expect(Object.keys(choice.logprobs!.top_logprobs![1]!)).toContain('Once');
    }
    expect(choice.finish_reason).toBe('length');
    expect(response.usage).toEqual({ prompt_tokens: tokens.length, completion_tokens: 0, total_tokens: tokens.length });
    expectMatchesReference(choice.logprobs!, choice.text, reference());
  });

  it('streams the same text and log-probabilities in one chunk before the finish chunk', async () => {
    const full = await client.completions.create({ model, prompt: PROMPT, echo: true, logprobs: TOP, max_tokens: 0 });
    const chunks: OpenAI.Completions.Completion[] = [];
    for await (const chunk of await client.completions.create({ model, prompt: PROMPT, echo: true, logprobs: TOP, max_tokens: 0, stream: true })) chunks.push(chunk);
    expect(chunks).toHaveLength(2);
    expect(chunks[0].choices[0].text).toBe(full.choices[0].text);
    expect(chunks[0].choices[0].logprobs).toEqual(full.choices[0].logprobs);
    expect(chunks[1].choices[0]).toMatchObject({ text: '', finish_reason: 'length', logprobs: null });
  });

  it('applies steering from the request body: the numbers change and match the steered reference', async () => {
    const dim = server.model.weights.config.dim;
    const vector = Array.from({ length: dim }, (_, i) => Math.sin(i + 1));
    const steering = [{ hook: 'blocks.1.hook_resid_post', vector, scale: 4 }];
    const body = { model, prompt: PROMPT, echo: true, logprobs: TOP, max_tokens: 0, steering } as OpenAI.CompletionCreateParamsNonStreaming;
    const steered = await client.completions.create(body);
    const plain = await client.completions.create({ model, prompt: PROMPT, echo: true, logprobs: TOP, max_tokens: 0 });
    const ref = reference([{ hook: 'blocks.1.hook_resid_post', vector, scale: 4, fromPosition: 0, untilPosition: null }]);
    expectMatchesReference(steered.choices[0].logprobs!, steered.choices[0].text, ref);
    const diff = steered.choices[0].logprobs!.token_logprobs!.slice(1).map((v, i) => Math.abs(v! - plain.choices[0].logprobs!.token_logprobs![i + 1]!));
    expect(Math.max(...diff)).toBeGreaterThan(1e-2);
  });

  it('echoes the prompt before generated text when echo is given without logprobs', async () => {
    const plain = await client.completions.create({ model, prompt: PROMPT, max_tokens: 8, temperature: 0 });
    const echoed = await client.completions.create({ model, prompt: PROMPT, max_tokens: 8, temperature: 0, echo: true });
    expect(echoed.choices[0].text).toBe(server.model.tokenizer!.decode(tokens) + plain.choices[0].text);
    expect(echoed.choices[0].logprobs).toBeNull();
  });

  it.each([
    ['logprobs without echo', { logprobs: 2, max_tokens: 0 }, 'logprobs', /generated tokens are not supported/],
    ['echo and logprobs with max_tokens 4', { echo: true, logprobs: 2, max_tokens: 4 }, 'max_tokens', /must be 0/],
    ['echo and logprobs with the default max_tokens', { echo: true, logprobs: 2 }, 'max_tokens', /must be 0/],
    ['max_tokens 0 without logprobs', { echo: true, max_tokens: 0 }, 'max_tokens', /needs echo: true with logprobs/],
    ['logprobs above 5', { echo: true, logprobs: 6, max_tokens: 0 }, 'logprobs', /5/],
  ])('refuses %s with an OpenAI-shaped 400 naming the parameter', async (_name, patch, param, message) => {
    const error = await client.completions.create({ model, prompt: PROMPT, ...patch } as OpenAI.CompletionCreateParamsNonStreaming).then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
    const bad = error as InstanceType<typeof OpenAI.BadRequestError>;
    expect(bad.status).toBe(400);
    expect(bad.error).toMatchObject({ type: 'invalid_request_error', code: 'SAEGATE_ERR_BAD_REQUEST', param });
    expect(bad.message).toMatch(message);
  });
});
