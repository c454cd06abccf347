import { describe, expect, it } from 'vitest';
import { LiveHub, type LiveFeatureBatch, type LiveMessage } from '../../../../src/proxy/live/hub.js';
import type { TokensMessage } from '../../../../src/tap/messages.js';
import { expectSaegateError } from '../../../helpers/errors.js';

/** One SAE batch: rows given as [requestId, position, text, [[index, value], …]], padded with −1 to the widest row. */
function batch(hook: string, rows: [string, number, string, [number, number][]][]): LiveFeatureBatch {
  const topK = Math.max(1, ...rows.map((r) => r[3].length));
  const requestIds = [...new Set(rows.map((r) => r[0]))];
  const indices = new Int32Array(rows.length * topK).fill(-1);
  const values = new Float32Array(rows.length * topK);
  rows.forEach(([, , , features], r) => features.forEach(([index, value], k) => {
    indices[r * topK + k] = index;
    values[r * topK + k] = value;
  }));
  return {
    hook,
    rowCount: rows.length,
    topK,
    requestIds,
    rowRequestIndexes: Uint16Array.from(rows.map((r) => requestIds.indexOf(r[0]))),
    positions: Int32Array.from(rows.map((r) => r[1])),
    tokenTexts: rows.map((r) => r[2]),
    indices,
    values,
  };
}

function tokens(requestId: string, entries: [number, string][]): TokensMessage {
  return {
    type: 'tokens',
    requestIds: [requestId],
    rowRequestIndexes: new Uint16Array(entries.length),
    positions: Int32Array.from(entries.map((e) => e[0])),
    tokenIds: new Int32Array(entries.length),
    texts: entries.map((e) => e[1]),
  };
}

function start(hub: LiveHub, requestId: string, policies: string[] = []): void {
  hub.started({ requestId, route: 'completions', model: 'stories260K', policies, steeringTerms: policies.length });
}

