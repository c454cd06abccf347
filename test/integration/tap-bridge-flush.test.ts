/**
 * The tap bridge's flush policy (src/model/tap-bridge.ts) against a real TapServer over a real
 * WebSocket, with a StepSource standing in for the engine: when pending tokens, rows and request
 * ends become a write (at a step once `flushRows` entries are pending or the oldest would pass
 * `flushMs` before the next step, by the timer otherwise, on `flush()` and on `close()`), what one
 * flush puts on the wire (tokens, then one frame per hook with every pending step's rows, then the
 * ends; a prefilled request's prompt tokens among the tokens), what a flush does while saegate is
 * away, and TapClientStats.writes, which counts those writes. The step-interval rule runs on fake
 * time (performance.now and the timer) so that it is decided by the clock the test sets.
 *
 * Steps are fed synchronously, so a flush that the policy makes "at a step" is visible in
 * `stats().writes` right after `source.step()` returns; a wire order is observed as the order in
 * which the server's connection emits messages (one WebSocket, delivered in order).
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { f16BitsToF32, f32ToF16Bits } from '../../src/common/f16.js';
import { TapBridge } from '../../src/model/tap-bridge.js';
import type { ActivationBatch, RuntimeStep } from '../../src/model/runtime-protocol.js';
import { allHookPoints, type ModelConfig } from '../../src/model/types.js';
import { syntheticDefaults } from '../../src/model/weights/synthetic.js';
import { TapClient } from '../../src/tap/client.js';
import type { StreamDtype, Subscription } from '../../src/tap/messages.js';
import { TapServer, type TapConnection } from '../../src/tap/server.js';
import { StepSource } from '../helpers/step-source.js';
import { waitFor } from '../helpers/wait.js';

const D = 4;
const config: ModelConfig = { ...syntheticDefaults, dim: D, nLayers: 2 };
const HOOKS = allHookPoints(config);
const HOOK_A = 'blocks.1.hook_resid_post';
const HOOK_B = 'blocks.0.hook_resid_pre';
/** Never reached by a test's steps: only the rule under test flushes. */
const NEVER_MS = 60_000;
const NEVER_ROWS = 1_000_000;

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface Gate {
  http: Server;
  tap: TapServer;
  url: string;
}

async function startGate(): Promise<Gate> {
  const http = createServer();
  const tap = new TapServer({ heartbeatIntervalMs: 0 });
  tap.attach(http);
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  const gate = { http, tap, url: `ws://127.0.0.1:${(http.address() as AddressInfo).port}/v1/tap` };
  cleanups.push(async () => {
    await tap.close(200);
    http.closeAllConnections();
    await new Promise<void>((resolve) => http.close(() => resolve()));
  });
  return gate;
}

/** A message as the server received it, copied out of the socket's bytes. */
type Received =
  | { kind: 'tokens'; entries: [requestId: string, position: number, tokenId: number, text: string][] }
  | { kind: 'rows'; hook: string; dtype: StreamDtype; rows: [requestId: string, position: number][]; values: number[][] }
  | { kind: 'end'; requestId: string; completionTokens: number; finishReason: string }
  | { kind: 'close' };

function record(conn: TapConnection): Received[] {
  const log: Received[] = [];
  conn.on('tokens', (msg) => {
    log.push({ kind: 'tokens', entries: Array.from(msg.rowRequestIndexes, (index, i) => [msg.requestIds[index], msg.positions[i], msg.tokenIds[i], msg.texts[i]]) });
  });
  conn.on('activations', (frame) => {
    const rows: [string, number][] = [];
    const values: number[][] = [];
    for (let r = 0; r < frame.rowCount; r++) {
      rows.push([frame.requestIds[frame.rowRequestIndexes[r]], frame.positions[r]]);
      const row = frame.data.subarray(r * frame.dModel, (r + 1) * frame.dModel);
      values.push(frame.dtype === 'f16' ? Array.from(row, (bits) => f16BitsToF32(bits)) : Array.from(row));
    }
    log.push({ kind: 'rows', hook: frame.hook, dtype: frame.dtype, rows, values });
  });
  conn.on('end', (end) => log.push({ kind: 'end', requestId: end.requestId, completionTokens: end.completionTokens, finishReason: end.finishReason }));
  conn.on('close', () => log.push({ kind: 'close' }));
  return log;
}

/**
 * A row's values, distinct per (request, position, hook, dimension) and exact in f16 (request ids
 * are `req-N` with N ≤ 3, positions < 16: every value is a multiple of 0.25 below 512).
 */
function rowValue(requestId: string, position: number, hook: string, d: number): number {
  return Number(requestId.slice(4)) * 128 + position * 8 + HOOKS.indexOf(hook) * 2 + d * 0.25;
}

