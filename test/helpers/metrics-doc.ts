/**
 * The metric names docs/metrics.md lists: every table row that starts with a backquoted
 * `saegate_*` name, grouped by the `## ` section it is under. Tests compare registries with it.
 */
import fs from 'node:fs';

const doc = (): string => fs.readFileSync(new URL('../../docs/metrics.md', import.meta.url), 'utf8');

/** Section title → the `saegate_*` names its tables list. */
export function documentedMetricsBySection(): Map<string, Set<string>> {
  const sections = new Map<string, Set<string>>();
  let current = '';
  for (const line of doc().split('\n')) {
    const heading = /^## (.+)$/.exec(line);
    if (heading !== null) current = heading[1].trim();
    const row = /^\| `(saegate_\w+)` \|/.exec(line);
    if (row !== null) {
      const names = sections.get(current) ?? new Set<string>();
      names.add(row[1]);
      sections.set(current, names);
    }
  }
  return sections;
}

/** The names listed under the given sections (all sections when none are given). */
export function documentedMetrics(...sections: string[]): Set<string> {
  const all = documentedMetricsBySection();
  const names = new Set<string>();
  for (const [section, set] of all) if (sections.length === 0 || sections.includes(section)) for (const name of set) names.add(name);
  return names;
}
