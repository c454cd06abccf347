/**
 * The activation path's diagnostics channels on a running saegate: a real TapClient streams a
 * frame to `startProxy` with an SaeSink (real worker pool), and subscribers of
 * `saegate:tap:frame`, `saegate:sae:batch-sent` and `saegate:sae:batch-settled` see one event each,
 * in that order, with the frame's and the batch's numbers; with no subscriber nothing is published.
 */
import diagnostics from 'node:diagnostics_channel';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { DIAGNOSTICS_CHANNELS, SAE_BATCH_SENT_CHANNEL, SAE_BATCH_SETTLED_CHANNEL, TAP_FRAME_CHANNEL } from '../../src/common/diagnostics.js';
import { seededUniform } from '../../src/common/random.js';
import { startProxy, type ProxyServer } from '../../src/proxy/server.js';
import type { SaeBatchSentEvent, SaeBatchSettledEvent, SaeResultBatch } from '../../src/sae/batcher.js';
import { SaeSink } from '../../src/sae/sink.js';
import { TapClient } from '../../src/tap/client.js';
import type { HelloInfo } from '../../src/tap/messages.js';
import type { TapFrameEvent } from '../../src/tap/server.js';
import { seededStandardSae } from '../helpers/sae.js';

const HOOK = 'blocks.0.hook_resid_post';
const D_IN = 16;
/** Rows per frame and per batch: a frame fills one batch, which leaves at once (no deadline). */
const ROWS = 6;

describe('diagnostics channels on the activation path', () => {
  let proxy: ProxyServer;
  let sink: SaeSink;
  let client: TapClient;
  let sessionId: string;
  const results: SaeResultBatch[] = [];

  beforeAll(async () => {
    const sae = seededStandardSae({ dIn: D_IN, dSae: 64, hook: HOOK, seed: 7, scales: { W_enc: 1, b_enc: 0.2, W_dec: 0.5, b_dec: 0.1 } });
    sink = await SaeSink.create({ saes: [sae], topK: 4, maxBatchRows: ROWS, maxDelayMs: 60_000 });
    sink.onResult((batch) => results.push(batch));
    proxy = await startProxy({ upstream: 'http://127.0.0.1:9', port: 0, sink, logger: false });
    proxy.tap.subscribeAll({ hooks: sink.hooks, dtype: 'f32', includePrompt: true });
    const hello: HelloInfo = { modelId: 'tiny', dModel: D_IN, nLayers: 1, hookPoints: [HOOK], dtypes: ['f32', 'f16'], canSteer: false };
    client = new TapClient({ url: proxy.tapUrl, hello, reconnect: { initialDelayMs: 10 } });
    const subscribed = new Promise<void>((resolve) => client.once('subscribe', () => resolve()));
    const connected = new Promise<string>((resolve) => client.once('connected', (session) => resolve(session.sessionId)));
    client.start();
    [sessionId] = await Promise.all([connected, subscribed]);
  });
  afterAll(async () => {
    await client?.close();
    await proxy?.close({ timeoutMs: 500 });
    await sink?.close();
  });

  /** Sends one frame of ROWS rows (requests a, b, a, b, …) and resolves once its batch was delivered. */
  async function sendFrame(firstPosition: number): Promise<void> {
    const u = seededUniform(firstPosition + 1);
    const delivered = results.length + 1;
    const done = new Promise<void>((resolve) => {
      const off = sink.onResult(() => {
        if (results.length >= delivered) {
          off();
          resolve();
        }
      });
    });
    const ok = client.sendActivations({
      hook: HOOK,
      requestIds: Array.from({ length: ROWS }, (_, i) => (i % 2 === 0 ? 'a' : 'b')),
      positions: Int32Array.from({ length: ROWS }, (_, i) => firstPosition + (i >> 1)),
      data: Float32Array.from({ length: ROWS * D_IN }, () => 2 * u() - 1),
    });
    expect(ok).toBe(true);
    await done;
  }

  it('publishes nothing, not even a call to publish, while no channel has a subscriber', async () => {
    const spies = DIAGNOSTICS_CHANNELS.map((name) => {
      expect(diagnostics.hasSubscribers(name)).toBe(false);
      return vi.spyOn(diagnostics.channel(name), 'publish');
    });
    try {
      await sendFrame(0);
      expect(results).toHaveLength(1);
      expect(spies.map((spy) => spy.mock.calls.length)).toEqual([0, 0, 0]);
    } finally {
      for (const spy of spies) spy.mockRestore();
    }
  });

  it('tells subscribers about the frame, the batch sent and the batch settled, in that order, with rows, hook, batch size and durations', async () => {
    const seen: [string, unknown][] = [];
    const listeners = DIAGNOSTICS_CHANNELS.map((name) => {
      const listener = (message: unknown): void => void seen.push([name, message]);
      diagnostics.subscribe(name, listener);
      return [name, listener] as const;
    });
    try {
      await sendFrame(10);
    } finally {
      for (const [name, listener] of listeners) diagnostics.unsubscribe(name, listener);
    }
    expect(seen.map(([name]) => name)).toEqual([TAP_FRAME_CHANNEL, SAE_BATCH_SENT_CHANNEL, SAE_BATCH_SETTLED_CHANNEL]);
    const frame = seen[0][1] as TapFrameEvent;
    expect({ ...frame, frame: undefined }).toEqual({
      sessionId,
      hook: HOOK,
      dtype: 'f32',
      dModel: D_IN,
      rowCount: ROWS,
      requestCount: 2,
      byteLength: frame.byteLength,
      droppedRowsSinceLastFrame: 0,
      frame: undefined,
    });
    // At least the rows' bytes were on the wire.
    expect(frame.byteLength).toBeGreaterThan(ROWS * D_IN * 4);
    expect(frame.frame.requestIds).toEqual(['a', 'b']);
    expect(Array.from(frame.frame.positions)).toEqual([10, 10, 11, 11, 12, 12]);
    // The second batch of this SAE (the first test's was number 0); nothing else was queued.
    expect(seen[1][1]).toEqual({ hook: HOOK, batchSeq: 1, rowCount: ROWS, requestCount: 2, inFlight: 1, queuedRows: 0 } satisfies SaeBatchSentEvent);
    const settled = seen[2][1] as SaeBatchSettledEvent;
    expect({ ...settled, encodeSeconds: 0, latencySeconds: 0 }).toEqual({ hook: HOOK, batchSeq: 1, rowCount: ROWS, requestCount: 2, ok: true, dropReason: null, encodeSeconds: 0, latencySeconds: 0 });
    expect(settled.encodeSeconds).toBeGreaterThan(0);
    // Latency runs from the first row pushed, before the batch was sent: it holds the encode time.
    expect(settled.latencySeconds).toBeGreaterThanOrEqual(settled.encodeSeconds);
    // Unsubscribed again: the next frame reaches no listener.
    await sendFrame(20);
    expect(seen).toHaveLength(3);
    expect(results).toHaveLength(3);
  });
});
