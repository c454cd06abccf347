/**
 * The dashboards as code: the committed JSON is exactly what dashboards/generate.ts writes, every
 * panel is described and queries the datasource variable, and every query reads metrics saegate
 * documents or rules that recording.yml defines. test/integration/prometheus-rules.test.ts runs
 * the same queries on a real Prometheus.
 */
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { allDashboards, dashboardJson } from '../../../dashboards/dashboards.js';
import { committedDashboards, dashboardQueries, jsonDir, metricNames, recordedNames, ruleQueries, variableMetrics } from '../../helpers/dashboards.js';
import { documentedMetrics } from '../../helpers/metrics-doc.js';

describe('dashboards', () => {
  it('are committed exactly as the generator writes them (run `npm run dashboards` after a change)', () => {
    const generated = allDashboards();
    const committed = fs.readdirSync(jsonDir).filter((f) => f.endsWith('.json')).sort();
    expect(committed).toEqual(Object.keys(generated).map((name) => `${name}.json`).sort());
    for (const [name, built] of Object.entries(generated)) {
      expect(fs.readFileSync(new URL(`${name}.json`, jsonDir), 'utf8'), name).toBe(dashboardJson(built));
    }
  });

  it('give every panel a description, a title and the datasource variable, with unique uids and panel ids', () => {
    const uids = new Set<string>();
    for (const [file, dashboard] of committedDashboards()) {
      uids.add(dashboard.uid);
      expect(dashboard.templating.list.find((v) => v.name === 'datasource')?.type, file).toBe('datasource');
      expect(dashboard.panels.length, file).toBeGreaterThan(0);
      const ids = new Set<number>();
      for (const panel of dashboard.panels as readonly { id?: number; title?: string; description?: string; datasource?: { uid?: string }; targets?: readonly unknown[] }[]) {
        expect(panel.title, file).toMatch(/\S/);
        // What it shows and what a bad value means: more than a phrase.
        expect(panel.description?.length ?? 0, `${file}: ${panel.title}`).toBeGreaterThan(60);
        expect(panel.datasource?.uid, `${file}: ${panel.title}`).toBe('${datasource}');
        expect(panel.targets?.length ?? 0, `${file}: ${panel.title}`).toBeGreaterThan(0);
        ids.add(panel.id ?? -1);
      }
      expect(ids.size, file).toBe(dashboard.panels.length);
      expect(ids.has(-1), file).toBe(false);
    }
    expect(uids.size).toBe(committedDashboards().size);
  });

  it('query only documented metrics and recording rules that recording.yml defines', () => {
    const documented = documentedMetrics();
    const recorded = new Set(ruleQueries('recording.yml').map((r) => r.name));
    const histogramSuffix = /_(bucket|sum|count)$/;
    const queries = [...dashboardQueries(), ...variableMetrics(), ...ruleQueries('recording.yml'), ...ruleQueries('alerts.yml')];
    expect(queries.length).toBeGreaterThan(40);
    for (const { source, expr } of queries) {
      for (const name of metricNames(expr)) {
        if (name.startsWith('nodejs_') || name.startsWith('process_')) continue;
        const base = documented.has(name) ? name : name.replace(histogramSuffix, '');
        expect(documented.has(base), `${source}: ${name}`).toBe(true);
      }
      for (const name of recordedNames(expr)) expect(recorded.has(name), `${source}: ${name}`).toBe(true);
    }
  });
});
