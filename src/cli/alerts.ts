/**
 * `saegate alerts export RULES --out FILE`: the monitor's alert rules (`serve --alert-rules`) as a
 * Prometheus rules file over the series saegate exports, for a Prometheus that watches a fleet.
 */
import { writeTextAtomically } from '../common/json-file.js';
import { parseCommand, text, type CommandSpec } from '../common/options.js';
import { readAlertRules, toPrometheusRules } from '../monitor/alert-rules.js';
import { DEFAULT_ALPHA } from '../monitor/service.js';

const alertsExportOptions = {
  rules: { type: text('RULES'), positional: true, required: true, help: 'alert rules file (YAML or JSON, as for serve --alert-rules)' },
  out: { type: text('FILE'), required: true, help: 'Prometheus rules file to write (YAML)' },
} as const;

export const alertsExportCommand = {
  name: 'alerts export',
  synopsis: 'saegate alerts export RULES --out FILE',
  description:
    "Writes the monitor's alert rules as Prometheus alerting rules (docs/monitor.md, \"Alert rules\").\n" +
    "Calibrated thresholds become comparisons with saegate_drift_threshold, which carries the monitor's\n" +
    'false-alarm rate only: a rule with another falseAlarmRate is refused.',
  options: alertsExportOptions,
} as const satisfies CommandSpec<typeof alertsExportOptions>;

/** Runs the export; returns the line to print. */
export function alertsExport(argv: string[]): string {
  const flags = parseCommand(alertsExportCommand, argv);
  const rules = readAlertRules(flags.rules);
  writeTextAtomically(flags.out, toPrometheusRules(rules, flags.rules, DEFAULT_ALPHA), 'SAEGATE_ERR_ALERT_RULES');
  return `wrote ${rules.rules.length} alerting rule${rules.rules.length === 1 ? '' : 's'} to ${flags.out}`;
}
