import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { isSaegateError } from '../../src/common/errors.js';
import { TapClient, type ResolvedPlan, type TapClientOptions } from '../../src/tap/client.js';
import { decodeMessage, encodeMessage, vectorId } from '../../src/tap/codec.js';
import { f16BitsToF32, f32ToF16Bits } from '../../src/common/f16.js';
import type { TapLogger } from '../../src/tap/logger.js';
import type { HelloInfo, PlanAck, Subscription, TapMessage } from '../../src/tap/messages.js';
import { TapServer, type ActivationsFrame, type TapConnection, type TapServerOptions } from '../../src/tap/server.js';
import { waitFor } from '../helpers/wait.js';

const HOOKS = ['blocks.0.hook_resid_pre', 'blocks.0.hook_resid_post', 'blocks.1.hook_resid_post'];

function helloInfo(dModel = 8): HelloInfo {
  return { modelId: 'tiny-llama', dModel, nLayers: 2, hookPoints: HOOKS, dtypes: ['f32', 'f16'], canSteer: true, serverId: 'pod-1' };
}

interface Gate {
  http: Server;
  tap: TapServer;
  port: number;
  url: string;
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function startGate(options: TapServerOptions = {}, port = 0): Promise<Gate> {
  const http = createServer();
  const tap = new TapServer(options);
  tap.attach(http);
  await new Promise<void>((resolve) => http.listen(port, '127.0.0.1', resolve));
  const actualPort = (http.address() as AddressInfo).port;
  const gate = { http, tap, port: actualPort, url: `ws://127.0.0.1:${actualPort}/v1/tap` };
  cleanups.push(() => stopGate(gate));
  return gate;
}

async function stopGate(gate: Gate): Promise<void> {
  if (!gate.http.listening) return;
  await gate.tap.close(200);
  gate.http.closeAllConnections();
  await new Promise<void>((resolve) => gate.http.close(() => resolve()));
}

function startClient(options: Partial<TapClientOptions> & { url: string }): TapClient {
  const client = new TapClient({ hello: helloInfo(), reconnect: { initialDelayMs: 20, maxDelayMs: 100 }, ...options });
  cleanups.push(() => client.close());
  client.start();
  return client;
}

function recordingLogger(): { logger: TapLogger; warnings: { obj: Record<string, unknown>; msg: string }[] } {
  const warnings: { obj: Record<string, unknown>; msg: string }[] = [];
  const ignore = (): void => {};
  return { warnings, logger: { warn: (obj, msg) => warnings.push({ obj, msg }), info: ignore, debug: ignore } };
}

/** A bare `ws` client that speaks raw frames, for misbehaving on purpose. */
async function rawClient(url: string): Promise<{ ws: WebSocket; received: TapMessage[]; closed: Promise<number> }> {
  const ws = new WebSocket(url);
  const received: TapMessage[] = [];
  ws.on('message', (data) => received.push(decodeMessage(data as Buffer)));
  const closed = new Promise<number>((resolve) => ws.on('close', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  cleanups.push(() => ws.terminate());
  return { ws, received, closed };
}

const helloFrame = (versions = [1], dModel = 8): Uint8Array =>
  encodeMessage({ type: 'hello', protocolVersions: versions, ...helloInfo(dModel) });

async function connectedPair(gate: Gate, options: Partial<TapClientOptions> = {}): Promise<{ client: TapClient; conn: TapConnection }> {
  const nextConn = gate.tap.nextConnection();
  const client = startClient({ url: gate.url, ...options });
  const conn = await nextConn;
  await waitFor('client welcome', () => client.connected);
  return { client, conn };
}

async function subscribed(client: TapClient, conn: TapConnection, subscription: Subscription): Promise<void> {
  const seen = new Promise<Subscription>((resolve) => client.once('subscribe', resolve));
  conn.subscribe(subscription);
  expect(await seen).toEqual(subscription);
}

describe.each(['f32', 'f16'] as const)('a TapClient and a TapServer exchanging %s activations', (dtype) => {
  it('carry every message type in both directions', async () => {
    const gate = await startGate({ token: 'secret', heartbeatIntervalMs: 0 });
    const { client, conn } = await connectedPair(gate, { token: 'secret' });

    // Handshake.
    expect(conn.hello).toEqual({ protocolVersions: [1], ...helloInfo() });
    expect(conn.protocolVersion).toBe(1);
    expect(client.sessionId).toBe(conn.sessionId);

    // subscribe down, activations up.
    await subscribed(client, conn, { hooks: [HOOKS[2]], dtype, includePrompt: true });
    const data = Float32Array.from({ length: 3 * 8 }, (_, i) => i * 0.1 - 1);
    const frameSeen = new Promise<ActivationsFrame>((resolve) => conn.once('activations', resolve));
    expect(client.sendActivations({ hook: HOOKS[0], requestIds: ['r1'], positions: Int32Array.from([0]), data: new Float32Array(8) })).toBe(false);
    expect(client.sendActivations({ hook: HOOKS[2], requestIds: ['r1', 'r2', 'r1'], positions: Int32Array.from([5, 0, 6]), data })).toBe(true);
    const frame = await frameSeen;
    expect(frame).toMatchObject({ hook: HOOKS[2], hookIndex: 2, dtype, dModel: 8, rowCount: 3, droppedRowsSinceLastFrame: 0, requestIds: ['r1', 'r2'] });
    expect([...frame.rowRequestIndexes]).toEqual([0, 1, 0]);
    expect([...frame.positions]).toEqual([5, 0, 6]);
    const values = frame.dtype === 'f32' ? [...frame.data] : [...frame.data].map((h) => f16BitsToF32(h));
    expect(values).toEqual(dtype === 'f32' ? [...data] : [...data].map((v) => f16BitsToF32(f32ToF16Bits(v))));

    // vector down, once per connection.
    const vectorValues = Float32Array.from({ length: 8 }, (_, i) => (i % 2 === 0 ? 1 : -1) * i);
    const vectors: string[] = [];
    client.on('vector', (v) => vectors.push(v.id));
    const id = conn.sendVector(vectorValues);
    expect(conn.sendVector(Float32Array.from(vectorValues))).toBe(id);
    expect(id).toBe(vectorId(vectorValues));

    // plan down, plan_ack up; the plan is also waiting for the request that will name it.
    const planSeen = new Promise<ResolvedPlan>((resolve) => client.once('plan', resolve));
    const plan = { requestId: 'r3', planId: 'p-1', entries: [{ hook: HOOKS[1], vectorId: id, scale: 4, fromPosition: 2, untilPosition: null }] };
    conn.sendPlan(plan);
    const ack = await conn.waitForPlanAck('p-1', 2000);
    expect(ack).toEqual({ requestId: 'r3', planId: 'p-1', accepted: true });
    expect(vectors).toEqual([id]);
    const resolved = await planSeen;
    expect(resolved.entries[0]).toMatchObject({ hook: HOOKS[1], vectorId: id, scale: 4, fromPosition: 2, untilPosition: null });
    expect([...resolved.entries[0].vector]).toEqual([...vectorValues]);
    expect((await client.waitForPlan('p-1', { timeoutMs: 100 })).requestId).toBe('r3');

    // plan_update down, acked.
    const updateSeen = new Promise<ResolvedPlan>((resolve) => client.once('planUpdate', resolve));
    conn.sendPlanUpdate({ requestId: 'r3', planId: 'p-1.1', entries: [] });
    expect(await conn.waitForPlanAck('p-1.1', 2000)).toEqual({ requestId: 'r3', planId: 'p-1.1', accepted: true });
    expect((await updateSeen).entries).toEqual([]);

    // tokens and end up.
    const tokensSeen = new Promise<TapMessage>((resolve) => conn.once('tokens', resolve));
    const endSeen = new Promise<unknown>((resolve) => conn.once('end', resolve));
    expect(client.sendTokens({ requestIds: ['r3', 'r1'], positions: [9, 7], tokenIds: [42, 7], texts: [' the', 'é'] })).toBe(true);
    expect(client.sendEnd({ requestId: 'r3', promptTokens: 9, completionTokens: 1, finishReason: 'stop' })).toBe(true);
    expect(await tokensSeen).toMatchObject({ requestIds: ['r3', 'r1'], texts: [' the', 'é'], tokenIds: Int32Array.from([42, 7]), positions: Int32Array.from([9, 7]) });
    expect(await endSeen).toEqual({ requestId: 'r3', promptTokens: 9, completionTokens: 1, finishReason: 'stop' });

    // Counters on both ends agree: hello, activations, 2 plan_acks, tokens, end.
    const stats = gate.tap.stats;
    expect(stats).toMatchObject({ connections: { current: 1, total: 1 }, framesReceived: 6, rowsReceived: 3, malformedFrames: 0, authFailures: 0 });
    expect(client.stats).toMatchObject({ framesSent: 6, rowsSent: 3, rowsDropped: { queue_full: 0, disconnected: 0 }, connects: 1 });
    expect(client.stats.bytesSent).toBe(stats.bytesReceived);
  });
});

describe('TapServer and TapClient', () => {
  it('refuses a wrong bearer token with HTTP 401; the client logs it and retries without ever being welcomed', async () => {
    const gate = await startGate({ token: 'secret', heartbeatIntervalMs: 0 });
    const { logger, warnings } = recordingLogger();
    let connectedEvents = 0;
    const client = startClient({ url: gate.url, token: 'wrong', logger });
    client.on('connected', () => connectedEvents++);
    await waitFor('three refused attempts', () => gate.tap.stats.authFailures >= 3);
    expect(client.connected).toBe(false);
    expect(connectedEvents).toBe(0);
    expect(client.stats.connects).toBe(0);
    expect(client.stats.connectFailures).toBeGreaterThanOrEqual(2);
    expect(warnings.some((w) => w.obj.status === 401 && w.obj.code === 'SAEGATE_ERR_TAP_AUTH')).toBe(true);
    expect(gate.tap.stats).toMatchObject({ connections: { current: 0, total: 0 }, framesReceived: 0, bytesReceived: 0, rowsReceived: 0 });
  });

  it('answers a raw upgrade without a token with 401 and a JSON error body', async () => {
    const gate = await startGate({ token: 'secret', heartbeatIntervalMs: 0 });
    const ws = new WebSocket(gate.url);
    const status = await new Promise<number>((resolve) => {
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      ws.on('error', () => {});
    });
    expect(status).toBe(401);
    expect(gate.tap.stats.authFailures).toBe(1);
  });

  it('closes a connection that sends a garbage frame, counts it, and keeps serving the others', async () => {
    const gate = await startGate({ heartbeatIntervalMs: 0 });
    const { client, conn } = await connectedPair(gate);
    await subscribed(client, conn, { hooks: [HOOKS[0]], dtype: 'f32', includePrompt: false });

    const raw = await rawClient(gate.url);
    raw.ws.send(helloFrame());
    await waitFor('welcome for the raw client', () => raw.received.length === 1);
    expect(raw.received[0]).toMatchObject({ type: 'welcome', protocolVersion: 1 });
    expect(gate.tap.stats.connections.current).toBe(2);
    raw.ws.send(Buffer.from([0x04, 0x00, 0x00, 0x00, 0xde, 0xad, 0xbe, 0xef]));
    expect(await raw.closed).toBe(1007);
    expect(raw.received[1]).toMatchObject({ type: 'error', code: 'SAEGATE_ERR_TAP_FRAME' });
    await waitFor('the raw connection to be gone', () => gate.tap.stats.connections.current === 1);
    expect(gate.tap.stats.malformedFrames).toBe(1);

    // The well-behaved client is unaffected.
    const seen = new Promise<ActivationsFrame>((resolve) => conn.once('activations', resolve));
    expect(client.sendActivations({ hook: HOOKS[0], requestIds: ['ok'], positions: Int32Array.from([1]), data: new Float32Array(8).fill(2) })).toBe(true);
    expect([...(await seen).data]).toEqual(new Array(8).fill(2));
    expect(client.connected).toBe(true);
  });

  it('closes a connection whose first frame is garbage, before any handshake, and counts it', async () => {
    const gate = await startGate({ heartbeatIntervalMs: 0 });
    const raw = await rawClient(gate.url);
    raw.ws.send(Buffer.from('not a tap frame'));
    expect(await raw.closed).toBe(1007);
    expect(raw.received).toMatchObject([{ type: 'error', code: 'SAEGATE_ERR_TAP_FRAME' }]);
    expect(gate.tap.stats).toMatchObject({ malformedFrames: 1, framesReceived: 0, connections: { current: 0, total: 0 } });
  });

  it('closes a connection that sends a text frame with 1003', async () => {
    const gate = await startGate({ heartbeatIntervalMs: 0 });
    const raw = await rawClient(gate.url);
    raw.ws.send('{"type":"hello"}');
    expect(await raw.closed).toBe(1003);
    expect(raw.received).toMatchObject([{ type: 'error', code: 'SAEGATE_ERR_TAP_FRAME' }]);
    expect(gate.tap.stats.malformedFrames).toBe(1);
  });

  it('closes a connection that sends no hello in time with an error and 1002', async () => {
    const gate = await startGate({ heartbeatIntervalMs: 0, helloTimeoutMs: 50 });
    const raw = await rawClient(gate.url);
    expect(await raw.closed).toBe(1002);
    expect(raw.received).toMatchObject([{ type: 'error', message: 'no hello within 50 ms' }]);
    expect(gate.tap.stats.protocolErrors).toBe(1);
  });

  it('terminates a connection that stops answering heartbeat pings', async () => {
    const gate = await startGate({ heartbeatIntervalMs: 40 });
    const ws = new WebSocket(gate.url, { autoPong: false });
    cleanups.push(() => ws.terminate());
    const closed = new Promise<number>((resolve) => ws.on('close', (code) => resolve(code)));
    await new Promise<void>((resolve) => ws.once('open', () => resolve()));
    ws.send(helloFrame());
    await waitFor('the handshake', () => gate.tap.stats.connections.current === 1);
    // No pong to the first ping: the second tick terminates the socket (no close frame: 1006).
    expect(await closed).toBe(1006);
    await waitFor('the connection to be dropped', () => gate.tap.stats.connections.current === 0);
  });

  it('answers a hello with no common protocol version with an error and a 1002 close', async () => {
    const gate = await startGate({ heartbeatIntervalMs: 0 });
    const raw = await rawClient(gate.url);
    raw.ws.send(helloFrame([2, 3]));
    expect(await raw.closed).toBe(1002);
    expect(raw.received).toMatchObject([{ type: 'error', code: 'SAEGATE_ERR_TAP_VERSION' }]);
    expect(gate.tap.stats).toMatchObject({ protocolErrors: 1, connections: { total: 0 } });
  });

  it('reconnects with backoff after the server restarts, and starts the new session unsubscribed', async () => {
    const first = await startGate({ heartbeatIntervalMs: 0 });
    const { client, conn } = await connectedPair(first);
    await subscribed(client, conn, { hooks: [HOOKS[1]], dtype: 'f16', includePrompt: false });
    const disconnected = new Promise<{ code: number }>((resolve) => client.once('disconnected', resolve));
    await stopGate(first);
    expect((await disconnected).code).toBe(1001);
    expect(client.connected).toBe(false);
    expect(client.subscription).toBeNull();
    // Generation goes on while saegate is away: rows are refused and counted, ends are kept.
    expect(client.sendActivations({ hook: HOOKS[1], requestIds: ['r'], positions: Int32Array.from([3]), data: new Float32Array(8) })).toBe(false);
    expect(client.sendEnd({ requestId: 'during-outage', promptTokens: 1, completionTokens: 2, finishReason: 'stop' })).toBe(true);

    await new Promise((resolve) => setTimeout(resolve, 150));
    const second = await startGate({ heartbeatIntervalMs: 0 }, first.port);
    const nextConn = second.tap.nextConnection();
    const reconnected = new Promise<{ sessionId: string }>((resolve) => client.once('connected', resolve));
    const conn2 = await nextConn;
    const endSeen = new Promise<unknown>((resolve) => conn2.once('end', resolve));
    expect((await reconnected).sessionId).toBe(conn2.sessionId);
    expect(conn2.sessionId).not.toBe(conn.sessionId);
    expect(await endSeen).toMatchObject({ requestId: 'during-outage' });
    expect(client.stats).toMatchObject({ connects: 2, rowsDropped: { disconnected: 1 } });

    await subscribed(client, conn2, { hooks: [HOOKS[1]], dtype: 'f32', includePrompt: false });
    const seen = new Promise<ActivationsFrame>((resolve) => conn2.once('activations', resolve));
    expect(client.sendActivations({ hook: HOOKS[1], requestIds: ['r'], positions: Int32Array.from([4]), data: new Float32Array(8).fill(1) })).toBe(true);
    expect((await seen).positions[0]).toBe(4);
  });

  it('drops rows that do not fit the send queue and reports the count in the next frame', async () => {
    const gate = await startGate({ heartbeatIntervalMs: 0 });
    const dModel = 256;
    const { client, conn } = await connectedPair(gate, { hello: helloInfo(dModel), maxQueueBytes: 8 * 1024 });
    await subscribed(client, conn, { hooks: [HOOKS[0]], dtype: 'f32', includePrompt: true });
    const frames: ActivationsFrame[] = [];
    conn.on('activations', (f) => frames.push(f));
    const rows = (n: number, base: number) => ({
      hook: HOOKS[0],
      requestIds: new Array<string>(n).fill('r'),
      positions: Int32Array.from({ length: n }, (_, i) => base + i),
      data: new Float32Array(n * dModel),
    });

    // 10 rows × 1 KiB cannot fit an 8 KiB queue: dropped whole, counted.
    expect(client.sendActivations(rows(10, 0))).toBe(false);
    expect(client.sendActivations(rows(3, 10))).toBe(true);
    expect(client.stats.rowsDropped.queue_full).toBe(10);
    await waitFor('the frame after the drop', () => frames.length === 1);
    expect(frames[0]).toMatchObject({ rowCount: 3, droppedRowsSinceLastFrame: 10 });
    expect([...frames[0].positions]).toEqual([10, 11, 12]);
    expect(gate.tap.stats.rowsDroppedReported).toBe(10);
  });

  it('accounts for every row under sustained overload: received plus reported-dropped equals offered', async () => {
    const gate = await startGate({ heartbeatIntervalMs: 0 });
    const dModel = 4096;
    const { client, conn } = await connectedPair(gate, { hello: helloInfo(dModel), maxQueueBytes: 2 * 1024 * 1024 });
    await subscribed(client, conn, { hooks: [HOOKS[0]], dtype: 'f16', includePrompt: true });
    let rowsReceived = 0;
    let droppedReported = 0;
    conn.on('activations', (f) => {
      rowsReceived += f.rowCount;
      droppedReported += f.droppedRowsSinceLastFrame;
    });
    const rowsPerFrame = 64;
    const data = new Float32Array(rowsPerFrame * dModel).fill(0.5);
    const requestIds = new Array<string>(rowsPerFrame).fill('req');
    const positions = Int32Array.from({ length: rowsPerFrame }, (_, i) => i);
    let offered = 0;
    // 300 frames of 512 KiB, synchronously: far more than the socket can take without waiting.
    for (let i = 0; i < 300; i++) {
      client.sendActivations({ hook: HOOKS[0], requestIds, positions, data });
      offered += rowsPerFrame;
    }
    const dropped = client.stats.rowsDropped.queue_full;
    expect(dropped).toBeGreaterThan(0);
    await waitFor('the socket to drain', () => client.queuedBytes === 0);
    // One more small frame carries the count of rows dropped since the last frame that went out.
    expect(client.sendActivations({ hook: HOOKS[0], requestIds: ['req'], positions: Int32Array.from([0]), data: new Float32Array(dModel) })).toBe(true);
    offered += 1;
    await waitFor('every row to be accounted for', () => rowsReceived + droppedReported === offered, { deadlineMs: 10_000 });
    expect(droppedReported).toBe(dropped);
    expect(gate.tap.stats.rowsDroppedReported).toBe(dropped);
  });

  it('waits for a plan ack, times out with SAEGATE_ERR_PLAN_TIMEOUT when none comes, and sees a late ack', async () => {
    const gate = await startGate({ heartbeatIntervalMs: 0 });
    const { client, conn } = await connectedPair(gate, { autoAckPlans: false });
    const id = conn.sendVector(new Float32Array(8).fill(1));
    const planSeen = new Promise<ResolvedPlan>((resolve) => client.once('plan', resolve));
    conn.sendPlan({ requestId: 'r', planId: 'p', entries: [{ hook: HOOKS[0], vectorId: id, scale: 1, fromPosition: 0, untilPosition: 4 }] });
    const timedOut = await conn.waitForPlanAck('p', 50).catch((e: unknown) => e);
    expect(isSaegateError(timedOut, 'SAEGATE_ERR_PLAN_TIMEOUT')).toBe(true);
    expect(String(timedOut)).toMatch(/'p' for request 'r'/);
    await planSeen;
    const ackSeen = new Promise<PlanAck>((resolve) => conn.once('planAck', resolve));
    client.sendPlanAck({ requestId: 'r', planId: 'p', accepted: true });
    await ackSeen;
    expect(await conn.waitForPlanAck('p', 50)).toEqual({ requestId: 'r', planId: 'p', accepted: true });
  });

  it('refuses to send a plan naming a vector the connection does not hold', async () => {
    const gate = await startGate({ heartbeatIntervalMs: 0 });
    const { conn } = await connectedPair(gate);
    const plan = { requestId: 'r', planId: 'p', entries: [{ hook: HOOKS[0], vectorId: 'a'.repeat(64), scale: 1, fromPosition: 0, untilPosition: null }] };
    expect(() => conn.sendPlan(plan)).toThrow(expect.objectContaining({ code: 'SAEGATE_ERR_TAP_ARGUMENT' }));
    expect(() => conn.subscribe({ hooks: ['blocks.9.hook_resid_post'], dtype: 'f32', includePrompt: false })).toThrow(/hook points not offered/);
  });
});

describe('a TapClient talking to a saegate that sends a forged vector', () => {
  it('rejects a vector whose id does not match its content and nacks the plan that names it', async () => {
    const http = createServer();
    const wss = new WebSocketServer({ server: http, path: '/v1/tap' });
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
    cleanups.push(async () => {
      for (const ws of wss.clients) ws.terminate();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      await new Promise<void>((resolve) => http.close(() => resolve()));
    });
    const fromClient: TapMessage[] = [];
    const genuine = Float32Array.from({ length: 8 }, (_, i) => i);
    const forgedId = vectorId(Float32Array.from({ length: 8 }, () => 1));
    wss.on('connection', (ws) => {
      ws.on('message', (data) => {
        const msg = decodeMessage(data as Buffer);
        fromClient.push(msg);
        if (msg.type !== 'hello') return;
        ws.send(encodeMessage({ type: 'welcome', protocolVersion: 1, sessionId: 'fake' }));
        ws.send(encodeMessage({ type: 'vector', id: forgedId, values: genuine }));
        ws.send(encodeMessage({ type: 'vector', id: vectorId(genuine), values: genuine }));
        ws.send(encodeMessage({ type: 'plan', requestId: 'r', planId: 'forged', entries: [{ hook: HOOKS[0], vectorId: forgedId, scale: 1, fromPosition: 0, untilPosition: null }] }));
        ws.send(encodeMessage({ type: 'plan', requestId: 'r2', planId: 'genuine', entries: [{ hook: HOOKS[0], vectorId: vectorId(genuine), scale: 1, fromPosition: 0, untilPosition: null }] }));
      });
    });
    const { logger, warnings } = recordingLogger();
    const client = startClient({ url: `ws://127.0.0.1:${(http.address() as AddressInfo).port}/v1/tap`, logger });
    const vectors: string[] = [];
    client.on('vector', (v) => vectors.push(v.id));

    await waitFor('two plan acks', () => fromClient.filter((m) => m.type === 'plan_ack').length === 2);
    expect(fromClient.filter((m) => m.type === 'plan_ack')).toEqual([
      { type: 'plan_ack', requestId: 'r', planId: 'forged', accepted: false, reason: `unknown vector id '${forgedId}'` },
      { type: 'plan_ack', requestId: 'r2', planId: 'genuine', accepted: true },
    ]);
    expect(vectors).toEqual([vectorId(genuine)]);
    expect(client.getVector(forgedId)).toBeUndefined();
    expect(client.stats.vectorsRejected).toBe(1);
    expect(warnings.some((w) => w.obj.vectorId === forgedId)).toBe(true);
    const rejected = await client.waitForPlan('forged', { timeoutMs: 100 }).catch((e: unknown) => e);
    expect(isSaegateError(rejected, 'SAEGATE_ERR_TAP_PLAN_REJECTED')).toBe(true);
    expect((await client.waitForPlan('genuine', { timeoutMs: 100 })).entries[0].vector).toEqual(genuine);
    // The connection survives the forged vector.
    expect(client.connected).toBe(true);
  });

  it('times out waitForPlan with SAEGATE_ERR_PLAN_TIMEOUT when the plan never arrives', async () => {
    const gate = await startGate({ heartbeatIntervalMs: 0 });
    const { client } = await connectedPair(gate);
    const outcome = await client.waitForPlan('never', { requestId: 'r9', timeoutMs: 30 }).catch((e: unknown) => e);
    expect(isSaegateError(outcome, 'SAEGATE_ERR_PLAN_TIMEOUT')).toBe(true);
    expect(String(outcome)).toMatch(/'never' for request 'r9' did not arrive on the tap within 30 ms/);
  });
});