function rowValues(requestId: string, position: number, hook: string): number[] {
  return Array.from({ length: D }, (_, d) => rowValue(requestId, position, hook, d));
}

/** One token a step generated for a request (its row is tapped at the same position). */
interface StepEntry {
  id: string;
  position: number;
  tokenId: number;
}

/** A decode step as the engine emits it: its tokens, and a row per entry for every subscribed hook. */
function decodeStep(source: StepSource, entries: StepEntry[]): RuntimeStep {
  const activations: ActivationBatch[] = [];
  const tap = source.tap;
  for (const hook of tap?.hooks ?? []) {
    const values = Float32Array.from(entries.flatMap((e) => rowValues(e.id, e.position, hook)));
    activations.push({
      hook,
      dtype: tap!.dtype,
      dModel: D,
      requestIds: entries.map((e) => e.id),
      positions: Int32Array.from(entries, (e) => e.position),
      data: tap!.dtype === 'f32' ? values : Uint16Array.from(values, (v) => f32ToF16Bits(v)),
    });
  }
  return {
    phase: 'decode',
    batchSize: entries.length,
    runMs: 0,
    tokens: { requestIds: entries.map((e) => e.id), positions: Int32Array.from(entries, (e) => e.position), tokenIds: Int32Array.from(entries, (e) => e.tokenId) },
    activations,
  };
}

/** What the server must receive for `steps`' tokens, in one `tokens` message (null tokenizer: empty pieces). */
function tokensOf(steps: StepEntry[][]): Received {
  return { kind: 'tokens', entries: steps.flat().map((e) => [e.id, e.position, e.tokenId, ''] as [string, number, number, string]) };
}

/** What the server must receive for `steps`' rows of `hook`, in one frame. */
function rowsOf(hook: string, steps: StepEntry[][], dtype: StreamDtype = 'f32'): Received {
  const entries = steps.flat();
  return { kind: 'rows', hook, dtype, rows: entries.map((e) => [e.id, e.position]), values: entries.map((e) => rowValues(e.id, e.position, hook)) };
}

function endOf(requestId: string, completionTokens: number): Received {
  return { kind: 'end', requestId, completionTokens, finishReason: 'stop' };
}

interface Tapped {
  bridge: TapBridge;
  source: StepSource;
  conn: TapConnection;
  log: Received[];
}

/** A bridge connected to `gate` and subscribed to `hooks` (the engine has seen the subscription). */
async function tappedBridge(gate: Gate, flush: { flushMs: number; flushRows: number }, hooks: string[] = [HOOK_A], dtype: StreamDtype = 'f32', includePrompt = false): Promise<Tapped> {
  const source = new StepSource(config);
  const nextConn = gate.tap.nextConnection();
  const bridge = new TapBridge({ url: gate.url, engine: source, tokenizer: null, modelId: 'synthetic', ...flush });
  cleanups.push(() => bridge.close());
  bridge.start();
  const conn = await nextConn;
  const log = record(conn);
  const subscription: Subscription = { hooks, dtype, includePrompt };
  conn.subscribe(subscription);
  await waitFor('the subscription to reach the bridge', () => bridge.client.subscription !== null, { observed: () => source.tap });
  // No hook: the engine is untapped (tokens and ends still go up).
  expect(source.tap).toEqual(hooks.length > 0 ? subscription : null);
  expect(bridge.stats().writes).toBe(0);
  return { bridge, source, conn, log };
}

const finished = (completionTokens: number) => ({ finishReason: 'stop' as const, promptTokens: 3, completionTokens });

