/**
 * Conditional rules of running requests, evaluated on SAE results (and projections) as they come
 * back from the engine, token by token.
 *
 * Each request resolved with conditional actions gets a `RequestConditions`: one counter per
 * condition of consecutive positions above its threshold. When a counter reaches the condition's
 * `forTokens`, the condition **fires at that position** (the trigger position). What firing does:
 * - a conditional `steer` adds its terms from `trigger + 1` (the next position the model feeds,
 *   which is the next decode step's) to `trigger + 1 + forTokens` or the end, and the request's
 *   whole steering (initial terms + every fired term) goes down as one `plan_update`;
 * - a `flag` records its name (response header, metrics);
 * - an `abort` records the abort (the proxy ends the response with `finish_reason`
 *   `content_filter`).
 * Each action fires at most once per request.
 *
 * Rows may arrive out of position order across batches (prompt rows in one frame, decode rows
 * later); consecutive-token counting needs them in order, so each request keeps a small reorder
 * window keyed by position and evaluates positions in order as soon as they are contiguous.
 */
import type { CompiledPolicy } from './compile.js';
import type { PlannedTerm } from './resolve.js';
import type { PolicyCondition } from './schema.js';

/** The values a condition reads at one position of one request. */
export interface PositionValues {
  /** Activation of `feature` of SAE `sae` at this position (0 when inactive or not encoded). */
  feature(sae: string, index: number): number;
  /** Projection of the residual at `hook` on the unit direction of vector `vector` (NaN when unknown). */
  projection(vector: string, hook: string): number;
}

/** What happened when conditions fired at a position. */
export interface ConditionEvent {
  requestId: string;
  /** The position whose value completed the condition. */
  triggerPosition: number;
  policy: string;
  kind: 'steer' | 'flag' | 'abort';
  /** Flag name or abort reason. */
  detail?: string;
  /** For steer: the terms added (from triggerPosition + 1). */
  terms?: PlannedTerm[];
}

interface Rule {
  policy: string;
  kind: 'steer' | 'flag' | 'abort';
  when: PolicyCondition;
  forTokens: number;
  run: number;
  fired: boolean;
  detail?: string;
  steer?: CompiledPolicy['steers'][number];
}

/** Largest gap of missing positions a request buffers before evaluating past it. */
const MAX_REORDER = 4096;

function conditionValue(when: PolicyCondition, values: PositionValues): number {
  return 'feature' in when ? values.feature(when.feature.sae, when.feature.index) : values.projection(when.projection.vector, when.projection.hook);
}

function conditionThreshold(when: PolicyCondition): { above: number; forTokens: number } {
  return 'feature' in when ? when.feature : when.projection;
}

/** The conditional rules of one request. */
export class RequestConditions {
  private readonly rules: Rule[] = [];
  private nextPosition: number;
  /** Highest position seen at the proxy (`saw`); −1 before any. */
  private seenThrough = -1;
  private readonly pending = new Map<number, PositionValues>();
  /** Rules not fired yet (a rule fires at most once). */
  private unfired = 0;
  /** Initial (unconditional) terms plus every fired steer's terms: the request's current steering. */
  readonly steering: PlannedTerm[];
  readonly events: ConditionEvent[] = [];

  constructor(
    readonly requestId: string,
    matched: readonly CompiledPolicy[],
    initialSteering: readonly PlannedTerm[],
    /** First position rows will arrive for (0 when prompt rows are tapped). */
    firstPosition = 0,
    /**
     * Which rules this instance evaluates (default: all). The runtime keeps one instance per SAE,
     * since each SAE's results arrive in their own batches and positions must be fed in order.
     */
    accept: (kind: Rule['kind'], when: PolicyCondition, inResponse: boolean) => boolean = () => true,
  ) {
    this.steering = [...initialSteering];
    this.nextPosition = firstPosition;
    for (const policy of matched) {
      for (const steer of policy.steers) {
        if (steer.when && accept('steer', steer.when, true)) this.rules.push({ policy: policy.qualifiedName, kind: 'steer', when: steer.when, forTokens: steer.forTokens ?? 0, run: 0, fired: false, steer });
      }
      for (const flag of policy.flags) {
        if (flag.when && accept('flag', flag.when, flag.inResponse !== false)) this.rules.push({ policy: policy.qualifiedName, kind: 'flag', when: flag.when, forTokens: 0, run: 0, fired: false, detail: flag.name });
      }
      for (const abort of policy.aborts) {
        if (accept('abort', abort.when, true)) this.rules.push({ policy: policy.qualifiedName, kind: 'abort', when: abort.when, forTokens: 0, run: 0, fired: false, detail: abort.reason });
      }
    }
    this.unfired = this.rules.length;
  }

