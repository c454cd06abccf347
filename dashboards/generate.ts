/**
 * Writes every dashboard in dashboards.ts to dashboards/json/<name>.json (`npm run dashboards`).
 * The JSON is committed; test/unit/dashboards/dashboards.test.ts fails when it is stale.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { allDashboards, dashboardJson } from './dashboards.js';

const outDir = path.join(path.dirname(fileURLToPath(import.meta.url)), 'json');
fs.mkdirSync(outDir, { recursive: true });
for (const [name, built] of Object.entries(allDashboards())) {
  const file = path.join(outDir, `${name}.json`);
  fs.writeFileSync(file, dashboardJson(built));
  process.stdout.write(`wrote ${path.relative(process.cwd(), file)}\n`);
}