describe('TapBridge flush policy over a real tap connection', () => {
  it('sends nothing for steps and an end until a flush, then tokens, one frame of every step\'s rows and the end in one write', async () => {
    const gate = await startGate();
    const { bridge, source, log } = await tappedBridge(gate, { flushMs: NEVER_MS, flushRows: NEVER_ROWS });
    const steps: StepEntry[][] = [
      [
        { id: 'req-1', position: 5, tokenId: 101 },
        { id: 'req-2', position: 3, tokenId: 201 },
      ],
      [
        { id: 'req-1', position: 6, tokenId: 102 },
        { id: 'req-2', position: 4, tokenId: 202 },
      ],
      [{ id: 'req-1', position: 7, tokenId: 103 }],
    ];
    // The hello is a frame of its own (not a counted write).
    const framesBefore = bridge.stats().framesSent;
    for (const entries of steps) {
      source.step(decodeStep(source, entries));
      expect(bridge.stats().writes).toBe(0);
    }
    source.end('req-1', finished(3));
    expect(bridge.stats().writes).toBe(0);
    // Nothing handed to the socket or the client's queue either.
    expect(bridge.stats().framesSent).toBe(framesBefore);
    expect(bridge.client.queuedBytes).toBe(0);

    bridge.flush();
    expect(bridge.stats().writes).toBe(1);
    expect(bridge.stats().framesSent).toBe(framesBefore + 3);
    await waitFor('the end of req-1', () => log.some((m) => m.kind === 'end'), { observed: () => log.map((m) => m.kind) });
    // Exactly these three: had anything left earlier, it would have arrived first.
    expect(log).toEqual([tokensOf(steps), rowsOf(HOOK_A, steps), endOf('req-1', 3)]);

    // A flush with nothing pending costs no write.
    bridge.flush();
    expect(bridge.stats().writes).toBe(1);
  });

  it('with flushMs 0 flushes every step at that step, and sends an end after its request\'s last rows', async () => {
    const gate = await startGate();
    const { bridge, source, log } = await tappedBridge(gate, { flushMs: 0, flushRows: NEVER_ROWS });
    const steps: StepEntry[][] = [1, 2, 3, 4].map((i) => [
      { id: 'req-1', position: i, tokenId: 10 + i },
      { id: 'req-3', position: i + 8, tokenId: 30 + i },
    ]);
    steps.forEach((entries, i) => {
      source.step(decodeStep(source, entries));
      expect(bridge.stats().writes).toBe(i + 1);
    });
    source.end('req-3', finished(4));
    await waitFor('the end of req-3', () => log.some((m) => m.kind === 'end'), { observed: () => log.map((m) => m.kind) });
    expect(log).toEqual([...steps.flatMap((entries) => [tokensOf([entries]), rowsOf(HOOK_A, [entries])]), endOf('req-3', 4)]);
    expect(bridge.stats().writes).toBe(5);
  });

  it('flushes at the step that brings pending rows and tokens to flushRows, not before', async () => {
    const gate = await startGate();
    // Two requests per step: 2 tokens + 2 rows (one hook) = 4 entries per step.
    const { bridge, source, log } = await tappedBridge(gate, { flushMs: NEVER_MS, flushRows: 8 });
    const steps: StepEntry[][] = [1, 2, 3, 4, 5].map((i) => [
      { id: 'req-1', position: i, tokenId: 10 + i },
      { id: 'req-2', position: i, tokenId: 20 + i },
    ]);
    const writesAfter: number[] = [];
    for (const entries of steps) {
      source.step(decodeStep(source, entries));
      writesAfter.push(bridge.stats().writes);
    }
    // 4 pending, 8 → flush, 4, 8 → flush, 4.
    expect(writesAfter).toEqual([0, 1, 1, 2, 2]);
    await waitFor('two flushes', () => log.length === 4, { observed: () => log.map((m) => m.kind) });
    expect(log).toEqual([tokensOf(steps.slice(0, 2)), rowsOf(HOOK_A, steps.slice(0, 2)), tokensOf(steps.slice(2, 4)), rowsOf(HOOK_A, steps.slice(2, 4))]);
  });

  it('counts tokens alone towards flushRows when no hook is subscribed', async () => {
    const gate = await startGate();
    const { bridge, source, log } = await tappedBridge(gate, { flushMs: NEVER_MS, flushRows: 3 }, []);
    const steps: StepEntry[][] = [1, 2, 3].map((i) => [{ id: 'req-1', position: i, tokenId: i }]);
    const writesAfter: number[] = [];
    for (const entries of steps) {
      source.step(decodeStep(source, entries));
      writesAfter.push(bridge.stats().writes);
    }
    expect(writesAfter).toEqual([0, 0, 1]);
    await waitFor('the tokens', () => log.length === 1);
    expect(log).toEqual([tokensOf(steps)]);
  });

  /**
   * Steps `count` single-token steps `intervalMs` apart on fake time (performance.now and the
   * flush timer); per step, whether its data left at the step (1) or by the timer before the next
   * step (1 in `byTimer`). The socket stays real: writes happen when the fake clock says so.
   */
  function paced(tapped: Tapped, count: number, intervalMs: number | ((step: number) => number)): { atStep: number[]; byTimer: number[]; steps: StepEntry[][] } {
    const { bridge, source } = tapped;
    const after = typeof intervalMs === 'number' ? () => intervalMs : intervalMs;
    const atStep: number[] = [];
    const byTimer: number[] = [];
    const steps: StepEntry[][] = [];
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] });
    try {
      for (let i = 0; i < count; i++) {
        const entries = [{ id: 'req-1', position: i, tokenId: i }];
        steps.push(entries);
        let before = bridge.stats().writes;
        source.step(decodeStep(source, entries));
        atStep.push(bridge.stats().writes - before);
        before = bridge.stats().writes;
        vi.advanceTimersByTime(after(i));
        byTimer.push(bridge.stats().writes - before);
      }
    } finally {
      vi.useRealTimers();
    }
    return { atStep, byTimer, steps };
  }

  it('flushes at the step after which the oldest entry would pass flushMs, before the timer would', async () => {
    const gate = await startGate();
    const tapped = await tappedBridge(gate, { flushMs: 10, flushRows: NEVER_ROWS });
    // Steps 3 ms apart: the step interval average climbs from 0 towards 3 and passes 1 by the
    // fourth step, so at the step 9 ms after the oldest entry 9 + interval ≥ 10: flushed there,
    // 1 ms before the timer; at 6 ms, 6 + interval < 10 (the average stays below 3).
    const { atStep, byTimer, steps } = paced(tapped, 12, 3);
    expect(atStep).toEqual([0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1]);
    expect(byTimer).toEqual(new Array<number>(12).fill(0));
    await waitFor('three flushes', () => tapped.log.length === 6, { observed: () => tapped.log.map((m) => m.kind) });
    expect(tapped.log).toEqual([0, 4, 8].flatMap((i) => [tokensOf(steps.slice(i, i + 4)), rowsOf(HOOK_A, steps.slice(i, i + 4))]));
  });

  it('leaves slow steps to the timer until the step interval average reaches flushMs, then sends every step at that step', async () => {
    const gate = await startGate();
    const tapped = await tappedBridge(gate, { flushMs: 10, flushRows: NEVER_ROWS });
    // Steps 12 ms apart (slower than flushMs): after step k the average is 12·(1 − 0.8^(k−1)) (a
    // sample is capped at 2 × flushMs = 20 ms, above 12), 9.99 ms at the ninth step and 10.4 ms at
    // the tenth; before that the timer sends each step 10 ms after it, before the next one.
    const { atStep, byTimer, steps } = paced(tapped, 14, 12);
    expect(atStep).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);
    expect(byTimer).toEqual([1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0]);
    await waitFor('every step', () => tapped.log.length === 28, { observed: () => tapped.log.length });
    expect(tapped.log).toEqual(steps.flatMap((entries) => [tokensOf([entries]), rowsOf(HOOK_A, [entries])]));
  });

  it('goes back to a flush every other 1 ms step right after an idle gap (a sample counts at most 2 × flushMs)', async () => {
    const gate = await startGate();
    const tapped = await tappedBridge(gate, { flushMs: 2, flushRows: NEVER_ROWS });
    // 20 steps 1 ms apart, 5 s idle after the 20th, then 1 ms steps again.
    const { atStep, byTimer } = paced(tapped, 30, (i) => (i === 19 ? 5000 : 1));
    expect(atStep.slice(20)).toEqual([0, 1, 0, 1, 0, 1, 0, 1, 0, 1]);
    expect(byTimer.slice(19, 21)).toEqual([1, 0]);
  });

  it('holds entries for a subscription\'s longer maxDelayMs, and sends what is pending at once when a subscription takes it back', async () => {
    const gate = await startGate();
    const tapped = await tappedBridge(gate, { flushMs: 2, flushRows: NEVER_ROWS });
    tapped.conn.subscribe({ hooks: [HOOK_A], dtype: 'f32', includePrompt: false, maxDelayMs: 10 });
    await waitFor('the relaxed subscription to reach the bridge', () => tapped.bridge.client.subscription?.maxDelayMs === 10);
    // 1 ms steps: with flushMs 2 every other step would flush; with 10 ms the timer sends every
    // tenth step's worth (the step interval average stays just under 1 ms, so no step reaches 10).
    const relaxed = paced(tapped, 25, 1);
    const every10th = Array.from({ length: 25 }, (_, i) => (i % 10 === 9 ? 1 : 0));
    expect(relaxed.atStep).toEqual(new Array<number>(25).fill(0));
    expect(relaxed.byTimer).toEqual(every10th);
    // Five steps are pending; a subscription without maxDelayMs sends them as it arrives.
    const before = tapped.bridge.stats().writes;
    tapped.conn.subscribe({ hooks: [HOOK_A], dtype: 'f32', includePrompt: false });
    await waitFor('the pending steps to leave with the stricter subscription', () => tapped.bridge.stats().writes === before + 1, { observed: () => tapped.bridge.stats().writes });
    expect(tapped.bridge.client.subscription?.maxDelayMs).toBeUndefined();
    const strict = paced(tapped, 10, 1);
    // Back to flushMs 2: one write every other 1 ms step.
    expect(strict.atStep.map((n, i) => n + strict.byTimer[i])).toEqual([0, 1, 0, 1, 0, 1, 0, 1, 0, 1]);
    // Steps 1–10 and 11–20 by the timer, 21–25 at the new subscription.
    await waitFor('every relaxed step on the wire', () => tapped.log.length >= 6, { observed: () => tapped.log.length });
    expect(tapped.log.slice(0, 6)).toEqual([0, 10, 20].flatMap((i) => [tokensOf(relaxed.steps.slice(i, i + 10)), rowsOf(HOOK_A, relaxed.steps.slice(i, i + 10))]));
  });

  /**
   * Runs 1 ms steps of `requests` (one token each per step, positions from `from`) on fake time;
   * per step, whether its data left at the step or by the timer before the next one (summed).
   */
  function pacedRequests(tapped: Tapped, requests: string[], count: number, from: number): number[] {
    const { bridge, source } = tapped;
    const writes: number[] = [];
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] });
    try {
      for (let i = 0; i < count; i++) {
        const before = bridge.stats().writes;
        source.step(decodeStep(source, requests.map((id) => ({ id, position: from + i, tokenId: i }))));
        vi.advanceTimersByTime(1);
        writes.push(bridge.stats().writes - before);
      }
    } finally {
      vi.useRealTimers();
    }
    return writes;
  }

  /** The prefill step of `requestId` with a 2-token prompt (rows at 0 and 1, its first token at 2). */
  function prefillStep(source: StepSource, requestId: string): RuntimeStep {
    const rows = decodeStep(source, [0, 1].map((position) => ({ id: requestId, position, tokenId: 5 + position })));
    return { ...rows, phase: 'prefill', batchSize: 1, tokens: { requestIds: [requestId], positions: Int32Array.from([2]), tokenIds: Int32Array.from([7]) } };
  }

  it('holds a request\'s data for its own hold (header or plan update) in place of the subscription\'s, the shortest hold among running requests in force', async () => {
    const gate = await startGate();
    const tapped = await tappedBridge(gate, { flushMs: 2, flushRows: NEVER_ROWS });
    const { bridge, source } = tapped;
    const every10th = (n: number) => Array.from({ length: n }, (_, i) => (i % 10 === 9 ? 1 : 0));
    const everyOther = (n: number) => Array.from({ length: n }, (_, i) => (i % 2 === 1 ? 1 : 0));
    expect(bridge.health().delay_ms).toBe(2);

    // req-1's HTTP request said 10 ms (x-saegate-tap-max-delay-ms): from its prefill, its data
    // waits 10 ms though the subscription says nothing (flushMs 2).
    bridge.trackRequest('req-1', [5, 6], 10);
    expect(bridge.health().delay_ms).toBe(2); // tracked, not running yet
    source.step(prefillStep(source, 'req-1'));
    expect(bridge.health().delay_ms).toBe(10);
    expect(bridge.health().requests_with_own_hold).toBe(1);
    bridge.flush();
    expect(pacedRequests(tapped, ['req-1'], 20, 3)).toEqual(every10th(20));

    // req-2 has no hold of its own: while it runs, the subscription's 2 ms is in force for both.
    bridge.trackRequest('req-2', [5, 6]);
    source.step(prefillStep(source, 'req-2'));
    expect(bridge.health().delay_ms).toBe(2);
    bridge.flush();
    expect(pacedRequests(tapped, ['req-1', 'req-2'], 10, 23)).toEqual(everyOther(10));

    // Its end gives req-1's 10 ms back.
    source.end('req-2', finished(11));
    expect(bridge.health().delay_ms).toBe(10);
    bridge.flush();
    expect(pacedRequests(tapped, ['req-1'], 20, 33)).toEqual(every10th(20));

    // A plan update's maxDelayMs replaces req-1's hold (0: nothing beyond flushMs).
    tapped.conn.sendPlanUpdate({ requestId: 'req-1', planId: 'plan-x-1', entries: [], maxDelayMs: 0 });
    await waitFor('the plan update to reach the bridge', () => bridge.health().delay_ms === 2, { observed: () => bridge.health().delay_ms });
    expect(pacedRequests(tapped, ['req-1'], 10, 53)).toEqual(everyOther(10));
    expect(bridge.health().requests_with_own_hold).toBe(1);

    // With no request running, the subscription's hold is in force again.
    source.end('req-1', finished(61));
    expect(bridge.health().delay_ms).toBe(2);
    tapped.conn.subscribe({ hooks: [HOOK_A], dtype: 'f32', includePrompt: false, maxDelayMs: 10 });
    await waitFor('the relaxed subscription to reach the bridge', () => bridge.health().delay_ms === 10, { observed: () => bridge.health().delay_ms });
  });

  it('moves the flush timer forward when a request with a shorter hold starts, so entries held for a longer one leave within the shorter', async () => {
    const gate = await startGate();
    const tapped = await tappedBridge(gate, { flushMs: 2, flushRows: NEVER_ROWS });
    const { bridge, source, log } = tapped;
    bridge.trackRequest('req-1', [5, 6], 50);
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] });
    let writes: number[];
    try {
      source.step(prefillStep(source, 'req-1'));
      // 50 ms: the timer is set for 50 ms after the prefill's entries.
      vi.advanceTimersByTime(1);
      expect(bridge.stats().writes).toBe(0);
      // A request with the subscription's hold (2 ms) starts; its prefill does not reach the
      // step rule (its interval average is 0.2 ms), but the timer now fires 2 ms after the
      // oldest entry, not 50.
      bridge.trackRequest('req-2', [5, 6]);
      source.step(prefillStep(source, 'req-2'));
      expect(bridge.stats().writes).toBe(0);
      vi.advanceTimersByTime(1);
      writes = [bridge.stats().writes];
    } finally {
      vi.useRealTimers();
    }
    expect(writes).toEqual([1]);
    await waitFor('the flush', () => log.length === 2, { observed: () => log.map((m) => m.kind) });
    expect(log.map((m) => m.kind)).toEqual(['tokens', 'rows']);
  });

  it('sends a lone step and a lone end by the timer, with no further step or call', async () => {
    const gate = await startGate();
    const { bridge, source, log } = await tappedBridge(gate, { flushMs: 20, flushRows: NEVER_ROWS });
    const entries: StepEntry[] = [{ id: 'req-2', position: 0, tokenId: 7 }];
    source.step(decodeStep(source, entries));
    // The first step has no step interval yet and nothing pending is older than 0 ms: no flush now.
    expect(bridge.stats().writes).toBe(0);
    await waitFor('the timer to send the step', () => log.length === 2, { observed: () => log.map((m) => m.kind) });
    expect(log).toEqual([tokensOf([entries]), rowsOf(HOOK_A, [entries])]);
    expect(bridge.stats().writes).toBe(1);

    source.end('req-2', finished(1));
    expect(bridge.stats().writes).toBe(1);
    await waitFor('the timer to send the end', () => log.length === 3, { observed: () => log.map((m) => m.kind) });
    expect(log[2]).toEqual(endOf('req-2', 1));
    expect(bridge.stats().writes).toBe(2);
  });

  it('keeps every request\'s tokens and rows before its end across several flushes, an end queued behind pending rows included', async () => {
    const gate = await startGate();
    // 2 entries per request per step; three requests in a step make 6 and flush.
    const { bridge, source, log } = await tappedBridge(gate, { flushMs: NEVER_MS, flushRows: 6 });
    const e = (n: number, position: number): StepEntry => ({ id: `req-${n}`, position, tokenId: n * 100 + position });
    const script: (StepEntry[] | string)[] = [
      [e(1, 0), e(2, 0)], // 4 pending
      [e(1, 1)], // 6: flush 1
      [e(1, 2), e(2, 1)], // 4 pending
      'req-1', // req-1's end, behind its last row (pending)
      [e(2, 2), e(3, 0)], // 8: flush 2 (tokens, rows, then req-1's end)
      [e(2, 3), e(3, 1), e(3, 2)], // 6: flush 3
      'req-2', // pending alone
      [e(3, 3)], // 2 pending, req-2's end still pending
      'req-3',
    ];
    const writesAfter: number[] = [];
    for (const item of script) {
      if (typeof item === 'string') source.end(item, finished(4));
      else source.step(decodeStep(source, item));
      writesAfter.push(bridge.stats().writes);
    }
    expect(writesAfter).toEqual([0, 1, 1, 1, 2, 3, 3, 3, 3]);
    bridge.flush();
    expect(bridge.stats().writes).toBe(4);
    await waitFor('all three ends', () => log.filter((m) => m.kind === 'end').length === 3, { observed: () => log.map((m) => m.kind) });

    const stepsOf = (from: number, to: number): StepEntry[][] => script.slice(from, to).filter((item): item is StepEntry[] => typeof item !== 'string');
    expect(log).toEqual([
      tokensOf(stepsOf(0, 2)),
      rowsOf(HOOK_A, stepsOf(0, 2)),
      tokensOf(stepsOf(2, 5)),
      rowsOf(HOOK_A, stepsOf(2, 5)),
      endOf('req-1', 4),
      tokensOf(stepsOf(5, 6)),
      rowsOf(HOOK_A, stepsOf(5, 6)),
      tokensOf(stepsOf(7, 8)),
      rowsOf(HOOK_A, stepsOf(7, 8)),
      endOf('req-2', 4),
      endOf('req-3', 4),
    ]);
    // The same property stated per request: nothing of a request arrives after its end.
    for (const id of ['req-1', 'req-2', 'req-3']) {
      const endAt = log.findIndex((m) => m.kind === 'end' && m.requestId === id);
      const mentions = log.map((m) => (m.kind === 'tokens' ? m.entries.some(([r]) => r === id) : m.kind === 'rows' && m.rows.some(([r]) => r === id)));
      const lastDataAt = mentions.lastIndexOf(true);
      expect(lastDataAt).toBeGreaterThanOrEqual(0);
      expect(endAt).toBeGreaterThan(lastDataAt);
    }
  });

  it('sends pending tokens, rows and ends on close() before the connection closes', async () => {
    const gate = await startGate();
    const { bridge, source, log } = await tappedBridge(gate, { flushMs: NEVER_MS, flushRows: NEVER_ROWS });
    const entries: StepEntry[] = [
      { id: 'req-1', position: 2, tokenId: 5 },
      { id: 'req-2', position: 9, tokenId: 6 },
    ];
    source.step(decodeStep(source, entries));
    source.end('req-2', finished(2));
    expect(bridge.stats().writes).toBe(0);
    await bridge.close();
    expect(bridge.stats().writes).toBe(1);
    await waitFor('the connection to close', () => log.some((m) => m.kind === 'close'), { observed: () => log.map((m) => m.kind) });
    expect(log).toEqual([tokensOf([entries]), rowsOf(HOOK_A, [entries]), endOf('req-2', 2), { kind: 'close' }]);
  });

  it('flushing while saegate is away drops the rows as disconnected and delivers the tokens, then the end, on the next connection in one write', async () => {
    const gate = await startGate();
    const { bridge, source, conn, log } = await tappedBridge(gate, { flushMs: NEVER_MS, flushRows: NEVER_ROWS });
    const entries: StepEntry[] = [
      { id: 'req-1', position: 3, tokenId: 11 },
      { id: 'req-2', position: 1, tokenId: 21 },
    ];
    source.step(decodeStep(source, entries));
    source.end('req-1', finished(1));
    const nextConn = gate.tap.nextConnection();
    conn.close();
    await waitFor('the bridge to see the disconnection', () => !bridge.client.connected);
    expect(source.tap).toBeNull();

    bridge.flush();
    expect(bridge.stats().rowsDropped.disconnected).toBe(2);
    // Nothing reached a socket: the tokens and the end wait in the client's queue.
    expect(bridge.stats().writes).toBe(0);
    const reconnected = await nextConn;
    const again = record(reconnected);
    await waitFor('the tokens and the end on the new connection', () => again.length === 2, { observed: () => again.map((m) => m.kind) });
    expect(again).toEqual([tokensOf([entries]), endOf('req-1', 1)]);
    // What waited went out in one write at the welcome.
    expect(bridge.stats().writes).toBe(1);
    expect(log).toEqual([{ kind: 'close' }]);
  });

  it('puts a prefilled request\'s prompt tokens in the same pending tokens message, before any of its rows', async () => {
    const gate = await startGate();
    const { bridge, source, log } = await tappedBridge(gate, { flushMs: NEVER_MS, flushRows: NEVER_ROWS }, [HOOK_A], 'f32', true);
    const decode: StepEntry[] = [{ id: 'req-1', position: 9, tokenId: 19 }];
    source.step(decodeStep(source, decode));
    // req-2 arrives with a 3-token prompt: its prefill taps the prompt's positions and emits the
    // token at position 3.
    bridge.trackRequest('req-2', [5, 6, 7]);
    const promptRows: StepEntry[] = [0, 1, 2].map((position) => ({ id: 'req-2', position, tokenId: 5 + position }));
    const prefill = decodeStep(source, promptRows);
    source.step({ ...prefill, phase: 'prefill', batchSize: 1, tokens: { requestIds: ['req-2'], positions: Int32Array.from([3]), tokenIds: Int32Array.from([8]) } });
    expect(bridge.stats().writes).toBe(0);
    bridge.flush();
    await waitFor('the flush', () => log.length === 2, { observed: () => log.map((m) => m.kind) });
    expect(log).toEqual([tokensOf([decode, promptRows, [{ id: 'req-2', position: 3, tokenId: 8 }]]), rowsOf(HOOK_A, [decode, promptRows])]);
  });

  it('sends one frame per subscribed hook per flush, each with the rows of every pending step (f16 rows as parts)', async () => {
    const gate = await startGate();
    const { bridge, source, log } = await tappedBridge(gate, { flushMs: NEVER_MS, flushRows: NEVER_ROWS }, [HOOK_A, HOOK_B], 'f16');
    const steps: StepEntry[][] = [
      [
        { id: 'req-1', position: 4, tokenId: 1 },
        { id: 'req-2', position: 0, tokenId: 2 },
      ],
      [{ id: 'req-2', position: 1, tokenId: 3 }],
      [
        { id: 'req-1', position: 5, tokenId: 4 },
        { id: 'req-3', position: 2, tokenId: 5 },
        { id: 'req-2', position: 2, tokenId: 6 },
      ],
    ];
    for (const entries of steps) source.step(decodeStep(source, entries));
    bridge.flush();
    expect(bridge.stats().writes).toBe(1);
    expect(bridge.stats().rowsSent).toBe(12);
    await waitFor('both hooks\' frames', () => log.length === 3, { observed: () => log.map((m) => m.kind) });
    expect(log).toEqual([tokensOf(steps), rowsOf(HOOK_A, steps, 'f16'), rowsOf(HOOK_B, steps, 'f16')]);

    // A second flush: again one frame per hook, with only the new step's rows.
    const next: StepEntry[] = [{ id: 'req-3', position: 3, tokenId: 7 }];
    source.step(decodeStep(source, next));
    bridge.flush();
    expect(bridge.stats().writes).toBe(2);
    await waitFor('the second flush', () => log.length === 6);
    expect(log.slice(3)).toEqual([tokensOf([next]), rowsOf(HOOK_A, [next], 'f16'), rowsOf(HOOK_B, [next], 'f16')]);
  });
});

