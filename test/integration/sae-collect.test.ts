/**
 * ActivationCollector against real model servers: the reference server in-process (a synthetic
 * model always, stories260K when the shared models are present) dialling into the collector's tap,
 * and a hand-built tap-speaking server that misbehaves on purpose (rows after the HTTP response
 * or after the end, lost rows, f16 only, out-of-order completion).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startModelServer, type ModelServer } from '../../src/model/server.js';
import { ActivationCollector, type CollectedDocument, type CollectInputDocument, type CollectOptions, type CollectProgress } from '../../src/lab/collect.js';
import { TapClient } from '../../src/tap/client.js';
import { expectSaegateRejection } from '../helpers/errors.js';
import { hasSharedModels, needsSharedModels, stories260K } from '../helpers/fixtures.js';
import { referenceForward } from '../helpers/reference-forward.js';

const HOOK = 'blocks.1.hook_resid_post';
const SYNTHETIC = 'synthetic:dim=32,layers=2,heads=4,kv=2,hidden=64,vocab=300,ctx=160,seed=11';

const SENTENCES = [
  'Once upon a time',
  'The little dog ran to the park.',
  'She saw a big red ball under the tree and smiled.',
  'Tom had a cat.',
  'A naïve café owner said “hello” — twice.',
  'They played all day in the sun, and then they went home happy.',
  'Lily',
  'One day, a bird flew over the house.',
];

/** 20 documents of varied length, some with characters that span several byte tokens. */
const corpus: CollectInputDocument[] = Array.from({ length: 20 }, (_, i) => ({
  id: `doc-${i}`,
  text: i % 5 === 4 ? `${SENTENCES[i % SENTENCES.length]} ${SENTENCES[(i + 3) % SENTENCES.length]}` : SENTENCES[i % SENTENCES.length],
}));

/** Long enough for either model's context (160 byte tokens, 512 stories260K tokens). */
const TOO_LONG = 'Once upon a time there was a cat who liked to play. '.repeat(200);

