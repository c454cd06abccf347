/**
 * Conditional policies on live traffic: the loop from SAE results back to the model server.
 *
 * `resolve` wraps a request's resolved plan. When a matched policy has a conditional `steer` or
 * `flag` on a feature, the request gets a `LiveRequest`: one `RequestConditions` per SAE its rules
 * read (each SAE's results come in their own batches, and positions must be fed in order), fed
 * from `SaeSink.onResult` row by row. When a steer fires at position p its terms (from p + 1) join
 * the request's steering, and the whole steering goes to the connection serving the request as one
 * `plan_update` (`TapHost.planUpdate`); a flag adds `flag=NAME:p` to the request's
 * `x-saegate-applied` and counts in `saegate_policy_flags_total`. The proxy calls `done()` when the
 * exchange is over, however it ended; the request is then kept for `lateResultsMs` (10 s) so flags
 * on SAE results that land after the response still count (steers and aborts no longer act), and
 * released after that.
 *
 * **Lag.** A plan update takes effect from the model server's next decode step, and the tap says
 * nothing about which step that was. What it does say, in order on one socket: the `tokens` of
 * every step the server had finished when it took the update, then the `plan_ack` it sends as it
 * takes it. A `tokens` entry at position t means the step that fed position t − 1 is done, and
 * the server's next step (possibly already running) feeds t; so the first steered position is
 * taken as `max(p + 1, t + 1)` with t the last token position seen before the ack, and the lag in
 * steps is that minus p (1 = the very next step). It can be one step high (the server was idle
 * between steps) or low (its decode loop ran ahead of its own event loop). Seconds run from the
 * arrival of the tokens of the step that computed row p (entry p + 1) to the arrival of those of
 * the first steered step (entry `first + 1`).
 *
 * **Bounds.** At most `maxRequests` requests are evaluated at once (the oldest is released
 * first); each request's reorder window is `RequestConditions`'; token arrival times are kept in a
 * fixed ring per request. When no request has conditional rules, a result batch costs one check.
 *
 * Projection conditions are evaluated on the tapped residual rows themselves (`onFrame`, through
 * the observing sink): ⟨x, v⟩/‖v‖ at the condition's hook, one dot product per row. Features
 * outside a row's reported list count as 0 (lists are complete unless `--sae-top-k` caps them). A fired `abort` calls the proxy's `abortRequest` (`aborter`).
 *
 * **Screening.** A request's rows reach the proxy (`onFrame`) before the SAE has encoded them.
 * With a `FeatureScreen` for the SAE, each row whose bound on every unfired rule's feature is at
 * most the rule's threshold is evaluated there and then (it cannot fire anything), so only rows
 * that might fire a rule, and rows behind them in position order, wait for the SAE's result; the
 * sink gives only those the short batch deadline (`waitsOn`). What fires, and at which position,
 * is exactly what evaluating every SAE result would give.
 *
 * **Late flags.** A conditional flag with `inResponse: false` is kept in a group of its own
 * (`LiveRequest.late`), fed from the same results but never screened, never waited on
 * (`waitsOn`) and never holding the request's tap hold short: it fires at the same position,
 * whenever its rows are encoded.
 */
import { performance } from 'node:perf_hooks';
import type { Registry } from 'prom-client';
import type { SaeResultBatch } from '../sae/batcher.js';
import type { PlanUpdateResult, SteeringTerm } from '../tap/host.js';
import type { ActivationData, Hello, PlanAck, RequestEnd, TokensMessage } from '../tap/messages.js';
import type { ActivationsFrame } from '../tap/server.js';
import type { ActivationSink, SubscribeResult, TapSource } from '../tap/sink.js';
import { RequestConditions, type ConditionEvent, type PositionValues } from './conditions.js';
import { PolicyRuntimeMetrics, type PlanUpdateOutcome } from './metrics.js';
import type { PlannedTerm, ResolvedRequestPlan } from './resolve.js';
import { projectionKey, type CompiledPolicy } from './compile.js';
import { projectRows } from '../monitor/projection.js';
import type { FeatureScreen } from './screen.js';
import type { PolicyCondition } from './schema.js';

