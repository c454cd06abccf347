/**
 * The alert state machine and the webhook that carries its transitions.
 *
 * Each rule (alert-rules.ts) is evaluated when the monitor assesses its windows (not per row). A
 * rule whose condition holds becomes *pending*; once it has held for the rule's `for` duration it is
 * *firing* (`saegate_alert_firing{alert}` 1, a log line, a webhook event); when the condition stops
 * holding a firing alert is *resolved* (log line, webhook event) and the rule is inactive again; a
 * pending one goes back to inactive silently. A condition that cannot be evaluated (no baseline, an
 * empty window) does not hold. Prometheus' own `for` semantics, evaluated at the monitor's tick.
 *
 * The webhook never blocks the request path or the monitor's tick: events go into a bounded queue
 * (full: the event is dropped and counted), one delivery runs at a time, each POST is retried with
 * doubling backoff up to `attempts` times; the outcome of every event is counted (delivered,
 * failed, dropped) and exported as `saegate_alert_webhook_deliveries_total{result}`.
 */
import type { AlertRule, WebhookConfig } from './alert-rules.js';
import { describeSignal } from './alert-rules.js';
import type { AlertSeverity } from './metrics.js';

/** Where a rule stands now. */
export type AlertState = 'inactive' | 'pending' | 'firing';

/** A rule's condition at one evaluation; null when it cannot be evaluated. */
export interface AlertReading {
  readonly value: number;
  readonly threshold: number;
}

/** A firing or resolved transition, as logged and POSTed (JSON). */
export interface AlertEvent {
  readonly alert: string;
  readonly status: 'firing' | 'resolved';
  readonly severity: AlertSeverity;
  readonly sae: string;
  readonly hook: string;
  readonly signal: string;
  readonly window: string;
  /** The signal and threshold at the transition. */
  readonly value: number | null;
  readonly threshold: number | null;
  /** ISO 8601: when the condition started holding. */
  readonly activeSince: string;
  /** ISO 8601: this transition. */
  readonly at: string;
  readonly summary: string;
}

/** Structured log sink (pino's shape). */
export interface MonitorLogger {
  info(object: object, message: string): void;
  warn(object: object, message: string): void;
}

/** One rule's state for the admin API. */
export interface AlertStatus {
  readonly alert: string;
  readonly state: AlertState;
  readonly severity: AlertSeverity;
  /** ms since epoch the condition started holding; null when inactive. */
  readonly activeSinceMs: number | null;
  readonly value: number | null;
  readonly threshold: number | null;
}

interface RuleState {
  readonly rule: AlertRule;
  readonly hook: string;
  state: AlertState;
  since: number;
  last: AlertReading | null;
}

/** Evaluates rules and reports transitions to `notify`. */
export class AlertEvaluator {
  private readonly states: RuleState[];

  /** `hookOf(rule)` resolves a rule without a hook to its SAE's hook. */
  constructor(
    rules: readonly AlertRule[],
    hookOf: (rule: AlertRule) => string,
    private readonly notify: (event: AlertEvent) => void,
  ) {
    this.states = rules.map((rule) => ({ rule, hook: hookOf(rule), state: 'inactive', since: 0, last: null }));
  }

  get rules(): readonly AlertRule[] {
    return this.states.map((s) => s.rule);
  }

  /** Evaluates every rule at `nowMs`; `read` gives a rule's value and threshold now (null: unknown). */
  evaluate(nowMs: number, read: (rule: AlertRule, hook: string) => AlertReading | null): void {
    for (const s of this.states) {
      const reading = read(s.rule, s.hook);
      const holds = reading !== null && reading.value > reading.threshold;
      if (holds) s.last = reading;
      if (!holds) {
        if (s.state === 'firing') this.notify(this.event(s, 'resolved', nowMs, reading));
        s.state = 'inactive';
        continue;
      }
      if (s.state === 'inactive') {
        s.state = 'pending';
        s.since = nowMs;
      }
      if (s.state === 'pending' && nowMs - s.since >= s.rule.for.ms) {
        s.state = 'firing';
        this.notify(this.event(s, 'firing', nowMs, reading));
      }
    }
  }

  /** Names of the rules firing now. */
  firing(): Set<string> {
    return new Set(this.states.filter((s) => s.state === 'firing').map((s) => s.rule.name));
  }

