import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { documentSeed, sampleCorpus, type SampleCorpusOptions, type SampledDocument } from '../../../../src/lab/corpus/sample.js';
import { BOS_ID, BYTE_OFFSET, ByteTokenizer, byteTokens, EOS_ID, FakeEngine } from '../../../helpers/fake-engine.js';

const tokenizer = new ByteTokenizer();
const indexOf = (requestId: string): number => Number(/^sample-(\d+)$/.exec(requestId)![1]);

/** A reply that depends only on the request's seed, like a real seeded model. */
function seededReply(seed: number): { tokens: number[] } {
  const letters = 'abcdefghij';
  const length = seed % 9;
  return { tokens: byteTokens(Array.from({ length }, (_, k) => letters[(seed >>> k) % 10]).join('')) };
}

async function run(overrides: Partial<SampleCorpusOptions> & { engine: FakeEngine }): Promise<{ documents: SampledDocument[]; summary: Awaited<ReturnType<typeof sampleCorpus>> }> {
  const documents: SampledDocument[] = [];
  const summary = await sampleCorpus({
    tokenizer,
    promptTokens: [BOS_ID],
    documents: 20,
    seed: 0,
    maxTokens: 6,
    temperature: 1,
    topP: 1,
    concurrency: 4,
    onDocument: (d) => {
      documents.push(d);
    },
    ...overrides,
  });
  return { documents, summary };
}