describe('LiveHub', () => {
  it('keeps the last maxRequests requests, evicts the oldest and announces it at the next flush', () => {
    const hub = new LiveHub({ maxRequests: 3 });
    const messages: LiveMessage[] = [];
    hub.subscribe((m) => messages.push(m));
    for (const id of ['a', 'b', 'c', 'd', 'e']) start(hub, id);
    expect(hub.size).toBe(3);
    expect(hub.request('a')).toBeUndefined();
    expect(hub.request('b')).toBeUndefined();
    hub.flush();
    expect(messages[0]).toEqual({ type: 'evict', ids: ['a', 'b'] });
    expect(messages[1].type === 'requests' && messages[1].requests.map((r) => r.id)).toEqual(['c', 'd', 'e']);
    const snapshot = hub.snapshot();
    expect(snapshot.type === 'snapshot' && snapshot.requests.map((r) => r.id)).toEqual(['c', 'd', 'e']);
  });

  it('ignores results, tokens and records of a request it does not track, so an evicted one cannot come back', () => {
    const hub = new LiveHub({ maxRequests: 1 });
    start(hub, 'old');
    start(hub, 'new');
    hub.features(batch('h', [['old', 0, 'x', [[1, 2]]]]));
    hub.tokens(tokens('old', [[1, 'y']]));
    hub.record({ type: 'trigger', requestId: 'old', policy: 'p@1', kind: 'flag', flag: 'f', triggerPosition: 0 });
    expect(hub.size).toBe(1);
    expect(hub.request('old')).toBeUndefined();
    expect(hub.request('new')?.tokens).toEqual([]);
  });

  it('keeps at most maxTokens tokens per request and counts the rest', () => {
    const hub = new LiveHub({ maxTokens: 4 });
    start(hub, 'r');
    hub.features(batch('h', Array.from({ length: 10 }, (_, p) => ['r', p, `t${p}`, [[p, 1]]] as [string, number, string, [number, number][]])));
    const view = hub.request('r')!;
    expect(view.tokens.map((t) => t.text)).toEqual(['t0', 't1', 't2', 't3']);
    expect(view.truncatedTokens).toBe(6);
  });

  it('keeps each token\'s maxFeatures strongest features across SAEs, strongest first, with their labels', () => {
    const hub = new LiveHub({ maxFeatures: 2, label: (hook, index) => (hook === 'h2' && index === 7 ? 'quotes' : undefined) });
    start(hub, 'r');
    hub.features(batch('h1', [['r', 0, 'A', [[3, 0.5], [4, 2.0], [5, 1.0]]]]));
    hub.features(batch('h2', [['r', 0, 'A', [[7, 1.5], [8, 0.1]]]]));
    expect(hub.request('r')!.tokens[0].features).toEqual([
      { hook: 'h1', index: 4, value: 2 },
      { hook: 'h2', index: 7, value: 1.5, label: 'quotes' },
    ]);
  });

  it('orders tokens by position whatever order batches and token messages arrive in', () => {
    const hub = new LiveHub();
    start(hub, 'r');
    hub.tokens(tokens('r', [[5, ' five'], [3, ' three']]));
    hub.features(batch('h', [['r', 4, ' four', [[1, 1]]], ['r', 3, '', [[2, 1]]]]));
    const view = hub.request('r')!;
    expect(view.tokens.map((t) => [t.position, t.text])).toEqual([[3, ' three'], [4, ' four'], [5, ' five']]);
    expect(view.tokens.map((t) => t.features.length)).toEqual([1, 1, 0]);
  });

  it('records the plan, applied value, end, triggers and their lag of a request', () => {
    const now = { t: 1000 };
    const hub = new LiveHub({ now: () => now.t });
    start(hub, 'r', ['steer-a@2']);
    hub.applied('r', 'policy=steer-a@2, steering=plan-1');
    hub.record({ type: 'trigger', requestId: 'r', policy: 'cond@2', kind: 'steer', triggerPosition: 9, outcome: 'sent', planId: 'plan-2' });
    hub.record({ type: 'lag', requestId: 'r', planId: 'plan-2', triggerPosition: 9, firstSteeredPosition: 11, steps: 2, seconds: 0.01, firedSeconds: 0.001, ackedSeconds: 0.005 });
    hub.end({ requestId: 'r', promptTokens: 6, completionTokens: 20, finishReason: 'length' });
    now.t = 2500;
    hub.done('r');
    expect(hub.request('r')).toMatchObject({
      policies: ['steer-a@2'],
      steeringTerms: 1,
      applied: 'policy=steer-a@2, steering=plan-1',
      promptTokens: 6,
      finishReason: 'length',
      startedAtMs: 1000,
      endedAtMs: 2500,
      triggers: [{ policy: 'cond@2', kind: 'steer', triggerPosition: 9, outcome: 'sent', lagSteps: 2 }],
    });
  });

  it('sends one message per flush with every changed request, and nothing when nothing changed', () => {
    const hub = new LiveHub();
    const messages: LiveMessage[] = [];
    hub.subscribe((m) => messages.push(m));
    start(hub, 'a');
    start(hub, 'b');
    hub.flush();
    hub.features(batch('h', Array.from({ length: 50 }, (_, p) => ['a', p, 'x', [[1, p]]] as [string, number, string, [number, number][]])));
    hub.flush();
    hub.flush();
    expect(messages.map((m) => (m.type === 'requests' ? m.requests.map((r) => r.id) : m.type))).toEqual([['a', 'b'], ['a']]);
  });

  it('charts token and SAE row rates without a drift source, and keeps maxSamples samples', () => {
    const now = { t: 0 };
    const hub = new LiveHub({ maxSamples: 2, now: () => now.t });
    start(hub, 'r');
    hub.tokens(tokens('r', [[0, 'a'], [1, 'b']]));
    hub.features(batch('h', [['r', 0, 'a', [[1, 1]]], ['r', 1, 'b', [[1, 1]]], ['r', 2, 'c', [[1, 1]]]]));
    now.t = 500;
    expect(hub.sample().series).toEqual([
      { name: 'tokens/s', value: 4, threshold: null },
      { name: 'SAE rows/s', value: 6, threshold: null },
    ]);
    now.t = 1500;
    expect(hub.sample().series[0].value).toBe(0);
    now.t = 2500;
    hub.sample();
    const snapshot = hub.snapshot();
    expect(snapshot.type === 'snapshot' && snapshot.samples.map((s) => s.atMs)).toEqual([1500, 2500]);
  });

  it('charts a drift source\'s scores, thresholds and alerts when one is plugged in', () => {
    const hub = new LiveHub({ drift: { snapshot: () => ({ atMs: 42, series: [{ name: 'sae/blocks.2 5m', value: 3.5, threshold: 3 }], alerts: ['drift blocks.2'] }) } });
    expect(hub.sample()).toEqual({ atMs: 42, source: 'drift', series: [{ name: 'sae/blocks.2 5m', value: 3.5, threshold: 3 }], alerts: ['drift blocks.2'] });
  });

  it('falls back to rates while the drift source has no series (no baseline yet), keeping its alerts', () => {
    const hub = new LiveHub({ drift: { snapshot: () => ({ atMs: 42, series: [], alerts: ['a'] }) } });
    const sample = hub.sample();
    expect(sample.source).toBe('rates');
    expect(sample.series.map((s) => s.name)).toEqual(['tokens/s', 'SAE rows/s']);
    expect(sample.alerts).toEqual(['a']);
  });

  it('puts the served model in every snapshot and tells viewers at once when it is set', () => {
    const synthetic = { name: 'synthetic', synthetic: true, detail: 'seeded random weights, not trained' };
    const hub = new LiveHub({ servedModel: synthetic });
    const first = hub.snapshot();
    expect(first.type === 'snapshot' && first.servedModel).toEqual(synthetic);
    expect(new LiveHub().snapshot()).toMatchObject({ servedModel: null });
    const messages: LiveMessage[] = [];
    hub.subscribe((m) => messages.push(m));
    const real = { name: 'stories260K', synthetic: false, detail: '/models/stories260K.bin' };
    hub.setServedModel(real);
    // Without a flush: the model is not a per-request change.
    expect(messages).toEqual([{ type: 'model', servedModel: real }]);
    expect(hub.snapshot()).toMatchObject({ servedModel: real });
  });

  it('refuses bounds that are not positive integers', () => {
    expectSaegateError(() => new LiveHub({ maxRequests: 0 }), 'SAEGATE_ERR_CONFIG', 'maxRequests', '0');
    expectSaegateError(() => new LiveHub({ maxTokens: 1.5 }), 'SAEGATE_ERR_CONFIG', 'maxTokens');
  });
});
