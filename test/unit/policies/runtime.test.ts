import { Registry } from 'prom-client';
import { describe, expect, it, vi } from 'vitest';
import { err } from '../../../src/common/errors.js';
import { projectionKey, type CompiledPolicy } from '../../../src/policies/compile.js';
import { float32ToFloat16 } from '../../../src/common/safetensors.js';
import { POLICY_RUNTIME_METRIC_NAMES } from '../../../src/policies/metrics.js';
import type { ResolvedRequestPlan } from '../../../src/policies/resolve.js';
import { ConditionRuntime, type PlanUpdater, type RuntimeRecord } from '../../../src/policies/runtime.js';
import type { SaeResultBatch } from '../../../src/sae/batcher.js';
import { makeSteeringVector } from '../../../src/steering/vector.js';
import type { PlanUpdateResult, SteeringTerm } from '../../../src/tap/host.js';
import type { TokensMessage } from '../../../src/tap/messages.js';
import type { ActivationsFrame } from '../../../src/tap/server.js';
import { FeatureScreen } from '../../../src/policies/screen.js';
import { seededStandardSae } from '../../helpers/sae.js';
import { seededUniform } from '../../../src/common/random.js';
import { documentedMetrics } from '../../helpers/metrics-doc.js';

const HOOK = 'blocks.2.hook_resid_post';
const vector = makeSteeringVector('<memory>', new Map([[HOOK, Float32Array.of(1, 2, 3, 4)]]));
const when = (above: number, forTokens = 1) => ({ feature: { sae: 'demo', index: 7, above, forTokens } });

function policy(over: Partial<CompiledPolicy>): CompiledPolicy {
  return { name: 'p', qualifiedName: 'p@3', priority: 100, failClosed: false, match: {}, steers: [], watches: [], flags: [], aborts: [], file: 'p.yaml', ...over };
}

function plan(...matched: CompiledPolicy[]): ResolvedRequestPlan {
  return { policies: matched.map((p) => p.qualifiedName), steering: [], failClosed: false, matched, setVersion: 3 };
}

const conditionalSteer = policy({ steers: [{ vector, hooks: [HOOK], scale: -2, positions: 'all', when: when(1), forTokens: undefined }], flags: [{ name: 'hot', when: when(4) }, { name: 'always', when: undefined }] });

/** A result batch of SAE `demo`'s hook: rows (request, position, value of feature 7); topK 2 with −1 padding. */
function batch(rows: [string, number, number][]): SaeResultBatch {
  const requestIds = [...new Set(rows.map((r) => r[0]))];
  const n = rows.length;
  const indices = new Int32Array(n * 2).fill(-1);
  const values = new Float32Array(n * 2);
  rows.forEach(([, , value], i) => {
    indices[i * 2] = 3; // another feature first, so the lookup must scan
    values[i * 2] = 9;
    if (value > 0) {
      indices[i * 2 + 1] = 7;
      values[i * 2 + 1] = value;
    }
  });
  return {
    hook: HOOK,
    rowCount: n,
    topK: 2,
    requestIds,
    rowRequestIndexes: Uint16Array.from(rows.map((r) => requestIds.indexOf(r[0]))),
    positions: Int32Array.from(rows.map((r) => r[1])),
    tokenIds: new Int32Array(n).fill(-1),
    tokenTexts: rows.map(() => ''),
    indices,
    values,
    l0: new Int32Array(n),
    sqError: new Float32Array(n),
    fvu: new Float32Array(n),
  };
}

/** An activations frame at HOOK (f32, d_model 4): rows (request, position, values). */
function rowsFrame(rows: [string, number, number[]][], dModel = 4): ActivationsFrame {
  const requestIds = [...new Set(rows.map((r) => r[0]))];
  return {
    type: 'activations',
    hookIndex: 0,
    hook: HOOK,
    dModel,
    droppedRowsSinceLastFrame: 0,
    rowCount: rows.length,
    requestIds,
    rowRequestIndexes: Uint16Array.from(rows.map((r) => requestIds.indexOf(r[0]))),
    positions: Int32Array.from(rows.map((r) => r[1])),
    dtype: 'f32',
    data: Float32Array.from(rows.flatMap((r) => r[2])),
  };
}

