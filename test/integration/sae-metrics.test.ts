/**
 * The SAE pipeline's metrics on a running saegate: real TapClients stream rows, tokens and an end
 * to `startProxy` with an SaeSink on the proxy's registry, and `/metrics` is scraped over HTTP.
 * Also checks the tokens on the result rows and that docs/metrics.md lists exactly what a proxy
 * with SAEs exports.
 */
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { seededUniform } from '../../src/common/random.js';
import { startProxy, type ProxyServer } from '../../src/proxy/server.js';
import type { SaeResultBatch } from '../../src/sae/batcher.js';
import { SaeSink } from '../../src/sae/sink.js';
import type { SaeWeights } from '../../src/sae/types.js';
import { TapClient } from '../../src/tap/client.js';
import type { HelloInfo } from '../../src/tap/messages.js';
import { documentedMetrics } from '../helpers/metrics-doc.js';
import { seededStandardSae } from '../helpers/sae.js';
import { waitFor } from '../helpers/wait.js';

const HOOK = 'blocks.0.hook_resid_post';
const D_IN = 16;
const D_SAE = 64;
const BATCH_ROWS = 4;

function syntheticSae(): SaeWeights {
  return seededStandardSae({ dIn: D_IN, dSae: D_SAE, hook: HOOK, seed: 5, scales: { W_enc: 1, b_enc: 0.2, W_dec: 0.5, b_dec: 0.1 } });
}