/** Where plan updates go (the proxy's `TapHost`). */
export interface PlanUpdater {
  /** `maxDelayMs`: the request's new tap hold, sent with the update (docs/tap-protocol.md §4.8). */
  planUpdate(requestId: string, steering: readonly SteeringTerm[], maxDelayMs?: number): PlanUpdateResult;
}

/** What the proxy holds for a request with live policies (structurally the proxy's `PlanOutcome`). */
export interface RequestOutcome {
  /** The `x-saegate-applied` value now, given what follows `steering=` (a plan id, `upstream:<mode>`; null = skipped). */
  applied(steering: string | null): string;
  /** The exchange is over, however it ended; called once. */
  done(): void;
}

/**
 * A resolved plan, with its outcome when live policies apply to it, and the tap hold the proxy
 * forwards (`x-saegate-tap-max-delay-ms`) when no conditional rule reads the request.
 */
export type LivePlan = ResolvedRequestPlan & { outcome?: RequestOutcome; tapMaxDelayMs?: number };

/** A conditional rule fired (listeners: tests, benchmarks, the admin API later). */
export interface TriggerRecord {
  type: 'trigger';
  requestId: string;
  /** `name@version`. */
  policy: string;
  kind: 'steer' | 'flag' | 'abort';
  flag?: string;
  triggerPosition: number;
  /** Steer: what became of its plan update. */
  outcome?: PlanUpdateOutcome;
  planId?: string;
}

/** A plan update's lag, once known. */
export interface LagRecord {
  type: 'lag';
  requestId: string;
  planId: string;
  triggerPosition: number;
  firstSteeredPosition: number;
  steps: number;
  /** Null while unknown (the first steered step's tokens have not arrived). */
  seconds: number | null;
  /** Of those seconds: until the triggering row's SAE result fired the rule. */
  firedSeconds: number;
  /** Of those seconds: until the model server's `plan_ack` arrived. */
  ackedSeconds: number;
}

export type RuntimeRecord = TriggerRecord | LagRecord;

export interface ConditionRuntimeOptions {
  /** Where plan updates go. */
  tap: PlanUpdater;
  /** The SAE name (as policies name it) of each hook an SAE reads. */
  saeByHook: ReadonlyMap<string, string>;
  /**
   * Per SAE name, a screen bounding its features' activations from the tapped rows
   * (`FeatureScreen`): a row no unfired rule can fire on is evaluated as it arrives and does not
   * wait for the SAE (see `waitsOn`). An SAE without one has every row of a request with unfired
   * rules wait for its result. Default: none.
   */
  screens?: ReadonlyMap<string, FeatureScreen>;
  /** Registers `saegate_policy_*` run-time metrics here. Default: none. */
  registry?: Registry;
  /** Requests evaluated at once; beyond, the oldest is released. Default 4096. */
  maxRequests?: number;
  /**
   * How long a request is still evaluated after its exchange ended, for SAE results that land
   * late (the SAE runs behind the model when it is loaded): flags that fire then still count in
   * `saegate_policy_flags_total`, the live view and trigger records, though the response (and its
   * `x-saegate-applied`) is gone; steers and aborts no longer act. Default 10 000 ms.
   */
  lateResultsMs?: number;
  /**
   * Stops a request's generation when an `abort` condition fires (the proxy's `abortRequest`,
   * declared here structurally: policies cannot import the proxy). Without it, aborts are counted
   * and listed but nothing stops.
   */
  aborter?: PolicyAborter;
  /**
   * The tap hold, ms, for requests nothing conditional waits on (`--tap-monitor-delay-ms`), or
   * null while every request's tapped data is needed soon; read per request. With a hold, a
   * request no conditional rule reads is forwarded with it (`LivePlan.tapMaxDelayMs`), and a
   * request whose rules have all fired gets it with a `plan_update` (`maxDelayMs`), so that the
   * model server may hold their rows as long as monitoring allows while the subscription stays
   * short for the requests rules wait on. Default: none.
   */
  relaxedTapDelayMs?: () => number | null;
}

