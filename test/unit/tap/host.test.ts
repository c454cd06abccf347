/**
 * TapHost against real TapClients over a real WebSocket: rows from several model-server connections
 * routed by request id, the subscription kept on every connection, plans and plan updates sent to
 * the connections that can apply them, and a sink that admits only some connections. Every test
 * builds its own host, port and clients.
 */
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { TapClient, type ResolvedPlan } from '../../../src/tap/client.js';
import { vectorId } from '../../../src/tap/codec.js';
import { TapHost, type SteeringTerm } from '../../../src/tap/host.js';
import type { Hello, HelloInfo, Subscription } from '../../../src/tap/messages.js';
import type { ActivationsFrame } from '../../../src/tap/server.js';
import { CountingSink, type ActivationSink, type SubscribeResult, type TapSource } from '../../../src/tap/sink.js';

const HOOKS = ['blocks.0.hook_resid_post', 'blocks.1.hook_resid_post'];

/** Polls `predicate` until it holds; fails naming `what` after `timeoutMs`. */
async function waitFor(what: string, predicate: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

function hello(overrides: Partial<HelloInfo> = {}): HelloInfo {
  return { modelId: 'tiny', dModel: 4, nLayers: 2, hookPoints: HOOKS, dtypes: ['f32', 'f16'], canSteer: true, ...overrides };
}

function rows(requestIds: string[], hook = HOOKS[1]) {
  return { hook, requestIds, positions: Int32Array.from(requestIds.map((_, i) => i)), data: new Float32Array(requestIds.length * 4).fill(0.5) };
}

function term(vector: Float32Array, overrides: Partial<SteeringTerm> = {}): SteeringTerm {
  return { hook: HOOKS[1], vector, scale: 1, fromPosition: 0, untilPosition: null, ...overrides };
}

interface Rig {
  host: TapHost;
  connect(info: HelloInfo): Promise<TapClient>;
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A host on its own port 0 HTTP server, and a way to connect clients to it (closed after the test). */
async function rig(sink: ActivationSink = new CountingSink()): Promise<Rig> {
  const host = new TapHost({ sink, token: null });
  const httpServer = http.createServer();
  host.attach(httpServer);
  await new Promise<void>((r) => httpServer.listen(0, '127.0.0.1', r));
  const url = `ws://127.0.0.1:${(httpServer.address() as AddressInfo).port}/v1/tap`;
  cleanups.push(async () => {
    await host.close(100);
    await new Promise((r) => httpServer.close(r));
  });
  return {
    host,
    async connect(info) {
      const accepted = host.server.nextConnection();
      const client = new TapClient({ url, hello: info, reconnect: { initialDelayMs: 10 } });
      cleanups.push(() => client.close());
      client.start();
      await accepted;
      await waitFor('the client to see its welcome', () => client.connected);
      return client;
    },
  };
}

/** Sends one row for `requestId` from `client` and waits until the host has routed it. */
async function serve(host: TapHost, client: TapClient, requestId: string): Promise<void> {
  await waitFor('a subscription on the client', () => client.subscription !== null);
  expect(client.sendActivations(rows([requestId]))).toBe(true);
  await waitFor(`request ${requestId} to be routed`, () => host.connectionFor(requestId) !== undefined);
}

describe('TapHost', () => {
  it('keeps the subscription on every connection, later ones included, limited to the hooks each offers', async () => {
    const { host, connect } = await rig();
    const a = await connect(hello({ serverId: 'a' }));
    const subscription: Subscription = { hooks: HOOKS, dtype: 'f32', includePrompt: true };
    expect(host.subscribeAll(subscription)).toEqual([{ sessionId: a.sessionId, modelId: 'tiny', hooks: HOOKS }]);
    const b = await connect(hello({ serverId: 'b', hookPoints: [HOOKS[1]] }));
    await waitFor('both subscriptions', () => a.subscription !== null && b.subscription !== null);
    expect(a.subscription).toEqual(subscription);
    expect(b.subscription).toEqual({ hooks: [HOOKS[1]], dtype: 'f32', includePrompt: true });
    expect(host.currentSubscription).toEqual(subscription);
    // A longer delay for the model servers travels with the subscription, to every connection.
    host.subscribeAll({ ...subscription, maxDelayMs: 50 });
    await waitFor('the relaxed subscriptions', () => a.subscription?.maxDelayMs === 50 && b.subscription?.maxDelayMs === 50);
    expect(b.subscription).toEqual({ hooks: [HOOKS[1]], dtype: 'f32', includePrompt: true, maxDelayMs: 50 });
  });

  it('gives each connection the first dtype it offers from a preference list, and reports a connection that offers none', async () => {
    const { host, connect } = await rig();
    const both = await connect(hello({ serverId: 'both' }));
    const halfOnly = await connect(hello({ serverId: 'half', dtypes: ['f16'] }));
    const results = host.subscribeAll({ hooks: [HOOKS[0]], dtype: ['f32', 'f16'], includePrompt: false });
    expect(results).toEqual([
      { sessionId: both.sessionId, modelId: 'tiny', hooks: [HOOKS[0]], dtype: 'f32' },
      { sessionId: halfOnly.sessionId, modelId: 'tiny', hooks: [HOOKS[0]], dtype: 'f16' },
    ]);
    await waitFor('both subscriptions', () => both.subscription !== null && halfOnly.subscription !== null);
    expect(both.subscription?.dtype).toBe('f32');
    expect(halfOnly.subscription?.dtype).toBe('f16');
    const [single] = host.subscribeAll({ hooks: [HOOKS[0]], dtype: 'f32', includePrompt: false }).filter((r) => r.sessionId === halfOnly.sessionId);
    expect(single.hooks).toEqual([]);
    expect(single.error).toMatch(/dtype f32 not offered/);
  });

  it('routes rows from several connections to the sink by request id and learns who serves each request', async () => {
    const sink = new CountingSink();
    const { host, connect } = await rig(sink);
    host.subscribeAll({ hooks: HOOKS, dtype: 'f32', includePrompt: true });
    const a = await connect(hello({ serverId: 'a' }));
    const b = await connect(hello({ serverId: 'b' }));
    await waitFor('both subscriptions', () => a.subscription !== null && b.subscription !== null);
    expect(a.sendActivations(rows(['req-a', 'req-a', 'req-shared']))).toBe(true);
    expect(b.sendActivations(rows(['req-b']))).toBe(true);
    expect(a.sendActivations(rows(['req-a'], HOOKS[0]))).toBe(true);
    await waitFor('five rows at the sink', () => sink.rows === 5);
    expect(sink.request('req-a')).toMatchObject({ rows: 3, sessionId: a.sessionId });
    expect(sink.request('req-a')!.rowsByHook).toEqual(new Map([[HOOKS[1], 2], [HOOKS[0], 1]]));
    expect(sink.request('req-b')).toMatchObject({ rows: 1, sessionId: b.sessionId });
    expect(host.connectionFor('req-a')?.sessionId).toBe(a.sessionId);
    expect(host.connectionFor('req-b')?.sessionId).toBe(b.sessionId);
    expect(host.connectionFor('req-unknown')).toBeUndefined();
  });

  it('forgets a request’s connection at its end and hands the end to the sink', async () => {
    const sink = new CountingSink();
    const { host, connect } = await rig(sink);
    host.subscribeAll({ hooks: HOOKS, dtype: 'f32', includePrompt: true });
    const b = await connect(hello());
    await serve(host, b, 'req-b');
    b.sendEnd({ requestId: 'req-b', promptTokens: 1, completionTokens: 1, finishReason: 'stop' });
    await waitFor('the end at the sink', () => sink.request('req-b')?.end !== null);
    expect(sink.request('req-b')!.end).toEqual({ requestId: 'req-b', promptTokens: 1, completionTokens: 1, finishReason: 'stop' });
    expect(host.connectionFor('req-b')).toBeUndefined();
  });

  it('sends a new request’s plan, vectors first, to every connection able to apply it', async () => {
    const { host, connect } = await rig();
    const a = await connect(hello({ serverId: 'a' }));
    const b = await connect(hello({ serverId: 'b' }));
    const planId = host.deliverPlan('req-new', [term(Float32Array.from([1, 2, 3, 4]), { scale: -2 })]);
    expect(planId).toMatch(/^plan-[0-9a-f]{8}-[0-9a-z]+$/);
    const [planA, planB] = await Promise.all([a.waitForPlan(planId!), b.waitForPlan(planId!)]);
    for (const plan of [planA, planB]) {
      expect(plan).toMatchObject({ requestId: 'req-new', planId, entries: [{ hook: HOOKS[1], scale: -2, fromPosition: 0, untilPosition: null }] });
      expect([...plan.entries[0].vector]).toEqual([1, 2, 3, 4]);
    }
  });

  it('sends a plan only to the connection serving the request once it is known', async () => {
    const { host, connect } = await rig();
    host.subscribeAll({ hooks: HOOKS, dtype: 'f32', includePrompt: true });
    const a = await connect(hello({ serverId: 'a' }));
    await connect(hello({ serverId: 'b' }));
    await serve(host, a, 'req-a');
    const vector = Float32Array.from([5, 6, 7, 8]);
    const planId = host.deliverPlan('req-a', [term(vector, { fromPosition: 3, untilPosition: 9 })]);
    expect(planId).not.toBeNull();
    expect((await a.waitForPlan(planId!)).entries[0].untilPosition).toBe(9);
    const [connA, connB] = host.connections;
    expect(connA.sessionId).toBe(a.sessionId);
    // The vector went down with the plan to the serving connection only.
    expect(connA.hasVector(vectorId(vector))).toBe(true);
    expect(connB.hasVector(vectorId(vector))).toBe(false);
  });

  it('sends no plan where it cannot be applied and says so with null', async () => {
    const { host, connect } = await rig();
    await connect(hello({ modelId: 'observer', canSteer: false }));
    expect(host.deliverPlan('req-w', [term(new Float32Array(4))])).toBeNull();
    await connect(hello({ serverId: 'steers' }));
    expect(host.deliverPlan('req-x', [term(Float32Array.from([1, 2, 3]))])).toBeNull();
    expect(host.deliverPlan('req-y', [term(new Float32Array(4), { hook: 'blocks.9.hook_resid_post' })])).toBeNull();
    expect(host.deliverPlan('req-z', [term(new Float32Array(4))])).not.toBeNull();
  });

  it("sends span terms ('prompt', 'generated') only to servers whose hello says relativeSpans, and carries the span", async () => {
    const { host, connect } = await rig();
    await connect(hello({ serverId: 'old' }));
    const generated = term(new Float32Array(4), { span: 'generated' });
    expect(host.deliverPlan('req-old', [generated])).toBeNull();
    const spans = await connect(hello({ serverId: 'spans', relativeSpans: true }));
    const received = once(spans, 'plan') as Promise<[ResolvedPlan]>;
    expect(host.deliverPlan('req-new', [generated])).not.toBeNull();
    const [plan] = await received;
    expect(plan.entries).toMatchObject([{ span: 'generated', fromPosition: 0, untilPosition: null }]);
    // An absolute term still goes anywhere.
    expect(host.deliverPlan('req-abs', [term(new Float32Array(4))])).not.toBeNull();
  });

  it('sends a plan update to the connection serving the request only, vectors first', async () => {
    const { host, connect } = await rig();
    host.subscribeAll({ hooks: HOOKS, dtype: 'f32', includePrompt: true });
    const a = await connect(hello({ serverId: 'a' }));
    const b = await connect(hello({ serverId: 'b' }));
    await serve(host, b, 'req-running');
    const updates: ResolvedPlan[] = [];
    a.on('planUpdate', (update) => updates.push(update));
    const received = once(b, 'planUpdate') as Promise<[ResolvedPlan]>;
    const result = host.planUpdate('req-running', [term(Float32Array.from([0, 1, 0, 1]), { scale: 3, fromPosition: 5 })]);
    expect(result).toEqual({ delivered: true, planId: expect.stringMatching(/^plan-[0-9a-f]{8}-[0-9a-z]+$/), sessionId: b.sessionId });
    const [update] = await received;
    expect(update).toMatchObject({ requestId: 'req-running', planId: result.delivered ? result.planId : '', entries: [{ hook: HOOKS[1], scale: 3, fromPosition: 5 }] });
    expect([...update.entries[0].vector]).toEqual([0, 1, 0, 1]);
    expect(updates).toEqual([]);
  });

  it('returns SAEGATE_ERR_TAP_UNROUTED for a plan update before the request’s first frame and after its end', async () => {
    const { host, connect } = await rig();
    host.subscribeAll({ hooks: HOOKS, dtype: 'f32', includePrompt: true });
    const a = await connect(hello());
    const before = host.planUpdate('req-later', [term(new Float32Array(4))]);
    expect(before.delivered).toBe(false);
    if (!before.delivered) expect(before.error).toMatchObject({ code: 'SAEGATE_ERR_TAP_UNROUTED', message: expect.stringContaining("request 'req-later'") });
    await serve(host, a, 'req-later');
    a.sendEnd({ requestId: 'req-later', promptTokens: 1, completionTokens: 0, finishReason: 'stop' });
    await waitFor('the request to be forgotten', () => host.connectionFor('req-later') === undefined);
    const after = host.planUpdate('req-later', [term(new Float32Array(4))]);
    expect(after.delivered ? null : after.error.code).toBe('SAEGATE_ERR_TAP_UNROUTED');
  });

  it('returns SAEGATE_ERR_TAP_ARGUMENT for a plan update the serving model server cannot apply', async () => {
    const { host, connect } = await rig();
    host.subscribeAll({ hooks: HOOKS, dtype: 'f32', includePrompt: true });
    const observer = await connect(hello({ canSteer: false }));
    await serve(host, observer, 'req-o');
    const result = host.planUpdate('req-o', [term(new Float32Array(4))]);
    expect(result.delivered ? null : result.error).toMatchObject({ code: 'SAEGATE_ERR_TAP_ARGUMENT', message: expect.stringContaining('cannot steer') });
  });

  it('leaves a connection the sink refuses unsubscribed, unlisted and without plans, and tells the sink about the ones it admits', async () => {
    const events: string[] = [];
    const counting = new CountingSink();
    const sink: ActivationSink = {
      write: (frame, source) => counting.write(frame, source),
      admit: (info: Hello) => (info.serverId === 'refused' ? 'not this one' : null),
      connected: (source: TapSource, result: SubscribeResult | null) => events.push(`connected ${source.serverId} ${result?.hooks.join(',') ?? 'none'}`),
      disconnected: (source: TapSource) => events.push(`disconnected ${source.serverId}`),
    };
    const { host, connect } = await rig(sink);
    host.subscribeAll({ hooks: [HOOKS[0]], dtype: 'f32', includePrompt: false });
    const refused = await connect(hello({ serverId: 'refused' }));
    const used = await connect(hello({ serverId: 'used' }));
    await waitFor('the used connection’s subscription', () => used.subscription !== null);
    expect(host.connections.map((c) => c.sessionId)).toEqual([used.sessionId]);
    expect(refused.subscription).toBeNull();
    expect(host.deliverPlan('req-p', [term(new Float32Array(4))])).not.toBeNull();
    expect(host.server.connections.find((c) => c.sessionId === refused.sessionId)?.hasVector(vectorId(new Float32Array(4)))).toBe(false);
    await used.close();
    await waitFor('the disconnect', () => events.length === 2);
    expect(events).toEqual([`connected used ${HOOKS[0]}`, 'disconnected used']);
  });

  it('counts the rows a sink refuses', async () => {
    const refusing: ActivationSink = { write: (frame: ActivationsFrame) => frame.rowCount };
    const { host, connect } = await rig(refusing);
    const client = await connect(hello());
    host.subscribeAll({ hooks: [HOOKS[0]], dtype: 'f16', includePrompt: false });
    await waitFor('the subscription', () => client.subscription !== null);
    client.sendActivations(rows(['r1', 'r2', 'r3'], HOOKS[0]));
    await waitFor('three refused rows', () => host.sinkDroppedRows === 3);
    expect(host.stats.rowsReceived).toBe(3);
  });
});
