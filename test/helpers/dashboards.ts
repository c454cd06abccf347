/**
 * The queries in the committed dashboards (dashboards/json) and Prometheus rule files
 * (dashboards/prometheus), for the tests that check them against the generator, the registry and
 * a real Prometheus.
 */
import fs from 'node:fs';
import YAML from 'yaml';

export const dashboardsDir = new URL('../../dashboards/', import.meta.url);
export const jsonDir = new URL('json/', dashboardsDir);
export const prometheusDir = new URL('prometheus/', dashboardsDir);

export interface NamedQuery {
  /** Where it comes from, e.g. `sae-health.json: L0 … [A]` or `alerts.yml: SaegateFleetDrifting`. */
  readonly source: string;
  readonly expr: string;
}

interface PanelJson {
  readonly title?: string;
  readonly description?: string;
  readonly datasource?: { readonly type?: string; readonly uid?: string };
  readonly targets?: readonly { readonly expr?: string; readonly refId?: string; readonly datasource?: { readonly uid?: string } }[];
}

export interface DashboardJson {
  readonly uid: string;
  readonly title: string;
  readonly panels: readonly PanelJson[];
  readonly templating: { readonly list: readonly { readonly type: string; readonly name: string; readonly query?: unknown }[] };
}

/** The committed dashboards: file name → parsed JSON. */
export function committedDashboards(): Map<string, DashboardJson> {
  const files = fs.readdirSync(jsonDir).filter((f) => f.endsWith('.json')).sort();
  return new Map(files.map((f) => [f, JSON.parse(fs.readFileSync(new URL(f, jsonDir), 'utf8')) as DashboardJson]));
}

/** Every panel target's PromQL, Grafana variables left in. */
export function dashboardQueries(): NamedQuery[] {
  const queries: NamedQuery[] = [];
  for (const [file, dashboard] of committedDashboards()) {
    for (const panel of dashboard.panels) {
      for (const target of panel.targets ?? []) {
        if (target.expr !== undefined) queries.push({ source: `${file}: ${panel.title ?? '?'} [${target.refId ?? '?'}]`, expr: target.expr });
      }
    }
  }
  return queries;
}

/** The metric named in each `label_values(metric, label)` variable query. */
export function variableMetrics(): NamedQuery[] {
  const metrics: NamedQuery[] = [];
  for (const [file, dashboard] of committedDashboards()) {
    for (const variable of dashboard.templating.list) {
      const match = typeof variable.query === 'string' ? /^label_values\((\w+), *\w+\)$/.exec(variable.query) : null;
      if (match !== null) metrics.push({ source: `${file}: $${variable.name}`, expr: match[1] });
    }
  }
  return metrics;
}

interface RuleFile {
  readonly groups: readonly { readonly name: string; readonly rules: readonly { readonly record?: string; readonly alert?: string; readonly expr: string }[] }[];
}

/** Every rule's expression in `recording.yml` or `alerts.yml`. */
export function ruleQueries(file: 'recording.yml' | 'alerts.yml'): (NamedQuery & { readonly name: string })[] {
  const parsed = YAML.parse(fs.readFileSync(new URL(file, prometheusDir), 'utf8')) as RuleFile;
  return parsed.groups.flatMap((group) => group.rules.map((rule) => ({ source: `${file}: ${rule.record ?? rule.alert}`, name: rule.record ?? rule.alert ?? '', expr: rule.expr })));
}

/**
 * The raw metric names an expression reads (`saegate_*`, `nodejs_*`), without recording-rule names
 * (which have colons).
 */
export function metricNames(expr: string): string[] {
  return [...expr.matchAll(/(?<![\w:])((?:saegate|nodejs|process)_\w+)(?![\w:])/g)].map((m) => m[1]);
}

/** Recording-rule names (with colons) an expression reads. */
export function recordedNames(expr: string): string[] {
  return [...expr.matchAll(/(?<![\w:])(\w*:[\w:]+)(?![\w:])/g)].map((m) => m[1]);
}
