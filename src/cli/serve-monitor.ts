/**
 * The drift monitor's part of `saegate serve`: its flags (spread into serve's option table) and the
 * composition of a `MonitorService` over the loaded SAEs: watched features (with features.yaml
 * labels), alert rules, baselines, a live baseline recording. Files that would make the monitor
 * wrong (watch file, alert rules) stop start-up; a baseline that cannot be used does not (the SAE
 * runs without drift and `/readyz` says why).
 */
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import type { Registry } from 'prom-client';
import { z } from 'zod';
import { SaegateError } from '../common/errors.js';
import { custom, flagName, integer, text } from '../common/options.js';
import { readFeatureLabels } from '../lab/features/labels.js';
import { readAlertRules } from '../monitor/alert-rules.js';
import type { WatchedFeature } from '../monitor/metrics.js';
import type { AlertRule } from '../monitor/alert-rules.js';
import type { CompiledPolicy } from '../policies/compile.js';
import { saeWeightsHash } from '../monitor/sae-hash.js';
import { MonitorService, UNKNOWN_MODEL } from '../monitor/service.js';
import { readWatchFile } from '../monitor/watch-file.js';
import { DEFAULT_WINDOWS } from '../monitor/windows.js';
import type { SaeWeights } from '../sae/types.js';

const durationType = custom(
  z
    .string()
    .regex(/^\d+(s|m|h)$/)
    .transform((value) => Number(value.slice(0, -1)) * { s: 1000, m: 60_000, h: 3_600_000 }[value.slice(-1) as 's' | 'm' | 'h']),
  "a duration such as '90s', '10m' or '2h'",
  'DURATION',
);

/** Serve's monitor flags (flags only: not variables or config-file keys, like `--sae`). */
export const monitorOptions = {
  baseline: {
    type: text('FILE'),
    multiple: true,
    noConfigFile: true,
    help: "drift baseline for one SAE/hook, matched by the file's provenance hook; repeatable. An unusable file leaves that SAE without drift (see /readyz)",
  },
  watch: {
    type: text('FILE'),
    noConfigFile: true,
    help: 'watched features (YAML/JSON `features: [{sae, index, label?}]`): firing rate and mean activation exported per window',
  },
  maxWatchedFeatures: {
    type: integer(0),
    default: 256,
    noConfigFile: true,
    help: 'most watched features over all SAEs (each adds 2 series per window); more stop start-up',
  },
  alertRules: {
    type: text('FILE'),
    noConfigFile: true,
    help: 'alert rules evaluated by the monitor (docs/monitor.md): saegate_alert_firing, a log line, an optional webhook',
  },
  recordBaseline: {
    type: text('FILE'),
    noConfigFile: true,
    help: 'record a baseline from live traffic (each request one document), written when --duration ends or on shutdown',
  },
  duration: {
    type: durationType,
    noConfigFile: true,
    help: 'how long --record-baseline records (e.g. 30m); unset: until shutdown',
  },
} as const;

/** The monitor flags' values. */
export interface MonitorFlags {
  baseline?: readonly string[];
  watch?: string;
  maxWatchedFeatures?: number;
  alertRules?: string;
  recordBaseline?: string;
  duration?: number;
  /** Assessment period, ms (tests). Default 5000. */
  assessIntervalMs?: number;
}

/**
 * Splits serve's resolved options into the proxy's and the monitor's, so a caller may hand
 * `startProxyWithSaes` everything `parseCommand(serveCommand)` gave (the proxy refuses keys it
 * does not know).
 */
export function splitMonitorFlags<O extends object>(options: O): { proxy: Omit<O, keyof MonitorFlags>; flags: MonitorFlags } {
  const { baseline, watch, maxWatchedFeatures, alertRules, recordBaseline, duration, assessIntervalMs, ...proxy } = options as O & MonitorFlags;
  const flags: MonitorFlags = { baseline, watch, maxWatchedFeatures, alertRules, recordBaseline, duration, assessIntervalMs };
  for (const key of Object.keys(flags) as (keyof MonitorFlags)[]) if (flags[key] === undefined) delete flags[key];
  return { proxy: proxy as Omit<O, keyof MonitorFlags>, flags };
}

/** The SAE's id in the monitor, policies and baselines: its directory name. */
export function saeName(sae: SaeWeights): string {
  return path.basename(path.resolve(sae.config.source));
}

function saegateVersion(): string {
  return (createRequire(import.meta.url)('../../package.json') as { version: string }).version;
}

/** Labels from `features.yaml` in the SAE's directory, when there is one. */
function labelsOf(sae: SaeWeights): Map<number, string> | undefined {
  const file = path.join(path.resolve(sae.config.source), 'features.yaml');
  if (!fs.existsSync(file)) return undefined;
  return new Map([...readFeatureLabels(file, { dSae: sae.config.dSae })].map(([f, l]) => [f, l.label]));
}

/** What a policy set's `monitor` actions add to the monitor: watched features and their alert rules. */
export interface PolicyMonitoring {
  /** Per SAE name, features the policies watch (with their labels). */
  readonly watched: ReadonlyMap<string, readonly WatchedFeature[]>;
  /** One rule per `alertFiringRateAbove` / `alertMeanActivationAbove` (window 5m, fires at once). */
  readonly rules: readonly AlertRule[];
}

/**
 * The monitoring asked for by a policy set's `monitor` actions (docs/policies.md, "monitor"). Alert
 * names are `policy_<policy>_<sae>_<feature>_rate|mean`, letters, digits and underscores.
 */