/** The proxy side of `abort` (src/proxy/plan.ts `RequestAborter`). */
export interface PolicyAborter {
  abortRequest(requestId: string, abort: { policy: string; reason?: string }): boolean;
}

/** Token arrival times kept per request (positions modulo this). */
const TOKEN_RING = 256;

interface PendingAck {
  live: LiveRequest;
  triggerPosition: number;
  /** Index in `live.items` of the trigger's header item. */
  item: number;
  itemPrefix: string;
  triggerAt: number;
  firedAt: number;
}

interface AwaitingStep {
  record: LagRecord;
  triggerAt: number;
}

/** Reads one result row's feature values. */
class RowValues implements PositionValues {
  constructor(
    private readonly batch: SaeResultBatch,
    private readonly row: number,
  ) {}

  feature(_sae: string, index: number): number {
    const { indices, values, topK } = this.batch;
    const base = this.row * topK;
    for (let k = 0; k < topK; k++) {
      const at = indices[base + k];
      if (at === index) return values[base + k];
      if (at < 0) break; // −1 pads the unused slots at the end
    }
    return 0;
  }

  projection(): number {
    return Number.NaN;
  }
}

/** One projection's output slot, reused (rows are read one at a time, on this thread). */
const projected = new Float32Array(1);

/** A tapped residual row read as projections onto the request's unit directions. */
class FrameRowValues implements PositionValues {
  constructor(
    private readonly frame: ActivationsFrame,
    private readonly row: number,
    private readonly directions: ReadonlyMap<string, Float32Array>,
  ) {}

  feature(): number {
    return 0;
  }

  projection(vector: string, hook: string): number {
    const direction = this.directions.get(projectionKey(vector, hook));
    const { frame, row } = this;
    const d = frame.dModel;
    if (direction === undefined || direction.length !== d || hook !== frame.hook) return Number.NaN;
    const rowData: ActivationData = frame.dtype === 'f32' ? { dtype: 'f32', data: frame.data.subarray(row * d, (row + 1) * d) } : { dtype: 'f16', data: frame.data.subarray(row * d, (row + 1) * d) };
    return projectRows(rowData, 1, direction, projected)[0];
  }
}

/** The group key of a request's projection conditions at `hook` (SAE groups are keyed by SAE name). */
function projectionGroup(hook: string): string {
  return `projection:${hook}`;
}

class LiveRequest {
  /** Conditions per SAE name, and per hook (`projectionGroup`) for projection conditions. */
  readonly groups = new Map<string, RequestConditions>();
  /** The same for flags with `inResponse: false`: evaluated as results come, never waited on. */
  readonly late = new Map<string, RequestConditions>();
  /** The monitoring tap hold was given (forwarded, or sent once its other rules had fired). */
  held = false;
  /** Unit directions of the request's projection conditions (`projectionKey`). */
  readonly directions = new Map<string, Float32Array>();
  readonly steering: PlannedTerm[];
  /** Header items added while the request runs (flags, triggers), in order. */
  readonly items: string[];
  lastTokenPosition = -1;
  readonly tokenTimes = new Float64Array(TOKEN_RING);
  readonly tokenSlots = new Int32Array(TOKEN_RING).fill(-1);
  readonly pendingAcks = new Set<string>();
  readonly awaiting: AwaitingStep[] = [];
  /**
   * Set when the exchange is over (`done()`) while results may still come: the request is kept
   * for `lateResultsMs` so that flags on late SAE results still count; steers and aborts no longer act.
   */
  finishedTimer: NodeJS.Timeout | null = null;

  constructor(
    readonly requestId: string,
    readonly plan: ResolvedRequestPlan,
    initialItems: string[],
  ) {
    this.steering = [...plan.steering];
    this.items = initialItems;
  }

  /** When the tokens entry at `position` arrived, or undefined when not seen (or overwritten). */
  tokenTime(position: number): number | undefined {
    const slot = position % TOKEN_RING;
    return this.tokenSlots[slot] === position ? this.tokenTimes[slot] : undefined;
  }
}