function tokens(requestId: string, ...positions: number[]): TokensMessage {
  return { type: 'tokens', requestIds: [requestId], rowRequestIndexes: new Uint16Array(positions.length), positions: Int32Array.from(positions), tokenIds: new Int32Array(positions.length), texts: positions.map(() => 'x') };
}

/** Records plan updates and answers with `answer`. */
class RecordingTap implements PlanUpdater {
  readonly updates: { requestId: string; steering: SteeringTerm[]; maxDelayMs?: number }[] = [];
  answer: (requestId: string) => PlanUpdateResult = () => ({ delivered: true, planId: `plan-${this.updates.length}`, sessionId: 's' });

  planUpdate(requestId: string, steering: readonly SteeringTerm[], maxDelayMs?: number): PlanUpdateResult {
    this.updates.push({ requestId, steering: [...steering], ...(maxDelayMs !== undefined && { maxDelayMs }) });
    return this.answer(requestId);
  }
}

function setup(maxRequests?: number, lateResultsMs?: number, relaxedTapDelayMs?: () => number | null) {
  const tap = new RecordingTap();
  const registry = new Registry();
  const aborts: { requestId: string; policy: string; reason?: string }[] = [];
  const aborter = { taken: true, abortRequest: (requestId: string, abort: { policy: string; reason?: string }) => (aborts.push({ requestId, ...abort }), aborter.taken) };
  const runtime = new ConditionRuntime({ tap, saeByHook: new Map([[HOOK, 'demo']]), registry, maxRequests, aborter, lateResultsMs, relaxedTapDelayMs });
  const records: RuntimeRecord[] = [];
  runtime.onRecord((r) => records.push(r));
  /** Sum of a series' values over the matching labels (`NAME_count` of a histogram too). */
  const metric = async (name: string, labels: Record<string, string> = {}): Promise<number> => {
    const base = registry.getSingleMetric(name) ? name : name.replace(/_count$/, '');
    const values = (await registry.getSingleMetric(base)!.get()).values.filter((v) => ((v as { metricName?: string }).metricName ?? base) === name);
    return values.filter((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l)).reduce((sum, v) => sum + v.value, 0);
  };
  return { tap, registry, runtime, records, metric, aborts, aborter };
}

