/**
 * Alert rules evaluated by the monitor inside `saegate serve` (docs/monitor.md, "Alert rules"): a
 * YAML or JSON file of rules, each one SAE/hook, one signal (a window-level drift statistic, the
 * count of BH-flagged features, or a watched feature's firing rate), a threshold (a number, or the
 * calibrated threshold at a stated false-alarm rate), a window, a `for` duration and a severity; plus
 * an optional webhook that receives firing and resolved alerts.
 *
 * Every problem in the file is reported at once as `file:line:column: path: message`
 * (src/common/yaml-locate.ts, as policy files are). The same rules can be written as Prometheus
 * alerting rules (`toPrometheusRules`) for a fleet-wide Prometheus to evaluate on the exported series.
 */
import fs from 'node:fs';
import { z } from 'zod';
import { err } from '../common/errors.js';
import { formatProblem, parseYamlFile, type FileProblem } from '../common/yaml-locate.js';
import { DRIFT_STATISTICS, type AlertSeverity, type DriftStatistic } from './metrics.js';

/** Durations as Prometheus writes them: `30s`, `5m`, `1h`, `0s`. */
const durationSchema = z
  .string()
  .regex(/^\d+(ms|s|m|h)$/, "a duration such as '30s', '5m' or '1h'")
  .transform((text) => {
    const match = /^(\d+)(ms|s|m|h)$/.exec(text)!;
    const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[match[2] as 'ms' | 's' | 'm' | 'h'];
    return { text, ms: Number(match[1]) * unit };
  });

const signalSchema = z.union([
  z.enum([...DRIFT_STATISTICS, 'flagged_features'] as [DriftStatistic | 'flagged_features', ...(DriftStatistic | 'flagged_features')[]]),
  z.strictObject({ featureRate: z.number().int().nonnegative() }),
  z.strictObject({ featureMeanActivation: z.number().int().nonnegative() }),
]);

const thresholdSchema = z.union([z.number().finite(), z.strictObject({ falseAlarmRate: z.number().gt(0).lt(1) })]);

const ruleSchema = z.strictObject({
  name: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'an alert name is letters, digits and underscores (a Prometheus alert name)'),
  sae: z.string().min(1),
  hook: z.string().min(1).optional(),
  signal: signalSchema,
  threshold: thresholdSchema.optional(),
  window: z.string().min(1).default('5m'),
  for: durationSchema.prefault('0s'),
  severity: z.enum(['info', 'warning', 'critical']).default('warning'),
  summary: z.string().optional(),
});

const webhookSchema = z.strictObject({
  url: z.url({ protocol: /^https?$/ }),
  /** Deliveries waiting at most; more are dropped and counted. */
  maxQueue: z.number().int().positive().default(256),
  /** Attempts per delivery (first included). */
  attempts: z.number().int().positive().default(5),
  /** First backoff, doubled per attempt. */
  backoffMs: z.number().int().nonnegative().default(500),
  timeoutMs: z.number().int().positive().default(5000),
});

const rulesFileSchema = z.strictObject({
  webhook: webhookSchema.optional(),
  rules: z.array(ruleSchema),
});

/** One alert rule as validated. */
/** A watched feature's firing rate, or its mean activation over the tokens where it fired. */
export type FeatureSignal = { readonly featureRate: number } | { readonly featureMeanActivation: number };

/** The feature a feature signal reads. */
export function signalFeature(signal: FeatureSignal): number {
  return 'featureRate' in signal ? signal.featureRate : signal.featureMeanActivation;
}

export interface AlertRule {
  readonly name: string;
  readonly sae: string;
  /** Absent: the SAE's only hook. */
  readonly hook?: string;
  /** A drift statistic, `flagged_features`, or a watched feature's firing rate. */
  readonly signal: DriftStatistic | 'flagged_features' | FeatureSignal;
  /** A number, or the calibrated threshold at this false-alarm rate. Absent: calibrated at the monitor's α. */
  readonly threshold?: number | { readonly falseAlarmRate: number };
  readonly window: string;
  readonly for: { readonly text: string; readonly ms: number };
  readonly severity: AlertSeverity;
  readonly summary?: string;
}

/** Where firing and resolved alerts are POSTed. */
export interface WebhookConfig {
  readonly url: string;
  readonly maxQueue: number;
  readonly attempts: number;
  readonly backoffMs: number;
  readonly timeoutMs: number;
}

export interface AlertRulesFile {
  readonly webhook?: WebhookConfig;
  readonly rules: readonly AlertRule[];
}

/** What the rules may refer to: the monitored SAEs with their hooks, windows and watched features. */
export interface AlertRuleContext {
  readonly saes: readonly { readonly sae: string; readonly hook: string; readonly watched: readonly number[] }[];
  readonly windows: readonly string[];
}