describe('sampleCorpus', () => {
  it('hands documents over in id order whatever order they finish in, and the same corpus at any concurrency', async () => {
    const engine = new FakeEngine({ respond: (r) => seededReply(r.sampling.seed!) });
    const finished: number[] = [];
    const original = engine.generate.bind(engine);
    engine.generate = async (request, onToken) => {
      const result = await original(request, onToken);
      finished.push(indexOf(request.requestId));
      return result;
    };
    const parallel = await run({ engine, concurrency: 5 });
    expect(parallel.documents.map((d) => d.id)).toEqual(Array.from({ length: 20 }, (_, i) => i));
    // The reordering was exercised: some document finished before an earlier one.
    expect(finished).not.toEqual([...finished].sort((a, b) => a - b));
    expect(engine.running).toBe(0);

    const sequential = await run({ engine: new FakeEngine({ respond: (r) => seededReply(r.sampling.seed!) }), concurrency: 1 });
    expect(sequential.documents).toEqual(parallel.documents);
    expect(sequential.summary).toMatchObject({ documents: 20, total: 20, tokens: parallel.summary.tokens });
  });

  it('gives document i the seed documentSeed(seed, i), the sampling flags, and BOS and EOS as stop tokens', async () => {
    const engine = new FakeEngine({ respond: () => ({ tokens: [] }) });
    await run({ engine, seed: 5, documents: 6, temperature: 0.7, topP: 0.9, maxTokens: 9 });
    const requests = [...engine.requests].sort((a, b) => indexOf(a.requestId) - indexOf(b.requestId));
    expect(requests.map((r) => r.sampling)).toEqual(Array.from({ length: 6 }, (_, i) => ({ temperature: 0.7, topP: 0.9, seed: documentSeed(5, i) })));
    for (const r of requests) {
      expect(r.maxTokens).toBe(9);
      expect([...r.stopTokenIds].sort()).toEqual([BOS_ID, EOS_ID]);
    }
  });

  it('decodes prompt and completion together, counts tokens as the engine does, and reports empty documents', async () => {
    const replies: Record<number, number[]> = { 0: byteTokens('Hello'), 1: [], 2: byteTokens('abcdefgh') };
    const engineFor = () => new FakeEngine({ respond: (r) => ({ tokens: replies[indexOf(r.requestId)] }) });
    const bare = await run({ engine: engineFor(), documents: 3, maxTokens: 6 });
    expect(bare.documents).toEqual([
      { id: 0, text: 'Hello', tokens: 6, finishReason: 'stop' },
      { id: 1, text: '', tokens: 1, finishReason: 'stop' },
      { id: 2, text: 'abcdef', tokens: 6, finishReason: 'length' },
    ]);
    expect(bare.summary).toMatchObject({ documents: 3, empty: 1, stopped: 2, truncated: 1, tokens: 13 });

    const prompted = await run({ engine: engineFor(), promptTokens: [BOS_ID, ...byteTokens('Once: ')], documents: 2, maxTokens: 6 });
    expect(prompted.documents.map((d) => d.text)).toEqual(['Once: Hello', 'Once: ']);
    expect(prompted.summary.empty).toBe(0);
  });

  it('fails with the first engine error and aborts the documents still running', async () => {
    const broken = new Error('onnxruntime exploded');
    const engine = new FakeEngine({
      respond: (r) => (indexOf(r.requestId) === 3 ? { tokens: byteTokens('abc'), fail: { afterTokens: 2, error: broken } } : { tokens: byteTokens('x'.repeat(50)) }),
    });
    const documents: SampledDocument[] = [];
    await expect(run({ engine, maxTokens: 50, onDocument: (d) => void documents.push(d) })).rejects.toBe(broken);
    expect(engine.aborted.length).toBeGreaterThan(0);
    expect(engine.requests.length).toBeLessThan(20);
    expect(documents.every((d) => d.id < 3)).toBe(true);
  });

  it('fails when onDocument fails (a full disk) and starts no further documents', async () => {
    const engine = new FakeEngine({ respond: () => ({ tokens: byteTokens('abc') }) });
    const full = new Error('ENOSPC');
    await expect(
      run({
        engine,
        documents: 50,
        onDocument: async (d) => {
          if (d.id === 4) throw full;
        },
      }),
    ).rejects.toBe(full);
    expect(engine.requests.length).toBeLessThan(50);
  });

  it('stops on an outside abort and rejects with its reason', async () => {
    const engine = new FakeEngine({ respond: () => ({ tokens: byteTokens('abc'), pauseAfter: 1 }) });
    const controller = new AbortController();
    const reason = new Error('SIGINT');
    const running = run({ engine, signal: controller.signal });
    await engine.whenRunning(4);
    controller.abort(reason);
    await expect(running).rejects.toBe(reason);
    expect(engine.aborted).toHaveLength(4);
    expect(engine.requests).toHaveLength(4);
  });

  it('cuts back documents whose text encodes again to more than maxTextTokens, so each one fits as a prompt', async () => {
    // Lone bytes 0xff are invalid UTF-8: each decodes to U+FFFD, which encodes to 3 bytes (3 tokens).
    const invalid = (n: number): number[] => Array.from({ length: n }, () => 0xff + BYTE_OFFSET);
    const replies = [invalid(6), byteTokens('abc'), [...byteTokens('ab'), ...invalid(4)], invalid(2)];
    const engine = new FakeEngine({ respond: (r) => ({ tokens: replies[indexOf(r.requestId)] }) });
    const { documents, summary } = await run({ engine, documents: 4, maxTokens: 6, maxTextTokens: 8 });
    for (const d of documents) expect(tokenizer.encode(d.text, { addBos: true }).length, `document ${d.id}`).toBeLessThanOrEqual(8);
    expect(documents.map((d) => [d.text, d.tokens, d.finishReason])).toEqual([
      // BOS + 2 × 3 bytes = 7 tokens; a third U+FFFD would make 10.
      ['\uFFFD'.repeat(2), 2, 'length'],
      // Fits as sampled (the engine's count includes the EOS).
      ['abc', 4, 'stop'],
      // BOS + 2 + 3 = 6; a second U+FFFD would make 9.
      ['ab\uFFFD', 3, 'length'],
      ['\uFFFD'.repeat(2), 3, 'stop'],
    ]);
    expect(summary).toMatchObject({ documents: 4, stopped: 2, truncated: 2, shortened: 2 });
    // Without the limit the same replies give the long documents.
    const unlimited = await run({ engine: new FakeEngine({ respond: (r) => ({ tokens: replies[indexOf(r.requestId)] }) }), documents: 4, maxTokens: 6 });
    expect(unlimited.documents[0]).toMatchObject({ text: '\uFFFD'.repeat(6), tokens: 6 });
    expect(unlimited.summary.shortened).toBe(0);
  });

  it('refuses a prompt that alone encodes to more than maxTextTokens', async () => {
    const engine = new FakeEngine({ respond: () => ({ tokens: [] }) });
    await expect(run({ engine, documents: 1, promptTokens: [BOS_ID, ...byteTokens('abcdef')], maxTextTokens: 4 })).rejects.toMatchObject({
      code: 'SAEGATE_ERR_CONFIG',
      message: expect.stringContaining('the prompt alone encodes to 7 tokens, more than the 4'),
    });
  });

  it('refuses bad options with SAEGATE_ERR_CONFIG before any request', async () => {
    const engine = new FakeEngine();
    await expect(run({ engine, concurrency: 0 })).rejects.toMatchObject({ code: 'SAEGATE_ERR_CONFIG', message: expect.stringContaining('concurrency') });
    await expect(run({ engine, seed: -1 })).rejects.toMatchObject({ code: 'SAEGATE_ERR_CONFIG', message: expect.stringContaining('seed') });
    await expect(run({ engine, promptTokens: [] })).rejects.toMatchObject({ code: 'SAEGATE_ERR_CONFIG', message: expect.stringContaining('promptTokens') });
    expect(engine.requests).toHaveLength(0);
  });
});

describe('documentSeed', () => {
  it('is the first 4 bytes of SHA-256 of "seed:index", big-endian', () => {
    expect(documentSeed(3, 17)).toBe(createHash('sha256').update('3:17').digest().readUInt32BE(0));
  });

  it('does not make the corpus of seed s+1 the corpus of seed s shifted by one document', () => {
    const seeds0 = Array.from({ length: 100 }, (_, i) => documentSeed(0, i));
    const seeds1 = new Set(Array.from({ length: 100 }, (_, i) => documentSeed(1, i)));
    expect(seeds0.filter((s) => seeds1.has(s))).toEqual([]);
    expect(new Set(seeds0).size).toBe(100);
  });
});