describe('TapClientStats.writes', () => {
  async function connectedClient(gate: Gate): Promise<{ client: TapClient; log: Received[] }> {
    const nextConn = gate.tap.nextConnection();
    const client = new TapClient({ url: gate.url, hello: { modelId: 'm', dModel: D, nLayers: 2, hookPoints: HOOKS, dtypes: ['f32', 'f16'], canSteer: true } });
    cleanups.push(() => client.close());
    client.start();
    const conn = await nextConn;
    const log = record(conn);
    await waitFor('the welcome', () => client.connected);
    const subscribed = new Promise<void>((resolve) => client.once('subscribe', () => resolve()));
    conn.subscribe({ hooks: [HOOK_A], dtype: 'f32', includePrompt: false });
    await subscribed;
    expect(client.stats.writes).toBe(0);
    return { client, log };
  }

  const tokens = (id: string, position: number) => ({ requestIds: [id], positions: [position], tokenIds: [position], texts: ['t'] });
  const rows = (id: string, position: number) => ({ hook: HOOK_A, requestIds: [id], positions: [position], data: Float32Array.from(rowValues(id, position, HOOK_A)) });

  it('counts one write per frame sent outside a batch', async () => {
    const gate = await startGate();
    const { client, log } = await connectedClient(gate);
    client.sendTokens(tokens('req-1', 0));
    client.sendTokens(tokens('req-1', 1));
    expect(client.stats.writes).toBe(2);
    expect(client.sendActivations(rows('req-1', 1))).toBe(true);
    client.sendEnd({ requestId: 'req-1', promptTokens: 1, completionTokens: 2, finishReason: 'stop' });
    expect(client.stats.writes).toBe(4);
    await waitFor('four messages', () => log.length === 4, { observed: () => log.map((m) => m.kind) });
    expect(log.map((m) => m.kind)).toEqual(['tokens', 'tokens', 'rows', 'end']);
  });

  it('counts a batch of two sends once, an empty batch not at all, and a nested batch once', async () => {
    const gate = await startGate();
    const { client, log } = await connectedClient(gate);
    client.batch(() => {
      client.sendTokens(tokens('req-1', 0));
      client.sendActivations(rows('req-1', 0));
    });
    expect(client.stats.writes).toBe(1);

    client.batch(() => {});
    expect(client.stats.writes).toBe(1);
    // Rows of a hook saegate did not subscribe to are not sent: still an empty batch.
    client.batch(() => {
      expect(client.sendActivations({ ...rows('req-1', 0), hook: HOOK_B })).toBe(false);
    });
    expect(client.stats.writes).toBe(1);

    client.batch(() => {
      client.sendTokens(tokens('req-2', 0));
      client.batch(() => {
        client.sendActivations(rows('req-2', 0));
        client.sendTokens(tokens('req-2', 1));
      });
      expect(client.stats.writes).toBe(1);
      client.sendEnd({ requestId: 'req-2', promptTokens: 1, completionTokens: 2, finishReason: 'stop' });
    });
    expect(client.stats.writes).toBe(2);
    expect(client.stats.framesSent - 1).toBe(6); // the hello is a frame too, not a counted write
    await waitFor('six messages', () => log.length === 6, { observed: () => log.map((m) => m.kind) });
    expect(log.map((m) => m.kind)).toEqual(['tokens', 'rows', 'tokens', 'rows', 'tokens', 'end']);
  });
});