/**
 * A policy's conditions that must be decided while the response runs: the `when` of its
 * conditional steers and flags, and of every abort; with `late`, instead, those of its flags
 * with `inResponse: false`, which are evaluated at the monitoring pace.
 */
function conditionsOf(policy: CompiledPolicy, late = false): PolicyCondition[] {
  const conditions: PolicyCondition[] = [];
  if (!late) for (const steer of policy.steers) if (steer.when !== undefined) conditions.push(steer.when);
  for (const flag of policy.flags) if (flag.when !== undefined && (flag.inResponse === false) === late) conditions.push(flag.when);
  if (!late) for (const abort of policy.aborts) conditions.push(abort.when);
  return conditions;
}

/** The evaluation group a condition belongs to: its SAE, or its projection's hook. */
function conditionGroup(when: PolicyCondition): string {
  return 'feature' in when ? when.feature.sae : projectionGroup(when.projection.hook);
}

/** `name@version` → `name` (metric labels stay put across reloads). */
function policyName(qualified: string): string {
  const at = qualified.lastIndexOf('@');
  return at < 0 ? qualified : qualified.slice(0, at);
}

function outcomeOf(result: PlanUpdateResult): PlanUpdateOutcome {
  if (result.delivered) return 'sent';
  const code = result.error.code;
  return code === 'SAEGATE_ERR_TAP_UNROUTED' ? 'unrouted' : code === 'SAEGATE_ERR_TAP_CLOSED' ? 'closed' : 'refused';
}

export class ConditionRuntime {
  private readonly requests = new Map<string, LiveRequest>();
  private readonly acks = new Map<string, PendingAck>();
  private readonly listeners = new Set<(record: RuntimeRecord) => void>();
  private readonly metrics: PolicyRuntimeMetrics | null;
  private readonly maxRequests: number;
  private readonly lateResultsMs: number;

  constructor(private readonly options: ConditionRuntimeOptions) {
    this.metrics = options.registry ? new PolicyRuntimeMetrics(options.registry) : null;
    this.maxRequests = options.maxRequests ?? 4096;
    this.lateResultsMs = options.lateResultsMs ?? 10_000;
  }

  /** Requests being evaluated now. */
  get activeRequests(): number {
    return this.requests.size;
  }

