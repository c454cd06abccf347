/**
 * The activation flow end to end: client → saegate proxy → reference model server, whose tap
 * streams residual rows back to saegate, where the SAE sink batches and encodes them in worker
 * threads and hands results to subscribers tagged with request id and position.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startModelServer, type ModelServer } from '../../src/model/server.js';
import { startProxy, type ProxyServer } from '../../src/proxy/server.js';
import type { SaeResultBatch } from '../../src/sae/batcher.js';
import { SaeSink } from '../../src/sae/sink.js';
import type { SaeWeights } from '../../src/sae/types.js';
import { seededStandardSae } from '../helpers/sae.js';
import { freePort } from '../helpers/ports.js';
import { waitFor } from '../helpers/wait.js';

const HOOK = 'blocks.1.hook_resid_post';
const D_MODEL = 64;
const D_SAE = 256;

function syntheticSae(): SaeWeights {
  return seededStandardSae({ dIn: D_MODEL, dSae: D_SAE, hook: HOOK, seed: 42, scales: { W_enc: 0.5, b_enc: 0.1, W_dec: 0.5, b_dec: 0.1 } });
}

describe('proxy → model server → tap → SAE', () => {
  let model: ModelServer;
  let proxy: ProxyServer;
  let sink: SaeSink;
  const results: SaeResultBatch[] = [];

  beforeAll(async () => {
    sink = await SaeSink.create({ saes: [syntheticSae()], topK: 16 });
    sink.onResult((batch) => results.push(batch));
    const port = await freePort();
    model = await startModelServer({ model: `synthetic:dim=${D_MODEL},layers=2,heads=4,kv=2,hidden=128,vocab=300,ctx=256,seed=3`, port: 0, tapUrl: `ws://127.0.0.1:${port}/v1/tap` });
    proxy = await startProxy({ upstream: model.url, port, sink });
    proxy.tap.subscribeAll({ hooks: sink.hooks, dtype: 'f16', includePrompt: true });
    await waitFor('the model server connected to the proxy\'s tap and subscribed', () => proxy.tap.server.connections.length > 0 && model.tap!.client.subscription !== null);
  });
  afterAll(async () => {
    await proxy?.close({ timeoutMs: 500 });
    await model?.close();
    await sink?.close();
  });

  it('returns encoded rows of two concurrent requests tagged with their ids and positions, in order per request', async () => {
    const ask = (id: string, prompt: string) =>
      fetch(`${proxy.url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-request-id': id },
        body: JSON.stringify({ model: 'synthetic', prompt, max_tokens: 12, temperature: 0 }),
      }).then(async (res) => ({ status: res.status, body: (await res.json()) as { usage: { prompt_tokens: number; completion_tokens: number } } }));
    const [a, b] = await Promise.all([ask('req-a', 'hello there'), ask('req-b', 'a longer prompt for the second request')]);
    expect([a.status, b.status]).toEqual([200, 200]);
    const expectedRows = (r: typeof a) => r.body.usage.prompt_tokens + r.body.usage.completion_tokens - 1;
    const rowsOf = (id: string) => {
      const positions: number[] = [];
      for (const batch of results) batch.rowRequestIndexes.forEach((k, i) => batch.requestIds[k] === id && positions.push(batch.positions[i]));
      return positions;
    };
    await waitFor('every fed row of req-a and req-b encoded', () => rowsOf('req-a').length >= expectedRows(a) && rowsOf('req-b').length >= expectedRows(b), {
      observed: () => ({ 'req-a': rowsOf('req-a').length, 'req-b': rowsOf('req-b').length, expected: [expectedRows(a), expectedRows(b)] }),
    });
    // Every fed position of each request, once, in order.
    expect(rowsOf('req-a')).toEqual(Array.from({ length: expectedRows(a) }, (_, i) => i));
    expect(rowsOf('req-b')).toEqual(Array.from({ length: expectedRows(b) }, (_, i) => i));
    expect(new Set(results.flatMap((batch) => batch.requestIds))).toEqual(new Set(['req-a', 'req-b']));
    // The features are real encoder output: ordered by value, valid indices, L0 consistent.
    for (const batch of results) {
      expect(batch.hook).toBe(HOOK);
      for (let r = 0; r < batch.rowCount; r++) {
        const values = Array.from(batch.values.subarray(r * batch.topK, (r + 1) * batch.topK));
        const indices = Array.from(batch.indices.subarray(r * batch.topK, (r + 1) * batch.topK));
        expect(batch.l0[r]).toBeGreaterThan(0);
        expect(values).toEqual([...values].sort((x, y) => y - x));
        for (const [k, index] of indices.entries()) expect(index === -1 ? values[k] === 0 : index >= 0 && index < D_SAE).toBe(true);
        expect(batch.fvu[r]).toBeGreaterThan(0);
      }
    }
    const stats = sink.stats()[HOOK];
    expect(stats.batcher.rowsDropped.queue_full).toBe(0);
    expect(stats.batcher.rowsEncoded).toBe(expectedRows(a) + expectedRows(b));
  });
});
