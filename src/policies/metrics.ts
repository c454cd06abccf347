/**
 * Metrics of conditional policies at run time (src/policies/runtime.ts). Labels are bounded by the
 * policy set: `policy` is a policy's name (without the set version, so a reload does not start new
 * series), `flag` a flag name from a policy file, `kind` and `outcome` fixed sets.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/** What became of a plan update sent for a fired conditional steer. */
export type PlanUpdateOutcome = 'sent' | 'unrouted' | 'closed' | 'refused' | 'rejected';

export const PLAN_UPDATE_OUTCOMES: readonly PlanUpdateOutcome[] = ['sent', 'unrouted', 'closed', 'refused', 'rejected'];

/** Every metric name this file registers (the docs test compares them with docs/metrics.md). */
export const POLICY_RUNTIME_METRIC_NAMES = [
  'saegate_policy_conditional_requests',
  'saegate_policy_triggers_total',
  'saegate_policy_flags_total',
  'saegate_policy_plan_updates_total',
  'saegate_policy_trigger_lag_steps',
  'saegate_policy_trigger_lag_seconds',
  'saegate_policy_rows_settled_total',
  'saegate_policy_tap_holds_total',
] as const;

export class PolicyRuntimeMetrics {
  readonly requests: Gauge;
  readonly triggers: Counter<'policy' | 'kind'>;
  readonly flags: Counter<'policy' | 'flag'>;
  readonly planUpdates: Counter<'outcome'>;
  readonly lagSteps: Histogram;
  readonly lagSeconds: Histogram;
  readonly rowsSettled: Counter;
  readonly tapHolds: Counter<'when'>;

  constructor(registry: Registry) {
    const registers = [registry];
    this.requests = new Gauge({ name: 'saegate_policy_conditional_requests', help: 'Requests with conditional rules being evaluated now (a finished request stays 10 s for SAE results that land late).', registers });
    this.triggers = new Counter({ name: 'saegate_policy_triggers_total', help: 'Conditional rules that fired, by policy and kind (steer, flag, abort).', labelNames: ['policy', 'kind'], registers });
    this.flags = new Counter({ name: 'saegate_policy_flags_total', help: 'Requests flagged, by policy and flag name (unconditional flags when the request matched, conditional ones when they fired).', labelNames: ['policy', 'flag'], registers });
    this.planUpdates = new Counter({
      name: 'saegate_policy_plan_updates_total',
      help: 'Plan updates for fired conditional steers: sent, unrouted (no tap connection serves the request, or it ended), closed (its connection closed), refused (that model server cannot apply it), rejected (sent, then refused in the plan_ack).',
      labelNames: ['outcome'],
      registers,
    });
    for (const outcome of PLAN_UPDATE_OUTCOMES) this.planUpdates.inc({ outcome }, 0);
    this.lagSteps = new Histogram({
      name: 'saegate_policy_trigger_lag_steps',
      help: 'Decode steps from the token whose row fired a conditional steer to the first step the model server steered (1 = the very next step).',
      buckets: [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64],
      registers,
    });
    this.lagSeconds = new Histogram({
      name: 'saegate_policy_trigger_lag_seconds',
      help: 'Seconds from the step that computed the triggering row to the end of the first steered step, both as seen on the tap.',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    });
    this.rowsSettled = new Counter({
      name: 'saegate_policy_rows_settled_total',
      help: 'Rows of requests with unfired conditional rules evaluated as they arrived, because the feature screen showed no such rule could fire on them: they did not wait for the SAE (short batch deadline).',
      registers,
    });
    this.tapHolds = new Counter({
      name: 'saegate_policy_tap_holds_total',
      help: 'Requests given the monitoring tap hold (--tap-monitor-delay-ms) while a loaded policy has a condition: forwarded (no conditional rule reads them; x-saegate-tap-max-delay-ms) or fired (their rules had all fired; a plan_update with maxDelayMs).',
      labelNames: ['when'],
      registers,
    });
    for (const when of ['forwarded', 'fired']) this.tapHolds.inc({ when }, 0);
  }
}