/** Parses and checks a rules file's text against `context`; every problem, none when valid. */
export function parseAlertRules(text: string, file: string, context?: AlertRuleContext): { rules: AlertRulesFile | null; problems: FileProblem[] } {
  const { value, problems, locate } = parseYamlFile(text, file, rulesFileSchema);
  if (value === null || locate === null) return { rules: null, problems };
  const rules = value.rules as AlertRule[];
  const names = new Set<string>();
  rules.forEach((rule, i) => {
    const at = (field: string, message: string): void => {
      problems.push({ file, ...locate(['rules', i, field]), path: `rules[${i}].${field}`, message });
    };
    if (names.has(rule.name)) at('name', `alert '${rule.name}' is declared twice`);
    names.add(rule.name);
    const feature = typeof rule.signal === 'object';
    if (feature && typeof rule.threshold !== 'number') at('threshold', 'a featureRate or featureMeanActivation signal needs a numeric threshold (a firing rate, 0 to 1, or an activation)');
    if (rule.signal === 'flagged_features' && typeof rule.threshold !== 'number') at('threshold', 'a flagged_features signal needs a numeric threshold (a feature count)');
    if (context === undefined) return;
    if (!context.windows.includes(rule.window)) at('window', `no window '${rule.window}' (monitored: ${context.windows.join(', ')})`);
    const candidates = context.saes.filter((s) => s.sae === rule.sae && (rule.hook === undefined || s.hook === rule.hook));
    if (candidates.length === 0) {
      at(rule.hook === undefined ? 'sae' : 'hook', `no monitored SAE '${rule.sae}'${rule.hook === undefined ? '' : ` at hook '${rule.hook}'`} (monitored: ${context.saes.map((s) => `${s.sae}@${s.hook}`).join(', ') || 'none'})`);
    } else if (candidates.length > 1) {
      at('sae', `SAE '${rule.sae}' runs at several hooks (${candidates.map((s) => s.hook).join(', ')}): name the hook`);
    } else if (typeof rule.signal === 'object' && !candidates[0].watched.includes(signalFeature(rule.signal))) {
      at('signal', `feature ${signalFeature(rule.signal)} of SAE '${rule.sae}' is not watched (--watch): only watched features have firing rates and mean activations`);
    }
  });
  return { rules: problems.length === 0 ? { webhook: value.webhook, rules } : null, problems };
}

/** Reads a rules file; SAEGATE_ERR_ALERT_RULES listing every problem. */
export function readAlertRules(file: string, context?: AlertRuleContext): AlertRulesFile {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    throw err('SAEGATE_ERR_ALERT_RULES', file, `cannot read (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
  }
  const { rules, problems } = parseAlertRules(text, file, context);
  if (rules === null) throw err('SAEGATE_ERR_ALERT_RULES', file, `${problems.length} problem${problems.length === 1 ? '' : 's'}:\n${problems.map(formatProblem).join('\n')}`);
  return rules;
}

/** A rule's signal as text: `jsd`, `flagged_features`, `feature 12 firing rate`. */
export function describeSignal(signal: AlertRule['signal']): string {
  if (typeof signal !== 'object') return signal;
  return 'featureRate' in signal ? `feature ${signal.featureRate} firing rate` : `feature ${signal.featureMeanActivation} mean activation`;
}

function promString(value: string): string {
  return JSON.stringify(value);
}

/**
 * The rules as a Prometheus rules file (YAML text, one group `saegate-monitor-rules`), over the
 * series saegate exports: a statistic against a number or against `saegate_drift_threshold` (the
 * monitor's calibrated threshold; `alpha` is the monitor's false-alarm rate, the only one the
 * metric carries), `saegate_drift_flagged_features`, `saegate_feature_firing_rate`. Throws
 * SAEGATE_ERR_ALERT_RULES for a `falseAlarmRate` other than `alpha`.
 */
export function toPrometheusRules(file: AlertRulesFile, source: string, alpha: number): string {
  const lines = [`# Generated by 'saegate alerts export' from ${source}; evaluated on the series saegate exports (docs/metrics.md).`, 'groups:', '  - name: saegate-monitor-rules', '    rules:'];
  for (const rule of file.rules) {
    const selector = (extra: Record<string, string>): string =>
      `{${Object.entries({ sae: rule.sae, ...(rule.hook !== undefined && { hook: rule.hook }), ...extra, window: rule.window })
        .map(([k, v]) => `${k}=${promString(v)}`)
        .join(',')}}`;
    let expr: string;
    if (typeof rule.signal === 'object') {
      const metric = 'featureRate' in rule.signal ? 'saegate_feature_firing_rate' : 'saegate_feature_mean_activation';
      expr = `${metric}${selector({ feature: String(signalFeature(rule.signal)) })} > ${String(rule.threshold)}`;
    } else if (rule.signal === 'flagged_features') {
      expr = `saegate_drift_flagged_features${selector({})} > ${String(rule.threshold)}`;
    } else if (typeof rule.threshold === 'number') {
      expr = `saegate_drift_score${selector({ statistic: rule.signal })} > ${rule.threshold}`;
    } else {
      if (rule.threshold !== undefined && rule.threshold.falseAlarmRate !== alpha) {
        throw err('SAEGATE_ERR_ALERT_RULES', source, `rule '${rule.name}': falseAlarmRate ${rule.threshold.falseAlarmRate} cannot be exported: saegate_drift_threshold carries the monitor's alpha (${alpha}) only`);
      }
      const s = selector({ statistic: rule.signal });
      expr = `saegate_drift_score${s} > on(model, sae, hook, statistic, window) saegate_drift_threshold${s}`;
    }
    const summary = rule.summary ?? `${rule.sae} ${describeSignal(rule.signal)} over ${rule.window} above threshold`;
    lines.push(
      `      - alert: ${rule.name}`,
      `        expr: ${promString(expr)}`,
      `        for: ${rule.for.text}`,
      '        labels:',
      `          severity: ${rule.severity}`,
      '        annotations:',
      `          summary: ${promString(summary)}`,
    );
  }
  return `${lines.join('\n')}\n`;
}