export function policyMonitoring(policies: readonly CompiledPolicy[]): PolicyMonitoring {
  const watched = new Map<string, WatchedFeature[]>();
  const rules: AlertRule[] = [];
  const safe = (text: string): string => text.replace(/[^A-Za-z0-9_]/g, '_');
  for (const policy of policies) {
    for (const watch of policy.watches) {
      const list = watched.get(watch.sae) ?? [];
      if (!list.some((w) => w.feature === watch.index)) list.push({ feature: watch.index, label: watch.label });
      watched.set(watch.sae, list);
      const base = { sae: watch.sae, window: '5m', for: { text: '0s', ms: 0 }, severity: 'warning' as const };
      const name = `policy_${safe(policy.name)}_${safe(watch.sae)}_${watch.index}`;
      if (watch.alertFiringRateAbove !== undefined) {
        rules.push({ ...base, name: `${name}_rate`, signal: { featureRate: watch.index }, threshold: watch.alertFiringRateAbove, summary: `policy ${policy.name}: ${watch.label} firing rate above ${watch.alertFiringRateAbove}` });
      }
      if (watch.alertMeanActivationAbove !== undefined) {
        rules.push({ ...base, name: `${name}_mean`, signal: { featureMeanActivation: watch.index }, threshold: watch.alertMeanActivationAbove, summary: `policy ${policy.name}: ${watch.label} mean activation above ${watch.alertMeanActivationAbove}` });
      }
    }
  }
  return { watched, rules };
}

/** The features `monitoring` watches that `current` does not export (they need a restart: series are fixed at start). */
export function unexportedWatches(monitoring: PolicyMonitoring, exported: ReadonlyMap<string, readonly WatchedFeature[]>): string[] {
  const missing: string[] = [];
  for (const [sae, list] of monitoring.watched) {
    for (const w of list) if (!(exported.get(sae) ?? []).some((e) => e.feature === w.feature)) missing.push(`${sae}#${w.feature}`);
  }
  return missing;
}

/**
 * Builds (not starts) the monitor over `saes`; none without SAEs. Throws SAEGATE_ERR_CONFIG for a
 * monitor flag without `--sae` or `--duration` without `--record-baseline`, and the files' own
 * errors for a bad watch or rules file.
 */
export function createMonitor(saes: readonly SaeWeights[], flags: MonitorFlags, registry: Registry, fromPolicies?: PolicyMonitoring): MonitorService | undefined {
  if (flags.duration !== undefined && flags.recordBaseline === undefined) {
    throw new SaegateError('SAEGATE_ERR_CONFIG', ['--duration', 'is how long --record-baseline records; give --record-baseline FILE too']);
  }
  if (saes.length === 0) {
    const given = (['baseline', 'watch', 'alertRules', 'recordBaseline'] as const).find((key) => (key === 'baseline' ? (flags.baseline?.length ?? 0) > 0 : flags[key] !== undefined));
    if (given !== undefined) throw new SaegateError('SAEGATE_ERR_CONFIG', [`--${flagName(given)}`, 'the drift monitor runs over SAEs: give --sae DIR too']);
    return undefined;
  }
  const labels = new Map(saes.map((sae) => [saeName(sae), labelsOf(sae)] as const));
  const maxWatched = flags.maxWatchedFeatures ?? 256;
  const watched =
    flags.watch === undefined
      ? new Map<string, WatchedFeature[]>()
      : readWatchFile(flags.watch, new Map(saes.map((sae) => [saeName(sae), { dSae: sae.config.dSae, labels: labels.get(saeName(sae)) }])), maxWatched);
  // The policies' watched features join the file's (the file's label wins for a feature in both).
  for (const [sae, list] of fromPolicies?.watched ?? []) {
    const merged = [...(watched.get(sae) ?? [])];
    for (const w of list) if (!merged.some((m) => m.feature === w.feature)) merged.push(w);
    watched.set(sae, merged);
  }
  const watchedCount = [...watched.values()].reduce((n, list) => n + list.length, 0);
  if (watchedCount > maxWatched) {
    throw new SaegateError('SAEGATE_ERR_CONFIG', ['--max-watched-features', `the watch file and the policies' monitor actions watch ${watchedCount} features, more than the cap of ${maxWatched} (each adds 2 series per window); raise the cap or watch fewer`]);
  }
  const specs = saes.map((sae) => ({
    model: sae.config.modelName ?? UNKNOWN_MODEL,
    sae: saeName(sae),
    hook: sae.config.hookName,
    dSae: sae.config.dSae,
    saeHash: saeWeightsHash(sae),
    watched: watched.get(saeName(sae)) ?? [],
    labels: labels.get(saeName(sae)),
  }));
  const fileRules =
    flags.alertRules === undefined
      ? undefined
      : readAlertRules(flags.alertRules, { saes: specs.map((s) => ({ sae: s.sae, hook: s.hook, watched: s.watched.map((w) => w.feature) })), windows: DEFAULT_WINDOWS.map((w) => w.name) });
  const policyRules = fromPolicies?.rules ?? [];
  const alertRules = policyRules.length === 0 ? fileRules : { ...fileRules, rules: [...(fileRules?.rules ?? []), ...policyRules] };
  const monitor = new MonitorService({
    saes: specs,
    registry,
    alertRules,
    maxWatchedFeatures: maxWatched,
    saegateVersion: saegateVersion(),
    ...(flags.assessIntervalMs !== undefined && { assessIntervalMs: flags.assessIntervalMs }),
  });
  monitor.loadBaselineFiles(flags.baseline ?? []);
  return monitor;
}
