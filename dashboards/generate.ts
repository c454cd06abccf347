/**
 * Writes every dashboard in dashboards.ts to dashboards/json/<name>.json (`npm run dashboards`),
 * and their Kubernetes copies with the PrometheusRule (dashboards/kubernetes.ts). The files are
 * committed; test/unit/dashboards/dashboards.test.ts and test/unit/deploy/kubernetes.test.ts fail
 * when they are stale.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { allDashboards, dashboardJson } from './dashboards.js';
import { kubernetesFiles } from './kubernetes.js';

const outDir = path.join(path.dirname(fileURLToPath(import.meta.url)), 'json');
fs.mkdirSync(outDir, { recursive: true });
for (const [name, built] of Object.entries(allDashboards())) {
  const file = path.join(outDir, `${name}.json`);
  fs.writeFileSync(file, dashboardJson(built));
  process.stdout.write(`wrote ${path.relative(process.cwd(), file)}\n`);
}
for (const [file, content] of kubernetesFiles()) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, content);
  process.stdout.write(`wrote ${path.relative(process.cwd(), file)}\n`);
}