describe('SAE metrics on /metrics', () => {
  let proxy: ProxyServer;
  let sink: SaeSink;
  const clients: TapClient[] = [];
  const results: SaeResultBatch[] = [];

  async function connect(dModel: number): Promise<TapClient> {
    const hello: HelloInfo = { modelId: 'tiny', dModel, nLayers: 1, hookPoints: [HOOK], dtypes: ['f32', 'f16'], canSteer: false };
    const client = new TapClient({ url: proxy.tapUrl, hello, reconnect: { initialDelayMs: 10 } });
    clients.push(client);
    client.start();
    await waitFor('the tap client connected and subscribed', () => client.connected && client.subscription !== null);
    return client;
  }

  beforeAll(async () => {
    const registry = new Registry();
    // A long deadline: batches leave only when full, so the batch count is exact.
    sink = await SaeSink.create({ saes: [syntheticSae()], topK: 4, maxBatchRows: BATCH_ROWS, maxDelayMs: 60_000, registry });
    sink.onResult((batch) => results.push(batch));
    proxy = await startProxy({ upstream: 'http://127.0.0.1:9', port: 0, sink, registry, logger: false });
    proxy.tap.subscribeAll({ hooks: sink.hooks, dtype: 'f16', includePrompt: true });
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await proxy?.close({ timeoutMs: 500 });
    await sink?.close();
  });

  it('exports rows, drops by reason, batches, latencies and the queue of each SAE after rows went through', async () => {
    const model = await connect(D_IN);
    // A second model server whose rows are narrower than the SAE: refused as bad_width.
    const narrow = await connect(D_IN / 2);
    const u = seededUniform(9);
    // Tokens for positions 0..9; rows for 0..11 (the last two without a token).
    const tokenPositions = Array.from({ length: 10 }, (_, p) => p);
    expect(model.sendTokens({ requestIds: tokenPositions.map(() => 'req-1'), positions: tokenPositions, tokenIds: tokenPositions.map((p) => 500 + p), texts: tokenPositions.map((p) => `w${p}`) })).toBe(true);
    for (let start = 0; start < 12; start += BATCH_ROWS) {
      const positions = Int32Array.from({ length: BATCH_ROWS }, (_, i) => start + i);
      const data = Float32Array.from({ length: BATCH_ROWS * D_IN }, () => 2 * u() - 1);
      expect(model.sendActivations({ hook: HOOK, requestIds: Array<string>(BATCH_ROWS).fill('req-1'), positions, data })).toBe(true);
    }
    expect(model.sendEnd({ requestId: 'req-1', promptTokens: 5, completionTokens: 8, finishReason: 'length' })).toBe(true);
    expect(narrow.sendActivations({ hook: HOOK, requestIds: ['req-2', 'req-2', 'req-2'], positions: Int32Array.of(0, 1, 2), data: new Float32Array(3 * (D_IN / 2)).fill(0.5) })).toBe(true);
    await waitFor('12 encoded rows and 3 rejected ones', () => results.reduce((n, b) => n + b.rowCount, 0) === 12 && sink.rowsRejected === 3);

    // Each batch names its one request once, and every row points at it.
    expect(results.map((b) => [b.requestIds, Array.from(new Set(b.rowRequestIndexes))])).toEqual(results.map(() => [['req-1'], [0]]));
    // The rows carry their tokens; the ended request's table is gone once its rows are out.
    const tokens = results.flatMap((b) => Array.from(b.positions, (p, r) => `${p}:${b.tokenIds[r]}:${b.tokenTexts[r]}`));
    expect(tokens).toEqual(Array.from({ length: 12 }, (_, p) => (p < 10 ? `${p}:${500 + p}:w${p}` : `${p}:-1:`)));
    expect(sink.tokenRequests).toBe(0);

    const res = await fetch(`${proxy.url}/metrics`);
    expect(res.status).toBe(200);
    const text = await res.text();
    const value = (series: string): number | undefined => {
      const line = text.split('\n').find((l) => l.startsWith(`${series} `));
      return line === undefined ? undefined : Number(line.slice(series.length + 1));
    };
    const on = `{hook="${HOOK}"}`;
    expect(value(`saegate_sae_rows_total${on}`)).toBe(15);
    expect(value(`saegate_sae_rows_encoded_total${on}`)).toBe(12);
    const dropped = Object.fromEntries(['queue_full', 'sampled', 'worker_exited', 'encode_failed', 'bad_width'].map((reason) => [reason, value(`saegate_sae_rows_dropped_total{hook="${HOOK}",reason="${reason}"}`)]));
    expect(dropped).toEqual({ queue_full: 0, sampled: 0, worker_exited: 0, encode_failed: 0, bad_width: 3 });
    expect(value(`saegate_sae_batches_total${on}`)).toBe(3);
    expect(value(`saegate_sae_batch_rows_count${on}`)).toBe(3);
    expect(value(`saegate_sae_batch_rows_sum${on}`)).toBe(12);
    expect(value(`saegate_sae_batch_rows_bucket{le="2",hook="${HOOK}"}`)).toBe(0);
    expect(value(`saegate_sae_batch_rows_bucket{le="4",hook="${HOOK}"}`)).toBe(3);
    expect(value(`saegate_sae_encode_seconds_count${on}`)).toBe(3);
    expect(value(`saegate_sae_encode_seconds_sum${on}`)).toBeGreaterThan(0);
    expect(value(`saegate_sae_result_latency_seconds_count${on}`)).toBe(3);
    // Latency covers the time with the pool, and more (batching, delivery).
    expect(value(`saegate_sae_result_latency_seconds_sum${on}`)).toBeGreaterThanOrEqual(value(`saegate_sae_encode_seconds_sum${on}`)!);
    expect(value(`saegate_sae_queued_rows${on}`)).toBe(0);
    expect(value(`saegate_sae_worker_restarts_total${on}`)).toBe(0);
    // The tap's view of the same rows.
    expect(value('saegate_tap_rows_total')).toBe(15);
    expect(value('saegate_tap_rows_dropped_total{reason="sink"}')).toBe(3);

    // With SAEs, /metrics and docs/metrics.md list the same saegate_* names, the proxy's and the SAE pipeline's.
    const exported = new Set([...text.matchAll(/^# TYPE (saegate_\w+) /gm)].map((m) => m[1]));
    const documented = documentedMetrics('Requests', 'Tap', 'SAE pipeline');
    expect([...exported].sort()).toEqual([...documented].sort());
  });
});