  status(): AlertStatus[] {
    return this.states.map((s) => ({
      alert: s.rule.name,
      state: s.state,
      severity: s.rule.severity,
      activeSinceMs: s.state === 'inactive' ? null : s.since,
      value: s.state === 'inactive' ? null : (s.last?.value ?? null),
      threshold: s.state === 'inactive' ? null : (s.last?.threshold ?? null),
    }));
  }

  private event(s: RuleState, status: AlertEvent['status'], nowMs: number, reading: AlertReading | null): AlertEvent {
    const { rule } = s;
    return {
      alert: rule.name,
      status,
      severity: rule.severity,
      sae: rule.sae,
      hook: s.hook,
      signal: describeSignal(rule.signal),
      window: rule.window,
      value: (reading ?? s.last)?.value ?? null,
      threshold: (reading ?? s.last)?.threshold ?? null,
      activeSince: new Date(s.since).toISOString(),
      at: new Date(nowMs).toISOString(),
      summary: rule.summary ?? `${rule.sae} ${describeSignal(rule.signal)} over ${rule.window} above threshold`,
    };
  }
}

/** Outcomes of webhook events (`saegate_alert_webhook_deliveries_total{result}`). */
export const WEBHOOK_RESULTS = ['delivered', 'failed', 'dropped'] as const;
export type WebhookResult = (typeof WEBHOOK_RESULTS)[number];

/** POSTs alert events to a URL; see the file comment. */
export class WebhookNotifier {
  readonly counts: Record<WebhookResult, number> = { delivered: 0, failed: 0, dropped: 0 };
  /** Failed POST attempts (each retry counts). */
  attemptFailures = 0;
  private readonly queue: AlertEvent[] = [];
  private running: Promise<void> | null = null;
  private closed = false;
  private wake: (() => void) | null = null;
  private backoff: NodeJS.Timeout | null = null;
  private readonly abort = new AbortController();

  constructor(
    private readonly config: WebhookConfig,
    private readonly logger?: MonitorLogger,
  ) {}

  /** Queues `event` (never waits); drops and counts it when the queue is full or the notifier closed. */
  send(event: AlertEvent): void {
    if (this.closed || this.queue.length >= this.config.maxQueue) {
      this.counts.dropped++;
      this.logger?.warn({ alert: event.alert, status: event.status, queued: this.queue.length }, 'alert webhook queue full: event dropped');
      return;
    }
    this.queue.push(event);
    this.running ??= this.drain().finally(() => {
      this.running = null;
    });
  }

  /** Events waiting (the one being delivered included). */
  get queued(): number {
    return this.queue.length;
  }

  /** Resolves when the queue is empty (or the notifier is closed). */
  async idle(): Promise<void> {
    while (this.running !== null) await this.running;
  }

  /** Stops: the delivery in flight is aborted, queued events are counted as dropped. */
  async close(): Promise<void> {
    this.closed = true;
    this.abort.abort();
    if (this.backoff !== null) clearTimeout(this.backoff);
    this.wake?.();
    await this.running;
    this.counts.dropped += this.queue.length;
    this.queue.length = 0;
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0 && !this.closed) {
      const event = this.queue[0];
      const ok = await this.deliver(event);
      if (this.closed) return;
      this.queue.shift();
      this.counts[ok ? 'delivered' : 'failed']++;
      if (!ok) this.logger?.warn({ alert: event.alert, status: event.status, url: this.config.url, attempts: this.config.attempts }, 'alert webhook delivery failed');
    }
  }

  private async deliver(event: AlertEvent): Promise<boolean> {
    const body = JSON.stringify(event);
    for (let attempt = 0; attempt < this.config.attempts && !this.closed; attempt++) {
      if (attempt > 0) await this.sleep(this.config.backoffMs * 2 ** (attempt - 1));
      if (this.closed) return false;
      try {
        const response = await fetch(this.config.url, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body,
          signal: AbortSignal.any([this.abort.signal, AbortSignal.timeout(this.config.timeoutMs)]),
        });
        await response.body?.cancel();
        if (response.ok) return true;
      } catch {
        // A refused connection, a timeout or close(): counted below, retried.
      }
      this.attemptFailures++;
    }
    return false;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.wake = resolve;
      this.backoff = setTimeout(() => {
        this.backoff = null;
        this.wake = null;
        resolve();
      }, ms);
    });
  }
}