  /** Rules this instance evaluates (fired or not). */
  get ruleCount(): number {
    return this.rules.length;
  }

  /** True when the request has rules still able to fire. */
  get active(): boolean {
    return this.unfired > 0;
  }

  /** Notes that the row at `position` reached the proxy (its SAE result comes later): see `waiting`. */
  saw(position: number): void {
    if (position > this.seenThrough) this.seenThrough = position;
  }

  /**
   * True when a rule that can still fire waits on a row seen (`saw`) but not evaluated yet: then
   * the request's rows should reach the SAE soon. Rows settled at once (`settle`) wait on nothing.
   */
  get waiting(): boolean {
    return this.unfired > 0 && this.nextPosition <= this.seenThrough;
  }

  /**
   * Evaluates `position` at once, without its SAE result, when no rule that can still fire could
   * fire there: `mayFire(when)` false for each (an upper bound on the value is at most the
   * threshold, `FeatureScreen`). The row then counts as below every threshold (runs reset), which
   * is what its SAE result would give; that result, when it comes, is ignored (`observe` skips
   * positions already evaluated). Only the next position in order can be settled, and only while
   * no later one is buffered. Returns whether it settled the position now.
   */
  settle(position: number, mayFire: (when: PolicyCondition) => boolean): boolean {
    if (this.unfired === 0 || position !== this.nextPosition || this.pending.size > 0) return false;
    for (const rule of this.rules) if (!rule.fired && mayFire(rule.when)) return false;
    for (const rule of this.rules) rule.run = 0;
    this.nextPosition++;
    return true;
  }

  /**
   * Feeds the values at one position. Returns the events that fired (in position order), possibly
   * for earlier positions that became contiguous. Steering events have already been added to
   * `steering`: send it as the request's plan update.
   */
  observe(position: number, values: PositionValues): ConditionEvent[] {
    // Once every rule has fired nothing can happen: later rows cost nothing.
    if (position < this.nextPosition || this.unfired === 0) return [];
    const fired: ConditionEvent[] = [];
    if (position === this.nextPosition && this.pending.size === 0) {
      // The usual case, rows in order: evaluated at once, without the reorder map.
      this.evaluate(position, values, fired);
      this.nextPosition++;
      return fired;
    }
    this.pending.set(position, values);
    if (this.pending.size > MAX_REORDER) {
      // A position never arrived (dropped under overload): evaluate past the gap, resetting runs.
      this.nextPosition = Math.min(...this.pending.keys());
      for (const rule of this.rules) rule.run = 0;
    }
    for (let values = this.pending.get(this.nextPosition); values !== undefined; values = this.pending.get(this.nextPosition)) {
      this.pending.delete(this.nextPosition);
      this.evaluate(this.nextPosition, values, fired);
      this.nextPosition++;
    }
    return fired;
  }

  private evaluate(position: number, values: PositionValues, fired: ConditionEvent[]): void {
    for (const rule of this.rules) {
      if (rule.fired) continue;
      const { above, forTokens } = conditionThreshold(rule.when);
      const value = conditionValue(rule.when, values);
      rule.run = value > above ? rule.run + 1 : 0;
      if (rule.run < forTokens) continue;
      rule.fired = true;
      this.unfired--;
      const event: ConditionEvent = { requestId: this.requestId, triggerPosition: position, policy: rule.policy, kind: rule.kind, detail: rule.detail };
      if (rule.kind === 'steer' && rule.steer) {
        const from = position + 1;
        const until = rule.forTokens > 0 ? from + rule.forTokens : null;
        const terms: PlannedTerm[] = [];
        for (const hook of rule.steer.hooks) {
          const vector = rule.steer.vector.hooks.get(hook);
          if (vector) terms.push({ hook, vector, scale: rule.steer.scale, fromPosition: from, untilPosition: until });
        }
        this.steering.push(...terms);
        event.terms = terms;
      }
      this.events.push(event);
      fired.push(event);
    }
  }
}
