/**
 * TapHub against real TapClients over a real WebSocket: rows from several model-server connections
 * routed by request id, the subscription kept on every connection, and plans sent to the
 * connections that can apply them.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CountingSink, type ActivationSink } from '../../../src/tap/sink.js';
import { TapHub } from '../../../src/proxy/tap-hub.js';
import { TapClient } from '../../../src/tap/client.js';
import { vectorId } from '../../../src/tap/codec.js';
import type { HelloInfo, Subscription } from '../../../src/tap/messages.js';
import type { ActivationsFrame } from '../../../src/tap/server.js';

const HOOKS = ['blocks.0.hook_resid_post', 'blocks.1.hook_resid_post'];

async function waitFor(predicate: () => boolean, timeoutMs = 5000): Promise<void> {
  const start = Date.now();
  while (!predicate()) {
    if (Date.now() - start > timeoutMs) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

function hello(overrides: Partial<HelloInfo> = {}): HelloInfo {
  return { modelId: 'tiny', dModel: 4, nLayers: 2, hookPoints: HOOKS, dtypes: ['f32', 'f16'], canSteer: true, ...overrides };
}

function rows(requestIds: string[], hook = HOOKS[1]) {
  return { hook, requestIds, positions: Int32Array.from(requestIds.map((_, i) => i)), data: new Float32Array(requestIds.length * 4).fill(0.5) };
}

describe('TapHub', () => {
  let httpServer: http.Server;
  let url: string;
  let hub: TapHub;
  let sink: CountingSink;
  const clients: TapClient[] = [];

  async function connect(info: HelloInfo): Promise<TapClient> {
    const accepted = hub.server.nextConnection();
    const client = new TapClient({ url, hello: info, reconnect: { initialDelayMs: 10 } });
    clients.push(client);
    client.start();
    await accepted;
    await waitFor(() => client.connected);
    return client;
  }

  beforeAll(async () => {
    sink = new CountingSink();
    hub = new TapHub({ sink, token: null });
    httpServer = http.createServer();
    hub.server.attach(httpServer);
    await new Promise<void>((r) => httpServer.listen(0, '127.0.0.1', r));
    url = `ws://127.0.0.1:${(httpServer.address() as AddressInfo).port}/v1/tap`;
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await hub.close(100);
    httpServer.close();
  });

  it('keeps the subscription on every connection, later ones included, limited to the hooks each offers', async () => {
    const a = await connect(hello({ serverId: 'a' }));
    const subscription: Subscription = { hooks: HOOKS, dtype: 'f32', includePrompt: true };
    const results = hub.subscribeAll(subscription);
    expect(results).toEqual([{ sessionId: a.sessionId, modelId: 'tiny', hooks: HOOKS }]);
    const b = await connect(hello({ serverId: 'b', hookPoints: [HOOKS[1]] }));
    await waitFor(() => a.subscription !== null && b.subscription !== null);
    expect(a.subscription).toEqual(subscription);
    expect(b.subscription).toEqual({ hooks: [HOOKS[1]], dtype: 'f32', includePrompt: true });
  });

  it('routes rows from several connections to the sink by request id and learns who serves each request', async () => {
    const [a, b] = clients;
    expect(a.sendActivations(rows(['req-a', 'req-a', 'req-shared']))).toBe(true);
    expect(b.sendActivations(rows(['req-b']))).toBe(true);
    expect(a.sendActivations(rows(['req-a'], HOOKS[0]))).toBe(true);
    await waitFor(() => sink.rows === 5);
    expect(sink.request('req-a')).toMatchObject({ rows: 3, sessionId: a.sessionId });
    expect(sink.request('req-a')!.rowsByHook).toEqual(new Map([[HOOKS[1], 2], [HOOKS[0], 1]]));
    expect(sink.request('req-b')).toMatchObject({ rows: 1, sessionId: b.sessionId });
    expect(hub.connectionFor('req-a')?.sessionId).toBe(a.sessionId);
    expect(hub.connectionFor('req-b')?.sessionId).toBe(b.sessionId);
    expect(hub.connectionFor('req-unknown')).toBeUndefined();
  });

  it('forgets a request’s connection at its end and hands the end to the sink', async () => {
    const [, b] = clients;
    b.sendEnd({ requestId: 'req-b', promptTokens: 1, completionTokens: 1, finishReason: 'stop' });
    await waitFor(() => sink.request('req-b')?.end !== null);
    expect(sink.request('req-b')!.end).toEqual({ requestId: 'req-b', promptTokens: 1, completionTokens: 1, finishReason: 'stop' });
    expect(hub.connectionFor('req-b')).toBeUndefined();
  });

  it('sends a new request’s plan, vectors first, to every connection able to apply it', async () => {
    const [a, b] = clients;
    const vector = Float32Array.from([1, 2, 3, 4]);
    const planId = hub.deliverPlan('req-new', [{ hook: HOOKS[1], vector, scale: -2, fromPosition: 0, untilPosition: null }]);
    expect(planId).toMatch(/^plan-[0-9a-f]{8}-[0-9a-z]+$/);
    const [planA, planB] = await Promise.all([a.waitForPlan(planId!), b.waitForPlan(planId!)]);
    for (const plan of [planA, planB]) {
      expect(plan).toMatchObject({ requestId: 'req-new', planId, entries: [{ hook: HOOKS[1], scale: -2, fromPosition: 0, untilPosition: null }] });
      expect([...plan.entries[0].vector]).toEqual([1, 2, 3, 4]);
    }
  });

  it('sends a plan only to the connection serving the request once it is known', async () => {
    const [a] = clients;
    const vector = Float32Array.from([5, 6, 7, 8]);
    const planId = hub.deliverPlan('req-a', [{ hook: HOOKS[1], vector, scale: 1, fromPosition: 3, untilPosition: 9 }]);
    expect(planId).not.toBeNull();
    expect((await a.waitForPlan(planId!)).entries[0].untilPosition).toBe(9);
    const [connA, connB] = hub.connections;
    expect(connA.sessionId).toBe(a.sessionId);
    // The vector went down with the plan to the serving connection only.
    expect(connA.hasVector(vectorId(vector))).toBe(true);
    expect(connB.hasVector(vectorId(vector))).toBe(false);
  });

  it('sends no plan where it cannot be applied and says so with null', async () => {
    const cannotSteer = await connect(hello({ modelId: 'observer', canSteer: false, serverId: 'c' }));
    expect(hub.connections).toHaveLength(3);
    const wrongWidth = Float32Array.from([1, 2, 3]);
    expect(hub.deliverPlan('req-x', [{ hook: HOOKS[1], vector: wrongWidth, scale: 1, fromPosition: 0, untilPosition: null }])).toBeNull();
    expect(hub.deliverPlan('req-y', [{ hook: 'blocks.9.hook_resid_post', vector: new Float32Array(4), scale: 1, fromPosition: 0, untilPosition: null }])).toBeNull();
    await cannotSteer.close();
    await waitFor(() => hub.connections.length === 2);
  });

  it('counts the rows a sink refuses', async () => {
    const refusing: ActivationSink = { write: (frame: ActivationsFrame) => frame.rowCount };
    const other = new TapHub({ sink: refusing, token: null });
    const server = http.createServer();
    other.server.attach(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const accepted = other.server.nextConnection();
    const client = new TapClient({ url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}/v1/tap`, hello: hello() });
    client.start();
    await accepted;
    other.subscribeAll({ hooks: [HOOKS[0]], dtype: 'f16', includePrompt: false });
    await waitFor(() => client.subscription !== null);
    client.sendActivations(rows(['r1', 'r2', 'r3'], HOOKS[0]));
    await waitFor(() => other.sinkDroppedRows === 3);
    expect(other.stats.rowsReceived).toBe(3);
    await client.close();
    await other.close(100);
    server.close();
  });
});