async function collectAll(collector: ActivationCollector, documents: CollectInputDocument[], options: CollectOptions): Promise<{ docs: CollectedDocument[]; progress: CollectProgress | null }> {
  const docs: CollectedDocument[] = [];
  let progress: CollectProgress | null = null;
  for await (const doc of collector.collect(documents, { ...options, onProgress: (p) => (progress = p) })) docs.push(doc);
  return { docs, progress };
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = http.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

const models = [
  { name: 'a synthetic model', model: SYNTHETIC, skip: false },
  { name: needsSharedModels('stories260K'), model: stories260K.model, skip: !hasSharedModels },
];

describe.each(models)('collecting from the reference model server with $name', ({ model, skip }) => {
  let collector: ActivationCollector;
  let server: ModelServer;
  const logs: string[] = [];

  beforeAll(async () => {
    if (skip) return;
    collector = await ActivationCollector.start({ hook: HOOK, log: (line) => logs.push(line) });
    server = await startModelServer({ model, port: 0, tapUrl: collector.tapUrl });
  });
  afterAll(async () => {
    await server?.close();
    await collector?.close();
  });

  it.skipIf(skip)('learns the model from the hello of the server that dialled in', async () => {
    const info = await collector.waitForServer(10_000);
    const config = server.model.weights.config;
    expect(info).toMatchObject({ modelId: server.model.name, dModel: config.dim, nLayers: config.nLayers });
    expect(info.hookPoints).toContain(HOOK);
    expect(collector.tapUrl).toMatch(/^ws:\/\/127\.0\.0\.1:\d+\/v1\/tap$/);
    // Plain HTTP on the tap's port gets a clear answer instead of a hang.
    const res = await fetch(collector.tapUrl.replace(/^ws:/, 'http:').replace(/\/v1\/tap$/, '/'));
    expect(res.status).toBe(404);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('SAEGATE_ERR_NOT_FOUND');
  });

  it.skipIf(skip)('yields every document in corpus order, one row per prompt token (BOS included) equal to the reference forward pass, with the tokenizer ids and pieces', async () => {
    const { docs, progress } = await collectAll(collector, corpus, { upstream: server.url, concurrency: 4 });
    const tokenizer = server.model.tokenizer!;
    const dModel = server.model.weights.config.dim;
    expect(docs.map((d) => d.id)).toEqual(corpus.map((d) => d.id));
    expect(docs.map((d) => d.index)).toEqual(corpus.map((_, i) => i));
    let worst = 0;
    let totalRows = 0;
    for (const [i, doc] of docs.entries()) {
      const ids = tokenizer.encode(corpus[i].text, { addBos: true });
      expect(Array.from(doc.tokenIds)).toEqual(ids);
      expect(doc).toMatchObject({ dModel, tokenCount: ids.length, promptTokens: ids.length });
      expect(doc.rows.length).toBe(ids.length * dModel);
      expect(doc.tokenTexts.join('')).toBe(tokenizer.decode(ids));
      const reference = referenceForward(server.model.weights, ids).hooks[HOOK];
      for (let p = 0; p < ids.length; p++) worst = Math.max(worst, maxAbsDiff(doc.rows.subarray(p * dModel, (p + 1) * dModel), reference[p]));
      totalRows += ids.length;
    }
    expect(worst).toBeLessThan(1e-4);
    expect(progress).toEqual({ documents: 20, rows: totalRows, skipped: 0, retried: 0 });
  });

  it.skipIf(skip)('keeps only the first maxTokensPerDocument positions of each document', async () => {
    const { docs } = await collectAll(collector, corpus.slice(1, 4), { upstream: server.url, maxTokensPerDocument: 5 });
    const tokenizer = server.model.tokenizer!;
    const dModel = server.model.weights.config.dim;
    for (const [i, doc] of docs.entries()) {
      const ids = tokenizer.encode(corpus[i + 1].text, { addBos: true });
      expect(doc.tokenCount).toBe(Math.min(5, ids.length));
      expect(doc.promptTokens).toBe(ids.length);
      expect(Array.from(doc.tokenIds)).toEqual(ids.slice(0, 5));
      expect(doc.rows.length).toBe(doc.tokenCount * dModel);
    }
  });

  it.skipIf(skip)('skips a document longer than the context and counts it, or fails naming it when told to', async () => {
    const documents = [corpus[0], { id: 'doc-long', text: TOO_LONG }, corpus[1]];
    const { docs, progress } = await collectAll(collector, documents, { upstream: server.url });
    expect(docs.map((d) => d.index)).toEqual([0, 2]);
    expect(progress).toMatchObject({ documents: 2, skipped: 1 });
    expect(logs.some((line) => line.includes("skipped document 'doc-long'"))).toBe(true);
    await expectSaegateRejection(
      () => collectAll(collector, documents, { upstream: server.url, tooLong: 'error' }),
      'SAEGATE_ERR_COLLECT_UPSTREAM',
      "document 'doc-long' (corpus index 1)",
      'HTTP 400 SAEGATE_ERR_CONTEXT_LENGTH',
      'maximum context length',
    );
  });

  it.skipIf(skip)('fails with the status and the OpenAI error of an upstream that refuses the requests', async () => {
    await expectSaegateRejection(
      () => collectAll(collector, corpus.slice(0, 2), { upstream: server.url, model: 'no-such-model' }),
      'SAEGATE_ERR_COLLECT_UPSTREAM',
      server.url,
      'HTTP 404 SAEGATE_ERR_MODEL_NOT_FOUND',
      "'no-such-model' does not exist",
    );
  });

  it.skipIf(skip)('fails with a typed error naming the upstream when it is down', async () => {
    const upstream = `http://127.0.0.1:${await closedPort()}`;
    await expectSaegateRejection(() => collectAll(collector, corpus.slice(0, 2), { upstream }), 'SAEGATE_ERR_COLLECT_UPSTREAM', upstream, 'no response', 'ECONNREFUSED');
  });
});

describe('collecting from a model server that cannot serve the collection', () => {
  it('rejects a hook the server does not offer, listing the ones it does', async () => {
    const collector = await ActivationCollector.start({ hook: 'blocks.7.hook_resid_post' });
    const server = await startModelServer({ model: SYNTHETIC, port: 0, tapUrl: collector.tapUrl });
    try {
      const error = await expectSaegateRejection(() => collector.waitForServer(10_000), 'SAEGATE_ERR_COLLECT_SERVER', "no hook point 'blocks.7.hook_resid_post'");
      for (const hook of ['blocks.0.hook_resid_pre', 'blocks.0.hook_resid_post', 'blocks.1.hook_resid_pre', 'blocks.1.hook_resid_post']) expect(error.message).toContain(hook);
      await expectSaegateRejection(() => collectAll(collector, corpus.slice(0, 1), { upstream: server.url }), 'SAEGATE_ERR_COLLECT_SERVER', 'blocks.7.hook_resid_post');
    } finally {
      await server.close();
      await collector.close();
    }
  });

  it('reports no server when none dials in, and when the upstream is not the server on the tap', async () => {
    const collector = await ActivationCollector.start({ hook: HOOK });
    // A second server that serves the API but is connected to nobody's tap.
    const elsewhere = await startModelServer({ model: SYNTHETIC, port: 0 });
    try {
      await expectSaegateRejection(() => collector.waitForServer(200), 'SAEGATE_ERR_COLLECT_NO_SERVER', collector.tapUrl, '200 ms');
      const onTap = await startModelServer({ model: SYNTHETIC, port: 0, tapUrl: collector.tapUrl });
      try {
        await expectSaegateRejection(
          () => collectAll(collector, corpus.slice(0, 1), { upstream: elsewhere.url, endTimeoutMs: 500 }),
          'SAEGATE_ERR_COLLECT_NO_SERVER',
          `requests sent to ${elsewhere.url} do not show up on the tap`,
          `--tap ${collector.tapUrl}`,
        );
      } finally {
        await onTap.close();
      }
    } finally {
      await elsewhere.close();
      await collector.close();
    }
  });
});

/** How the fake server treats the requests for one prompt text. */
interface FakeBehaviour {
  /** Answer HTTP first, then send the tap messages 30 ms later. */
  respondFirst?: boolean;
  /** Send the end first, the rows 20 ms later. */
  rowsAfterEnd?: boolean;
  /** Leave this position's row out ... */
  dropPosition?: number;
  /** ... on this many requests for the text (Infinity: always). */
  dropTimes?: number;
  /** Wait this long before doing anything. */
  delayMs?: number;
}

const FAKE_D = 8;
const FAKE_HOOKS = ['blocks.0.hook_resid_post', HOOK];

/** Byte tokens after BOS, like the synthetic tokenizer. */
function fakeTokens(text: string): number[] {
  return [1, ...Array.from(Buffer.from(text, 'utf8'), (b) => b + 3)];
}

/** Row values exactly representable in f16, so they survive the f16 frames bit for bit. */
function fakeValue(tokenId: number, position: number, d: number): number {
  return (tokenId % 16) + position / 4 + d / 8;
}

/** A minimal tap-speaking model server: node:http for the API, TapClient for the tap, f16 only. */
async function startFakeServer(tapUrl: string, behaviours: Map<string, FakeBehaviour>) {
  const client = new TapClient({
    url: tapUrl,
    hello: { modelId: 'fake', dModel: FAKE_D, nLayers: 2, hookPoints: FAKE_HOOKS, dtypes: ['f16'], canSteer: false },
  });
  const attempts = new Map<string, number>();
  /** Prompt texts in the order their requests arrived (probes included). */
  const requested: string[] = [];
  const sendTap = (requestId: string, ids: number[], dropped: number | null, rowsAfterEnd: boolean): void => {
    const P = ids.length;
    client.sendTokens({
      requestIds: Array.from({ length: P + 1 }, () => requestId),
      positions: Array.from({ length: P + 1 }, (_, p) => p),
      tokenIds: [...ids, 3 + 46],
      texts: [...ids.map((id) => (id === 1 ? '' : String.fromCharCode(id - 3))), '.'],
    });
    const positions = ids.map((_, p) => p).filter((p) => p !== dropped);
    const data = new Float32Array(positions.length * FAKE_D);
    positions.forEach((p, r) => {
      for (let d = 0; d < FAKE_D; d++) data[r * FAKE_D + d] = fakeValue(ids[p], p, d);
    });
    const rows = (): void => {
      client.sendActivations({ hook: HOOK, requestIds: positions.map(() => requestId), positions: Int32Array.from(positions), data });
    };
    const end = (): void => {
      client.sendEnd({ requestId, promptTokens: P, completionTokens: 1, finishReason: 'length' });
    };
    if (rowsAfterEnd) {
      end();
      setTimeout(rows, 20);
    } else {
      rows();
      end();
    }
  };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { prompt: string; max_tokens: number };
      const requestId = String(req.headers['x-request-id']);
      const text = body.prompt;
      const behaviour = behaviours.get(text) ?? {};
      const attempt = attempts.get(text) ?? 0;
      attempts.set(text, attempt + 1);
      requested.push(text);
      const ids = fakeTokens(text);
      const dropped = behaviour.dropPosition !== undefined && attempt < (behaviour.dropTimes ?? 0) ? behaviour.dropPosition : null;
      const respond = (): void => {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ choices: [{ index: 0, text: '.', finish_reason: 'length' }] }));
      };
      setTimeout(() => {
        if (behaviour.respondFirst === true) {
          respond();
          setTimeout(() => sendTap(requestId, ids, dropped, behaviour.rowsAfterEnd === true), 30);
        } else {
          sendTap(requestId, ids, dropped, behaviour.rowsAfterEnd === true);
          respond();
        }
      }, behaviour.delayMs ?? 0);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  client.start();
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requested,
    async close() {
      await client.close();
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** The rows the fake server sends for `text`, as the collector should return them. */
function fakeRows(text: string): Float32Array {
  const ids = fakeTokens(text);
  const rows = new Float32Array(ids.length * FAKE_D);
  ids.forEach((id, p) => {
    for (let d = 0; d < FAKE_D; d++) rows[p * FAKE_D + d] = fakeValue(id, p, d);
  });
  return rows;
}

describe('collecting from a tap-speaking server that is not the reference one', () => {
  const texts = Array.from({ length: 12 }, (_, i) => `document number ${i} ${'x'.repeat(i)}`);
  const behaviours = new Map<string, FakeBehaviour>([
    [texts[0], { delayMs: 120 }],
    [texts[1], { respondFirst: true, delayMs: 60 }],
    [texts[2], { rowsAfterEnd: true }],
    [texts[3], { respondFirst: true, rowsAfterEnd: true }],
    [texts[4], { dropPosition: 1, dropTimes: 1 }],
    [texts[11], { delayMs: 40 }],
    ['always loses a row', { dropPosition: 3, dropTimes: Infinity }],
  ]);
  let collector: ActivationCollector;
  let fake: Awaited<ReturnType<typeof startFakeServer>>;
  const logs: string[] = [];

  beforeAll(async () => {
    collector = await ActivationCollector.start({ hook: HOOK, log: (line) => logs.push(line) });
    fake = await startFakeServer(collector.tapUrl, behaviours);
  });
  afterAll(async () => {
    await fake?.close();
    await collector?.close();
  });

  it('waits for rows that come after the HTTP response or after the end, converts f16 rows, retries a lossy document, and yields in corpus order', async () => {
    const documents = texts.map((text, i) => ({ id: `fake-${i}`, text }));
    const concurrency = 3;
    const docs: CollectedDocument[] = [];
    let progress: CollectProgress | null = null;
    for await (const doc of collector.collect(documents, { upstream: fake.url, concurrency, rowGraceMs: 300, onProgress: (p) => (progress = p) })) {
      // Never more than `concurrency` documents launched past the ones already yielded.
      const launched = new Set(fake.requested.filter((t) => t !== 'Hello')).size;
      expect(launched).toBeLessThanOrEqual(docs.length + concurrency);
      docs.push(doc);
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(docs.map((d) => d.id)).toEqual(documents.map((d) => d.id));
    for (const [i, doc] of docs.entries()) {
      expect(doc.dModel).toBe(FAKE_D);
      expect(Array.from(doc.rows)).toEqual(Array.from(fakeRows(texts[i])));
      expect(Array.from(doc.tokenIds)).toEqual(fakeTokens(texts[i]));
      expect(doc.tokenTexts.join('')).toBe(texts[i]);
    }
    // The lossy document went twice; every other one once.
    expect(fake.requested.filter((t) => t === texts[4])).toHaveLength(2);
    expect(fake.requested.filter((t) => t === texts[5])).toHaveLength(1);
    expect(progress).toMatchObject({ documents: 12, retried: 1, skipped: 0 });
    expect(logs.some((line) => line.includes("'fake-4'") && line.includes('1 of') && line.includes('retrying'))).toBe(true);
  });

  it('fails with a typed error naming the document when its retry is incomplete too, never yielding it', async () => {
    const documents = [
      { id: 'fine', text: texts[5] },
      { id: 'lossy', text: 'always loses a row' },
      { id: 'after', text: texts[6] },
    ];
    const yielded: string[] = [];
    await expectSaegateRejection(
      async () => {
        for await (const doc of collector.collect(documents, { upstream: fake.url, rowGraceMs: 100 })) yielded.push(doc.id);
      },
      'SAEGATE_ERR_COLLECT_INCOMPLETE',
      "document 'lossy'",
      `1 of ${fakeTokens('always loses a row').length} prompt rows missing (first at position 3)`,
    );
    expect(yielded).toEqual(['fine']);
  });

  it('stops at once when the signal aborts, with the signal reason', async () => {
    const controller = new AbortController();
    const documents = texts.map((text, i) => ({ id: `abort-${i}`, text }));
    const reason = new Error('stop now');
    const seen: string[] = [];
    let caught: unknown = null;
    try {
      for await (const doc of collector.collect(documents, { upstream: fake.url, signal: controller.signal })) {
        seen.push(doc.id);
        if (seen.length === 2) controller.abort(reason);
      }
    } catch (error) {
      caught = error;
    }
    expect(caught).toBe(reason);
    expect(seen).toEqual(['abort-0', 'abort-1']);
  });
});