describe('conditional policies at run time', () => {
  it('leaves a plan without flags or conditions as it is', () => {
    const { runtime } = setup();
    const resolved = plan(policy({ steers: [{ vector, hooks: [HOOK], scale: 1, positions: 'all', when: undefined, forTokens: undefined }] }));
    expect(runtime.resolve('r', resolved)).toBe(resolved);
    expect(runtime.activeRequests).toBe(0);
  });

  it('fires a steer at the first crossing, sends the whole steering as one plan update from the next position, and lists it', async () => {
    const { runtime, tap, records, metric } = setup();
    const { outcome } = runtime.resolve('r', plan(conditionalSteer));
    expect(outcome!.applied(null)).toBe('policy=p@3, flag=always');
    // Position 2 arrives before 1: evaluation waits for 1, then fires at 2 (value 1.5 > 1).
    runtime.onResult(batch([['r', 0, 0], ['other', 0, 5], ['r', 2, 1.5]]));
    expect(tap.updates).toEqual([]);
    runtime.onResult(batch([['r', 1, 0.5], ['r', 3, 5]]));
    expect(tap.updates).toHaveLength(1);
    expect(tap.updates[0].requestId).toBe('r');
    expect(tap.updates[0].steering.map((t) => [t.hook, t.scale, t.fromPosition, t.untilPosition])).toEqual([[HOOK, -2, 3, null]]);
    expect(outcome!.applied(null)).toBe('policy=p@3, flag=always, trigger=p@3:2:plan-1, flag=hot:3');
    expect(records.map((r) => (r.type === 'trigger' ? [r.kind, r.triggerPosition, r.outcome ?? r.flag] : r.type))).toEqual([['steer', 2, 'sent'], ['flag', 3, 'hot']]);
    expect(await metric('saegate_policy_flags_total', { policy: 'p', flag: 'always' })).toBe(1);
    expect(await metric('saegate_policy_flags_total', { policy: 'p', flag: 'hot' })).toBe(1);
    expect(await metric('saegate_policy_triggers_total', { policy: 'p', kind: 'steer' })).toBe(1);
    expect(await metric('saegate_policy_plan_updates_total', { outcome: 'sent' })).toBe(1);
    // Fired once: later crossings send nothing more.
    runtime.onResult(batch([['r', 4, 9]]));
    expect(tap.updates).toHaveLength(1);
  });

  it('says it waits on the SAE results of a request with a condition on that SAE, at that SAE\'s hook only, until the request is released', () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      const { runtime } = setup(undefined, 1000);
      expect(runtime.waitsOn(HOOK, ['r'])).toBe(false);
      // Unconditional steering and flags wait on nothing.
      runtime.resolve('plain', plan(policy({ steers: [{ vector, hooks: [HOOK], scale: 1, positions: 'all', when: undefined, forTokens: undefined }], flags: [{ name: 'always', when: undefined }] })));
      expect(runtime.waitsOn(HOOK, ['plain'])).toBe(false);
      const { outcome } = runtime.resolve('r', plan(conditionalSteer));
      // Nothing waits before a row of the request arrived; without a screen, every row seen does.
      expect(runtime.waitsOn(HOOK, ['other', 'r'])).toBe(false);
      runtime.onFrame(rowsFrame([['r', 0, [0, 0, 0, 0]]]));
      expect(runtime.waitsOn(HOOK, ['other', 'r'])).toBe(true);
      expect(runtime.waitsOn(HOOK, ['other', 'plain'])).toBe(false);
      expect(runtime.waitsOn('blocks.9.hook_resid_post', ['r'])).toBe(false);
      // Once every conditional rule of the request has fired, nothing waits on its rows any more.
      runtime.resolve('fires', plan(conditionalSteer));
      runtime.onResult(batch([['fires', 0, 5]]));
      expect(runtime.waitsOn(HOOK, ['fires'])).toBe(false);
      outcome!.done();
      // Still listening for late results until lateResultsMs have passed.
      vi.advanceTimersByTime(999);
      expect(runtime.waitsOn(HOOK, ['r'])).toBe(true);
      vi.advanceTimersByTime(1);
      expect(runtime.waitsOn(HOOK, ['r'])).toBe(false);
    } finally {
      vi.useRealTimers();
    }
  });

  it('measures the lag from the tokens seen before the plan ack, in steps and seconds', async () => {
    const { runtime, records, metric } = setup();
    runtime.resolve('r', plan(conditionalSteer));
    runtime.tokens(tokens('r', 0, 1, 2, 3)); // prefill: prompt 0..2, first generated token at 3
    runtime.onResult(batch([['r', 0, 0], ['r', 1, 2]])); // fires at 1
    runtime.tokens(tokens('r', 4));
    runtime.tokens(tokens('r', 5));
    runtime.planAck({ requestId: 'r', planId: 'plan-1', accepted: true });
    // Last token seen at the ack: 5, so the step feeding 5 may be running: first steered 6, lag 5 steps.
    expect(await metric('saegate_policy_trigger_lag_steps_count')).toBe(1);
    expect(records.filter((r) => r.type === 'lag')).toEqual([]);
    runtime.tokens(tokens('r', 6));
    expect(records.filter((r) => r.type === 'lag')).toEqual([]);
    runtime.tokens(tokens('r', 7)); // the first steered step (feeding 6) is done
    const lag = records.find((r) => r.type === 'lag');
    expect(lag).toMatchObject({ requestId: 'r', planId: 'plan-1', triggerPosition: 1, firstSteeredPosition: 6, steps: 5 });
    expect(lag?.type === 'lag' && lag.seconds !== null && lag.seconds >= 0).toBe(true);
    expect(await metric('saegate_policy_trigger_lag_seconds_count')).toBe(1);
  });

  it('says skipped when the update went nowhere, and rejected when the model server refused it', async () => {
    const { runtime, tap, metric } = setup();
    tap.answer = (requestId) => ({ delivered: false, error: err('SAEGATE_ERR_TAP_UNROUTED', requestId, 'it has ended') });
    const a = runtime.resolve('a', plan(conditionalSteer)).outcome!;
    runtime.onResult(batch([['a', 0, 3]]));
    expect(a.applied(null)).toBe('policy=p@3, flag=always, trigger=p@3:0:skipped');
    expect(await metric('saegate_policy_plan_updates_total', { outcome: 'unrouted' })).toBe(1);
    tap.answer = () => ({ delivered: true, planId: 'plan-b', sessionId: 's' });
    const b = runtime.resolve('b', plan(conditionalSteer)).outcome!;
    runtime.onResult(batch([['b', 0, 3]]));
    runtime.planAck({ requestId: 'b', planId: 'plan-b', accepted: false, reason: 'request already finished' });
    expect(b.applied('plan-0')).toBe('policy=p@3, flag=always, trigger=p@3:0:rejected');
    expect(await metric('saegate_policy_plan_updates_total', { outcome: 'rejected' })).toBe(1);
  });

  it('keeps a finished request lateResultsMs for late SAE results, acting on flags only, then releases it; holds at most maxRequests', async () => {
    vi.useFakeTimers();
    try {
      const { runtime, tap, metric } = setup(2, 1000);
      const flagging = policy({ name: 'late', qualifiedName: 'late@1', flags: [{ name: 'hot', when: when(2) }] });
      const first = runtime.resolve('r1', plan(conditionalSteer, flagging)).outcome!;
      runtime.resolve('r2', plan(conditionalSteer));
      expect(await metric('saegate_policy_conditional_requests')).toBe(2);
      first.done();
      first.done();
      // Its rows may still be with the SAE: still evaluated, but a steer has nothing left to steer.
      expect(runtime.activeRequests).toBe(2);
      runtime.onResult(batch([['r1', 0, 3]]));
      expect(tap.updates).toEqual([]);
      expect(await metric('saegate_policy_flags_total', { policy: 'late', flag: 'hot' })).toBe(1);
      await vi.advanceTimersByTimeAsync(1000);
      expect(runtime.activeRequests).toBe(1);
      runtime.onResult(batch([['r1', 1, 3]]));
      expect(await metric('saegate_policy_flags_total', { policy: 'late', flag: 'hot' })).toBe(1);
      runtime.resolve('r3', plan(conditionalSteer));
      runtime.resolve('r4', plan(conditionalSteer)); // r2, the oldest, goes
      expect(runtime.activeRequests).toBe(2);
      runtime.onResult(batch([['r2', 0, 3], ['r4', 0, 3]]));
      expect(tap.updates.map((u) => u.requestId)).toEqual(['r4']);
      expect(await metric('saegate_policy_conditional_requests')).toBe(2);
    } finally {
      vi.useRealTimers();
    }
  });

  it('stops the generation through the aborter when an abort condition fires, once, and lists it', async () => {
    const { runtime, aborts, aborter, metric } = setup();
    const aborting = policy({ name: 'stop', qualifiedName: 'stop@3', aborts: [{ when: when(2, 2), reason: 'too hot' }] });
    const outcome = runtime.resolve('r', plan(aborting)).outcome!;
    runtime.onResult(batch([['r', 0, 3], ['r', 1, 1], ['r', 2, 3]]));
    expect(aborts).toEqual([]); // two consecutive positions above 2 are needed
    runtime.onResult(batch([['r', 3, 2.5], ['r', 4, 9]]));
    expect(aborts).toEqual([{ requestId: 'r', policy: 'stop@3', reason: 'too hot' }]);
    expect(outcome.applied(null)).toBe('policy=stop@3, abort=stop@3:3');
    expect(await metric('saegate_policy_triggers_total', { policy: 'stop', kind: 'abort' })).toBe(1);
    // An abort the proxy could not take (the request already ended) is listed as skipped.
    aborter.taken = false;
    const late = runtime.resolve('late', plan(aborting)).outcome!;
    runtime.onResult(batch([['late', 0, 5], ['late', 1, 5]]));
    expect(late.applied(null)).toBe('policy=stop@3, abort=stop@3:1:skipped');
  });

  it('with a relaxed tap hold: forwards it with requests nothing conditional reads, and sends it once a request\'s rules have all fired (not after an abort)', async () => {
    let hold: number | null = 50;
    const { runtime, tap, metric } = setup(undefined, undefined, () => hold);
    const unconditional = policy({ name: 'u', qualifiedName: 'u@3', steers: [{ vector, hooks: [HOOK], scale: 1, positions: 'all', when: undefined, forTokens: undefined }], flags: [{ name: 'always', when: undefined }] });
    // Nothing conditional: the plan carries the hold (the proxy sends x-saegate-tap-max-delay-ms).
    expect(runtime.resolve('none', plan()).tapMaxDelayMs).toBe(50);
    const plain = runtime.resolve('u', plan(unconditional));
    expect(plain.tapMaxDelayMs).toBe(50);
    expect(plain.outcome!.applied(null)).toBe('policy=u@3, flag=always');
    // A request a rule waits on keeps the subscription's short hold.
    expect(runtime.resolve('r', plan(conditionalSteer)).tapMaxDelayMs).toBeUndefined();
    // The steer fires first (the flag `hot` above 4 is still unfired): its update says nothing of the hold.
    runtime.onResult(batch([['r', 0, 2]]));
    expect(tap.updates.map((u) => [u.requestId, u.steering.length, u.maxDelayMs])).toEqual([['r', 1, undefined]]);
    // The flag fires: nothing is left to wait for, so an update with the same steering carries the hold.
    runtime.onResult(batch([['r', 1, 5]]));
    expect(tap.updates.map((u) => [u.requestId, u.steering.length, u.maxDelayMs])).toEqual([['r', 1, undefined], ['r', 1, 50]]);
    expect(tap.updates[1].steering).toEqual(tap.updates[0].steering);
    // Steer and flag firing together: one update, with the hold.
    runtime.resolve('s', plan(conditionalSteer));
    runtime.onResult(batch([['s', 0, 5]]));
    expect(tap.updates.slice(2).map((u) => [u.requestId, u.steering.length, u.maxDelayMs])).toEqual([['s', 1, 50]]);
    expect(await metric('saegate_policy_tap_holds_total', { when: 'forwarded' })).toBe(2);
    expect(await metric('saegate_policy_tap_holds_total', { when: 'fired' })).toBe(2);
    // An abort ends the generation: no update for the hold.
    const aborting = policy({ name: 'stop', qualifiedName: 'stop@3', aborts: [{ when: when(2), reason: 'hot' }] });
    runtime.resolve('a', plan(aborting));
    runtime.onResult(batch([['a', 0, 3]]));
    expect(tap.updates).toHaveLength(3);
    // While the subscription itself is relaxed (no condition loaded), no hold is needed per request.
    hold = null;
    expect(runtime.resolve('none-2', plan()).tapMaxDelayMs).toBeUndefined();
    runtime.resolve('t', plan(conditionalSteer));
    runtime.onResult(batch([['t', 0, 5]]));
    expect(tap.updates.slice(3).map((u) => [u.requestId, u.maxDelayMs])).toEqual([['t', undefined]]);
    expect(await metric('saegate_policy_tap_holds_total', { when: 'forwarded' })).toBe(2);
    expect(await metric('saegate_policy_tap_holds_total', { when: 'fired' })).toBe(2);
  });

  it('never waits on a flag with inResponse: false: it fires at its position from the results as they come, and holds nothing on the short tap', async () => {
    const { runtime, tap, metric } = setup(undefined, undefined, () => 50);
    const late = { name: 'late', when: when(4), inResponse: false };
    const steerAndLate = policy({ steers: conditionalSteer.steers, flags: [late] });
    const lateOnly = policy({ name: 'q', qualifiedName: 'q@3', flags: [late] });
    expect(ConditionRuntime.hasConditions([lateOnly])).toBe(false);
    expect(ConditionRuntime.hasConditions([steerAndLate])).toBe(true);
    const row = (id: string, position: number): ActivationsFrame => rowsFrame([[id, position, [1, 0, 0, 0]]]);

    // Only a late flag: forwarded with the monitoring hold, never urgent, and the flag still fires.
    const onlyLate = runtime.resolve('q', plan(lateOnly));
    expect(onlyLate.tapMaxDelayMs).toBe(50);
    runtime.onFrame(row('q', 0));
    expect(runtime.waitsOn(HOOK, ['q'])).toBe(false);
    runtime.onResult(batch([['q', 0, 1], ['q', 1, 5]]));
    expect(onlyLate.outcome!.applied(null)).toBe('policy=q@3, flag=late:1');
    expect(await metric('saegate_policy_flags_total', { policy: 'q', flag: 'late' })).toBe(1);
    expect(tap.updates).toEqual([]);

    // With a conditional steer: urgent until the steer fires; then the hold goes down once,
    // though the late flag has not fired; when it fires, nothing more is sent.
    const both = runtime.resolve('r', plan(steerAndLate));
    expect(both.tapMaxDelayMs).toBeUndefined();
    runtime.onFrame(row('r', 0));
    expect(runtime.waitsOn(HOOK, ['r'])).toBe(true);
    runtime.onResult(batch([['r', 0, 2]]));
    expect(tap.updates.map((u) => [u.requestId, u.steering.length, u.maxDelayMs])).toEqual([['r', 1, 50]]);
    runtime.onFrame(row('r', 1));
    expect(runtime.waitsOn(HOOK, ['r'])).toBe(false);
    runtime.onResult(batch([['r', 1, 4.5]]));
    expect(both.outcome!.applied(null)).toBe('policy=p@3, trigger=p@3:0:plan-1, flag=late:1');
    expect(tap.updates).toHaveLength(1);
    expect(await metric('saegate_policy_tap_holds_total', { when: 'forwarded' })).toBe(1);
    expect(await metric('saegate_policy_tap_holds_total', { when: 'fired' })).toBe(1);
  });

  it('evaluates projection conditions on the tapped rows (f32 and f16): fires at the first row whose projection on the unit direction is above', () => {
    const { runtime, tap } = setup();
    // Direction (3, 4) at the hook, unit (0.6, 0.8); the rows project to 1, 2.5, 6, 9 (above 5 from position 2).
    const projecting = policy({
      name: 'proj',
      qualifiedName: 'proj@3',
      steers: [{ vector, hooks: [HOOK], scale: -1, positions: 'all', when: { projection: { vector: 'v.safetensors', hook: HOOK, above: 5, forTokens: 1 } }, forTokens: undefined }],
      projections: new Map([[projectionKey('v.safetensors', HOOK), Float32Array.of(0.6, 0.8)]]),
    });
    const outcome = runtime.resolve('r', plan(projecting)).outcome!;
    const rows = [[1, 0.5], [2.1, 1.55], [6, 3], [9, 4.5]];
    const frame = (dtype: 'f32' | 'f16', positions: number[], requestId = 'r') => {
      const values = positions.flatMap((p) => rows[p]);
      return {
        type: 'activations' as const,
        hookIndex: 0,
        hook: HOOK,
        dModel: 2,
        droppedRowsSinceLastFrame: 0,
        rowCount: positions.length,
        requestIds: [requestId],
        rowRequestIndexes: new Uint16Array(positions.length),
        positions: Int32Array.from(positions),
        ...(dtype === 'f32' ? { dtype, data: Float32Array.from(values) } : { dtype, data: Uint16Array.from(values, (v) => float32ToFloat16(Float32Array.of(v))[0]) }),
      };
    };
    runtime.onFrame(frame('f16', [0, 1]));
    expect(tap.updates).toEqual([]);
    runtime.onFrame(frame('f32', [2, 3]));
    expect(tap.updates.map((u) => u.steering.map((t) => [t.scale, t.fromPosition]))).toEqual([[[-1, 3]]]);
    expect(outcome.applied(null)).toBe('policy=proj@3, trigger=proj@3:2:plan-1');
    // Another hook's frames and requests without projection conditions are not read.
    runtime.onFrame({ ...frame('f32', [0]), hook: 'blocks.0.hook_resid_post' });
    runtime.onFrame(frame('f32', [0, 1, 2, 3], 'other'));
    expect(tap.updates).toHaveLength(1);
    expect(ConditionRuntime.projectionHooks([projecting])).toEqual([HOOK]);
  });

  describe('with a screen on the SAE', () => {
    // SAE `demo` (standard, 4 → 8): feature 7's activation is relu(x · W_enc[:, 7] + b_enc[7]), with
    // b_dec subtracted from x first; the rules read feature 7 above 1 (steer) and above 4 (flag).
    const sae = seededStandardSae({ dIn: 4, dSae: 8, hook: HOOK, seed: 3, scales: { W_enc: 4, b_enc: 1, W_dec: 1, b_dec: 0.5 } });
    const activation = (x: readonly number[]): number => {
      let pre = sae.b_enc[7];
      for (let i = 0; i < 4; i++) pre += (x[i] - sae.b_dec[i]) * sae.W_enc[i * 8 + 7];
      return Math.max(0, pre);
    };
    /** Exact SAE results of these rows (feature 7 only), as the SAE sink would hand them over. */
    const results = (rows: [string, number, number[]][]): SaeResultBatch => batch(rows.map(([id, position, x]) => [id, position, activation(x)]));
    const screened = (): ReturnType<typeof setup> & { screen: FeatureScreen } => {
      const screen = FeatureScreen.forPrecision(sae, 'f32')!;
      const tap = new RecordingTap();
      const runtime = new ConditionRuntime({ tap, saeByHook: new Map([[HOOK, 'demo']]), screens: new Map([['demo', screen]]) });
      const records: RuntimeRecord[] = [];
      runtime.onRecord((r) => records.push(r));
      return { ...setup(), tap, runtime, records, screen };
    };
    /** A row whose feature 7 is exactly `value` (> 0), or whose pre-activation is far below 0. */
    const rowWith = (value: number): number[] => {
      // Along W_enc[:, 7]: x = b_dec + t · w / |w|², so x_c · w = t.
      const w = [0, 1, 2, 3].map((i) => sae.W_enc[i * 8 + 7]);
      const norm2 = w.reduce((a, b) => a + b * b, 0);
      const t = value - sae.b_enc[7];
      return w.map((wi, i) => sae.b_dec[i] + (t * wi) / norm2);
    };

    it('settles rows no unfired rule can fire on as they arrive: nothing waits on them, and their SAE results change nothing', () => {
      const { runtime, tap } = screened();
      runtime.resolve('r', plan(conditionalSteer));
      const quiet: [string, number, number[]][] = [['r', 0, rowWith(-5)], ['r', 1, rowWith(0.5)], ['r', 2, rowWith(0.9)]];
      runtime.onFrame(rowsFrame(quiet));
      expect(runtime.waitsOn(HOOK, ['r'])).toBe(false);
      runtime.onResult(results(quiet));
      expect(tap.updates).toEqual([]);
      // Position 3 might fire the steer (1.5 > 1): it and every row behind it wait for the SAE.
      runtime.onFrame(rowsFrame([['r', 3, rowWith(1.5)], ['r', 4, rowWith(-5)]]));
      expect(runtime.waitsOn(HOOK, ['r'])).toBe(true);
      runtime.onFrame(rowsFrame([['r', 5, rowWith(-5)]]));
      expect(runtime.waitsOn(HOOK, ['r'])).toBe(true);
      runtime.onResult(results([['r', 3, rowWith(1.5)], ['r', 4, rowWith(-5)]]));
      expect(tap.updates.map((u) => u.steering.map((t) => t.fromPosition))).toEqual([[4]]);
      expect(runtime.waitsOn(HOOK, ['r'])).toBe(true); // position 5 is still with the SAE
      runtime.onResult(results([['r', 5, rowWith(-5)]]));
      expect(runtime.waitsOn(HOOK, ['r'])).toBe(false);
      // Only the flag (above 4) is left: a row at 2 cannot fire it, one at 4.5 might.
      runtime.onFrame(rowsFrame([['r', 6, rowWith(2)]]));
      expect(runtime.waitsOn(HOOK, ['r'])).toBe(false);
      runtime.onFrame(rowsFrame([['r', 7, rowWith(4.5)]]));
      expect(runtime.waitsOn(HOOK, ['r'])).toBe(true);
    });

    it('leaves rows of another width, and every row without a screen, to the SAE', () => {
      const { runtime } = screened();
      runtime.resolve('r', plan(conditionalSteer));
      runtime.onFrame(rowsFrame([['r', 0, [0, 0]]], 2));
      expect(runtime.waitsOn(HOOK, ['r'])).toBe(true);
      const { runtime: bare } = setup();
      bare.resolve('r', plan(conditionalSteer));
      bare.onFrame(rowsFrame([['r', 0, rowWith(-5)]]));
      expect(bare.waitsOn(HOOK, ['r'])).toBe(true);
    });

    it('fires exactly what evaluating every SAE result fires, at the same positions, on random traffic', () => {
      // Requests of 20–60 positions, four at a time; rows arrive in frames of random size, and each
      // frame's SAE results come back zero to three frames later, as batches do. Most rows are
      // quiet; one in eight is within 0.25 of a threshold, either side. The same traffic without a
      // screen is the reference.
      const u = seededUniform(17);
      const forTokens = policy({
        name: 'q',
        qualifiedName: 'q@1',
        steers: [{ vector, hooks: [HOOK], scale: 1, positions: 'all', when: when(2, 3), forTokens: undefined }],
        aborts: [{ when: when(4.5), reason: 'hot' }],
      });
      const thresholds = [1, 2, 4, 4.5];
      const { runtime, tap, records } = screened();
      const reference = setup();
      let started = 0;
      const running: { id: string; next: number; length: number }[] = [];
      const start = (): void => {
        const id = `r${started++}`;
        runtime.resolve(id, plan(conditionalSteer, forTokens));
        reference.runtime.resolve(id, plan(conditionalSteer, forTokens));
        running.push({ id, next: 0, length: 20 + Math.floor(u() * 40) });
      };
      for (let i = 0; i < 4; i++) start();
      const inFlight: [string, number, number[]][][] = [];
      let settledFrames = 0;
      for (let f = 0; f < 600; f++) {
        const rows: [string, number, number[]][] = [];
        for (let n = 1 + Math.floor(u() * 4); n > 0; n--) {
          const at = Math.floor(u() * running.length);
          const request = running[at];
          const value = u() < 0.875 ? -3 + 3.5 * u() : thresholds[Math.floor(u() * thresholds.length)] + 0.5 * u() - 0.25;
          rows.push([request.id, request.next++, rowWith(value)]);
          if (request.next === request.length) {
            running.splice(at, 1);
            start();
          }
        }
        runtime.onFrame(rowsFrame(rows));
        if (!runtime.waitsOn(HOOK, [...new Set(rows.map((r) => r[0]))])) settledFrames++;
        inFlight.push(rows);
        while (inFlight.length > 3 || (inFlight.length > 0 && u() < 0.4)) {
          const done = inFlight.shift()!;
          runtime.onResult(results(done));
          reference.runtime.onResult(results(done));
        }
      }
      for (const done of inFlight) {
        runtime.onResult(results(done));
        reference.runtime.onResult(results(done));
      }
      const fired = (list: RuntimeRecord[]) => list.map((r) => (r.type === 'trigger' ? `${r.requestId}:${r.kind}:${r.policy}:${r.triggerPosition}` : r.type));
      expect(fired(reference.records).length).toBeGreaterThan(50);
      expect(fired(records)).toEqual(fired(reference.records));
      expect(tap.updates).toEqual(reference.tap.updates);
      // The screen did its work: a good share of frames had nothing waiting on the SAE.
      expect(settledFrames).toBeGreaterThan(150);
    });
  });

  it('registers exactly the metrics docs/metrics.md lists under Policies, besides the policy manager\'s', () => {
    const { registry } = setup();
    const exported = registry.getMetricsAsArray().map((m) => m.name);
    expect([...exported].sort()).toEqual([...POLICY_RUNTIME_METRIC_NAMES].sort());
    const manager = ['saegate_policy_set_version', 'saegate_policy_reload_ok', 'saegate_policy_reloads_total', 'saegate_policies'];
    expect([...documentedMetrics('Policies')].sort()).toEqual([...exported, ...manager].sort());
  });
});