  /** Called with every trigger and lag record; returns the unsubscribe function. */
  onRecord(listener: (record: RuntimeRecord) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Wraps a request's plan: unchanged when no flag or conditional rule applies, else with an
   * `outcome` whose `applied()` lists flags and triggers as they happen. Unconditional flags count
   * now.
   */
  resolve(requestId: string, plan: ResolvedRequestPlan): LivePlan {
    const items: string[] = [];
    const saes = new Set<string>();
    const lateSaes = new Set<string>();
    for (const policy of plan.matched) {
      for (const flag of policy.flags) {
        if (flag.when !== undefined) continue;
        items.push(`flag=${flag.name}`);
        this.metrics?.flags.inc({ policy: policy.name, flag: flag.name });
      }
      for (const when of conditionsOf(policy)) saes.add(conditionGroup(when));
      for (const when of conditionsOf(policy, true)) lateSaes.add(conditionGroup(when));
    }
    // Nothing that must be decided while the response runs reads this request: its rows can go
    // at the monitoring pace.
    const hold = saes.size === 0 ? (this.options.relaxedTapDelayMs?.() ?? null) : null;
    if (hold !== null) this.metrics?.tapHolds.inc({ when: 'forwarded' });
    const relaxed: LivePlan = hold === null ? plan : { ...plan, tapMaxDelayMs: hold };
    if (saes.size === 0 && lateSaes.size === 0) {
      if (items.length === 0) return relaxed;
      return { ...relaxed, outcome: { applied: (planId) => this.appliedValue(plan, planId, items), done: () => {} } };
    }
    const live = new LiveRequest(requestId, plan, items);
    live.held = hold !== null;
    for (const sae of saes) {
      const accept = (_kind: 'steer' | 'flag' | 'abort', when: PolicyCondition, inResponse: boolean): boolean => inResponse && conditionGroup(when) === sae;
      live.groups.set(sae, new RequestConditions(requestId, plan.matched, [], 0, accept));
    }
    for (const sae of lateSaes) {
      const accept = (_kind: 'steer' | 'flag' | 'abort', when: PolicyCondition, inResponse: boolean): boolean => !inResponse && conditionGroup(when) === sae;
      live.late.set(sae, new RequestConditions(requestId, plan.matched, [], 0, accept));
    }
    for (const policy of plan.matched) for (const [key, direction] of policy.projections ?? []) live.directions.set(key, direction);
    const previous = this.requests.get(requestId);
    if (previous !== undefined) this.release(previous);
    this.requests.set(requestId, live);
    if (this.requests.size > this.maxRequests) {
      const oldest = this.requests.values().next();
      if (oldest.done !== true) this.release(oldest.value);
    }
    this.metrics?.requests.set(this.requests.size);
    let finished = false;
    return {
      ...relaxed,
      outcome: {
        applied: (planId) => this.appliedValue(plan, planId, live.items),
        done: () => {
          if (finished) return;
          finished = true;
          if (this.requests.get(requestId) !== live) return;
          // Rows of the request may still be with the SAE: keep listening a while for flags.
          live.finishedTimer = setTimeout(() => {
            if (this.requests.get(requestId) === live) this.release(live);
          }, this.lateResultsMs);
          live.finishedTimer.unref();
        },
      },
    };
  }

  /**
   * Whether a conditional rule still waits on the SAE results of rows at `hook` of any of these
   * requests: one that has not fired yet, on that SAE's features, with a row seen (`onFrame`) and
   * not yet evaluated (the SAE sink's urgency test, asked once per tap frame with its request
   * table, after `onFrame` saw the frame). Such rows go to the SAE with the short batch deadline;
   * the others with the monitoring one: every row of a request whose rules have all fired, and,
   * with a screen for the SAE, rows settled as they arrived because no unfired rule could fire on
   * them.
   */
  waitsOn(hook: string, requestIds: readonly string[]): boolean {
    if (this.requests.size === 0) return false;
    const sae = this.options.saeByHook.get(hook);
    if (sae === undefined) return false;
    for (let i = 0; i < requestIds.length; i++) {
      if (this.requests.get(requestIds[i])?.groups.get(sae)?.waiting === true) return true;
    }
    return false;
  }

  /** `SaeSink.onResult` listener: evaluates every row of a request with conditional rules. */
  readonly onResult = (batch: SaeResultBatch): void => {
    if (this.requests.size === 0) return;
    const sae = this.options.saeByHook.get(batch.hook);
    if (sae === undefined) return;
    this.feed(batch.requestIds, batch.rowRequestIndexes, batch.positions, batch.rowCount, sae, (row) => new RowValues(batch, row));
  };

  /**
   * Tapped activation frames: evaluates the projection conditions at the frame's hook of every
   * request in it that has some (one dot product of d_model per row and direction read).
   */
  onFrame(frame: ActivationsFrame): void {
    if (this.requests.size === 0) return;
    this.screenFrame(frame);
    this.feed(frame.requestIds, frame.rowRequestIndexes, frame.positions, frame.rowCount, projectionGroup(frame.hook), (row, live) => new FrameRowValues(frame, row, live.directions));
  }

  /**
   * Feeds rows (an SAE result batch's, or a tapped frame's) to the conditions of group `key` of
   * each request in the request table: looked up once per request, not per row; its conditions
   * decided in the response first, then its flags with `inResponse: false` (`LiveRequest.late`).
   */
  private feed(requestIds: readonly string[], rowRequestIndexes: ArrayLike<number>, positions: ArrayLike<number>, rowCount: number, key: string, valuesAt: (row: number, live: LiveRequest) => PositionValues): void {
    let lives: (LiveRequest | undefined)[] | null = null;
    let prompt: (RequestConditions | undefined)[] | null = null;
    let late: (RequestConditions | undefined)[] | null = null;
    for (let i = 0; i < requestIds.length; i++) {
      const live = this.requests.get(requestIds[i]);
      if (live === undefined) continue;
      const group = live.groups.get(key);
      const lateGroup = live.late.get(key);
      if (group === undefined && lateGroup === undefined) continue;
      (lives ??= new Array<LiveRequest | undefined>(requestIds.length))[i] = live;
      if (group !== undefined) (prompt ??= new Array<RequestConditions | undefined>(requestIds.length))[i] = group;
      if (lateGroup !== undefined) (late ??= new Array<RequestConditions | undefined>(requestIds.length))[i] = lateGroup;
    }
    if (lives === null) return;
    for (const groups of [prompt, late]) {
      if (groups === null) continue;
      for (let r = 0; r < rowCount; r++) {
        const k = rowRequestIndexes[r];
        const group = groups[k];
        if (group === undefined || !group.active) continue;
        const live = lives[k] as LiveRequest;
        const events = group.observe(positions[r], valuesAt(r, live));
        if (events.length > 0) this.fired(live, events);
      }
    }
  }

  /**
   * Rows of a frame at an SAE's hook, before the SAE sees them: each row of a request with rules
   * on that SAE is noted as seen, and, with a screen for the SAE, settled at once when no unfired
   * rule can fire on it (`RequestConditions.settle`), so it need not reach the SAE soon.
   */
  private screenFrame(frame: ActivationsFrame): void {
    const sae = this.options.saeByHook.get(frame.hook);
    if (sae === undefined) return;
    const table = frame.requestIds;
    let groups: (RequestConditions | undefined)[] | null = null;
    for (let i = 0; i < table.length; i++) {
      const group = this.requests.get(table[i])?.groups.get(sae);
      if (group === undefined || !group.active) continue;
      (groups ??= new Array<RequestConditions | undefined>(table.length))[i] = group;
    }
    if (groups === null) return;
    const screen = this.options.screens?.get(sae);
    const usable = screen !== undefined && screen.dIn === frame.dModel;
    let row = -1;
    let prepared = -1;
    const mayFire = (when: PolicyCondition): boolean => {
      if (!('feature' in when)) return true;
      if (prepared !== row) {
        screen!.prepare(frame, row);
        prepared = row;
      }
      return screen!.mayExceed(when.feature.index, when.feature.above);
    };
    const { rowRequestIndexes, positions, rowCount } = frame;
    let settled = 0;
    for (row = 0; row < rowCount; row++) {
      const group = groups[rowRequestIndexes[row]];
      if (group === undefined) continue;
      const position = positions[row];
      group.saw(position);
      if (usable && group.settle(position, mayFire)) settled++;
    }
    if (settled > 0) this.metrics?.rowsSettled.inc(settled);
  }

  /**
   * Whether any of the policies has a condition that must be decided while responses run (a
   * `when` on a steer or on a flag in the response, or an abort): then tapped data is needed
   * within milliseconds. Flags with `inResponse: false` do not count.
   */
  static hasConditions(policies: readonly CompiledPolicy[]): boolean {
    return policies.some((p) => conditionsOf(p).length > 0);
  }

  /** Hooks the given policies' projection conditions read (the tap must stream them). */
  static projectionHooks(policies: readonly CompiledPolicy[]): string[] {
    const hooks = new Set<string>();
    for (const policy of policies) for (const key of policy.projections?.keys() ?? []) hooks.add(key.slice(key.lastIndexOf('\u0000') + 1));
    return [...hooks];
  }

  /** Tap tokens: the last position each running request reached and when. */
  tokens(message: TokensMessage): void {
    if (this.requests.size === 0) return;
    const now = performance.now();
    const { requestIds, rowRequestIndexes, positions } = message;
    for (let i = 0; i < positions.length; i++) {
      const live = this.requests.get(requestIds[rowRequestIndexes[i]]);
      if (live === undefined) continue;
      const position = positions[i];
      const slot = position % TOKEN_RING;
      live.tokenSlots[slot] = position;
      live.tokenTimes[slot] = now;
      if (position > live.lastTokenPosition) live.lastTokenPosition = position;
      if (live.awaiting.length > 0) this.stepsDone(live, position, now);
    }
  }

  /** Tap plan acks: the lag of a fired steer's update, or its rejection. */
  planAck(ack: PlanAck): void {
    const pending = this.acks.get(ack.planId);
    if (pending === undefined) return;
    this.acks.delete(ack.planId);
    const live = pending.live;
    live.pendingAcks.delete(ack.planId);
    if (!ack.accepted) {
      this.metrics?.planUpdates.inc({ outcome: 'rejected' });
      live.items[pending.item] = `${pending.itemPrefix}:rejected`;
      return;
    }
    const firstSteeredPosition = Math.max(pending.triggerPosition + 1, live.lastTokenPosition + 1);
    const steps = firstSteeredPosition - pending.triggerPosition;
    this.metrics?.lagSteps.observe(steps);
    const record: LagRecord = {
      type: 'lag',
      requestId: live.requestId,
      planId: ack.planId,
      triggerPosition: pending.triggerPosition,
      firstSteeredPosition,
      steps,
      seconds: null,
      firedSeconds: (pending.firedAt - pending.triggerAt) / 1000,
      ackedSeconds: (performance.now() - pending.triggerAt) / 1000,
    };
    live.awaiting.push({ record, triggerAt: pending.triggerAt });
  }

  /** Tap end: no more steps will come for the request; its lags still waiting stay unknown. */
  end(end: RequestEnd): void {
    const live = this.requests.get(end.requestId);
    if (live !== undefined) live.awaiting.length = 0;
  }

  /** The proxy's activation sink with this runtime listening to its tokens, ends and plan acks. */
  observing(inner: ActivationSink): ActivationSink {
    return new ObservingSink(inner, this);
  }

  private fired(live: LiveRequest, events: ConditionEvent[]): void {
    let steered: ConditionEvent[] | null = null;
    let aborted = false;
    const over = live.finishedTimer !== null;
    for (const event of events) {
      // After the exchange: only flags still mean something (counted, shown); nothing is left to steer or stop.
      if (over && event.kind !== 'flag') continue;
      if (event.kind === 'flag') {
        const flag = event.detail ?? 'flag';
        live.items.push(`flag=${flag}:${event.triggerPosition}`);
        this.metrics?.triggers.inc({ policy: policyName(event.policy), kind: 'flag' });
        this.metrics?.flags.inc({ policy: policyName(event.policy), flag });
        this.emit({ type: 'trigger', requestId: live.requestId, policy: event.policy, kind: 'flag', flag, triggerPosition: event.triggerPosition });
      } else if (event.kind === 'abort') {
        aborted = true;
        this.metrics?.triggers.inc({ policy: policyName(event.policy), kind: 'abort' });
        // Listed before the proxy writes its ending, which reads the applied value at once.
        const item = live.items.push(`abort=${event.policy}:${event.triggerPosition}`) - 1;
        const taken = this.options.aborter?.abortRequest(live.requestId, { policy: event.policy, ...(event.detail !== undefined && { reason: event.detail }) }) ?? false;
        if (!taken) live.items[item] += ':skipped';
        this.emit({ type: 'trigger', requestId: live.requestId, policy: event.policy, kind: 'abort', triggerPosition: event.triggerPosition });
      } else if (event.kind === 'steer') {
        live.steering.push(...(event.terms ?? []));
        this.metrics?.triggers.inc({ policy: policyName(event.policy), kind: 'steer' });
        (steered ??= []).push(event);
      }
    }
    // Once every rule has fired nothing waits on the request's rows: the model server may hold
    // them as long as monitoring allows (sent with the steers' update, or alone).
    // (Flags with `inResponse: false` never hold it back, and the hold is given once.)
    const hold = live.held || over || aborted || this.anyUnfired(live) ? null : (this.options.relaxedTapDelayMs?.() ?? null);
    if (steered === null && hold === null) return;
    // One update: the request's whole steering from now on (steers firing together go down
    // together), with the hold when it is given now (alone, unchanged steering, after a flag).
    const result = this.options.tap.planUpdate(live.requestId, live.steering, hold ?? undefined);
    if (hold !== null && result.delivered) {
      live.held = true;
      this.metrics?.tapHolds.inc({ when: 'fired' });
    }
    if (steered === null) return;
    const outcome = outcomeOf(result);
    this.metrics?.planUpdates.inc({ outcome });
    for (const event of steered) {
      const position = event.triggerPosition;
      const itemPrefix = `trigger=${event.policy}:${position}`;
      const item = live.items.length;
      live.items.push(result.delivered ? `${itemPrefix}:${result.planId}` : `${itemPrefix}:skipped`);
      if (result.delivered && !this.acks.has(result.planId)) {
        const now = performance.now();
        this.acks.set(result.planId, { live, triggerPosition: position, item, itemPrefix, triggerAt: live.tokenTime(position + 1) ?? now, firedAt: now });
        live.pendingAcks.add(result.planId);
      }
      this.emit({ type: 'trigger', requestId: live.requestId, policy: event.policy, kind: 'steer', triggerPosition: position, outcome, ...(result.delivered && { planId: result.planId }) });
    }
  }

  /** Whether a rule of the request can still fire. */
  private anyUnfired(live: LiveRequest): boolean {
    for (const group of live.groups.values()) if (group.active) return true;
    return false;
  }

  /** Observes the seconds of lags whose first steered step's tokens (entry `first + 1`) arrived. */
  private stepsDone(live: LiveRequest, position: number, now: number): void {
    const awaiting = live.awaiting;
    for (let i = awaiting.length - 1; i >= 0; i--) {
      const { record, triggerAt } = awaiting[i];
      if (position < record.firstSteeredPosition + 1) continue;
      record.seconds = (now - triggerAt) / 1000;
      this.metrics?.lagSeconds.observe(record.seconds);
      awaiting.splice(i, 1);
      this.emit(record);
    }
  }

  private appliedValue(plan: ResolvedRequestPlan, planId: string | null, items: readonly string[]): string {
    const out = plan.policies.map((name) => `policy=${name}`);
    if (plan.steering.length > 0) out.push(`steering=${planId ?? 'skipped'}`);
    out.push(...items);
    return out.length === 0 ? 'none' : out.join(', ');
  }

  private release(live: LiveRequest): void {
    if (live.finishedTimer !== null) clearTimeout(live.finishedTimer);
    live.finishedTimer = null;
    this.requests.delete(live.requestId);
    for (const planId of live.pendingAcks) this.acks.delete(planId);
    live.pendingAcks.clear();
    live.awaiting.length = 0;
    this.metrics?.requests.set(this.requests.size);
  }

  private emit(record: RuntimeRecord): void {
    for (const listener of this.listeners) listener(record);
  }
}

/** Passes everything to the inner sink and tells the runtime about tokens, ends and plan acks. */
class ObservingSink implements ActivationSink {
  constructor(
    private readonly inner: ActivationSink,
    private readonly runtime: ConditionRuntime,
  ) {}

  write(frame: ActivationsFrame, source: TapSource): number {
    // Projections first: the inner sink may take the frame's views over (copy-free batching).
    this.runtime.onFrame(frame);
    return this.inner.write(frame, source);
  }

  tokens(message: TokensMessage, source: TapSource): void {
    this.inner.tokens?.(message, source);
    this.runtime.tokens(message);
  }

  end(end: RequestEnd, source: TapSource): void {
    this.inner.end?.(end, source);
    this.runtime.end(end);
  }

  planAck(ack: PlanAck, source: TapSource): void {
    this.inner.planAck?.(ack, source);
    this.runtime.planAck(ack);
  }

  admit(hello: Hello, source: TapSource): string | null {
    return this.inner.admit?.(hello, source) ?? null;
  }

  connected(source: TapSource, subscription: SubscribeResult | null): void {
    this.inner.connected?.(source, subscription);
  }

  disconnected(source: TapSource): void {
    this.inner.disconnected?.(source);
  }
}
