/**
 * The demo's example policies (docs/policies.md), written next to its SAE on the first start:
 * - `watch.yaml`: a `monitor` policy on every request, watching three of the SAE's features
 *   (the most frequent ones that are neither dead nor dense), labelled by the token they fired on
 *   most strongly in the feature report;
 * - `less-sad.yaml`: a `steer` policy with the vector `vectors build` made from the shipped
 *   prompt sets (examples/prompts/happy.txt minus sad.txt), only for requests that send the header
 *   `x-saegate-steer: less-sad`, so the same prompt can be compared with and without it.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { FeatureReport } from '../lab/features/report.js';

/** The header value that turns the demo's steering on. */
export const DEMO_STEER_HEADER = { name: 'x-saegate-steer', value: 'less-sad' } as const;
/** Scale of the demo steer: the sweep in docs/steering.md reached −61% of the negative-emotion rate at +0.08 nats near 2. */
export const DEMO_STEER_SCALE = 2;

/** Three watched features: the most frequent alive, non-dense ones, labelled by their strongest token. */
export function demoWatchedFeatures(report: FeatureReport): { index: number; label: string }[] {
  return report.features
    .filter((f) => !f.dead && !f.dense && f.examples.length > 0)
    .sort((a, b) => b.frequency - a.frequency || a.index - b.index)
    .slice(0, 3)
    .map((f) => {
      const top = f.examples[0];
      const token = (top.tokens[top.marked] ?? '').trim() || '·';
      return { index: f.index, label: f.label ?? `fires on "${token}"` };
    });
}

/**
 * Writes `policies/` under `saeDir` (which will be renamed to a directory named `saeName`):
 * `watch.yaml` always, `less-sad.yaml` when `vectorFile` (relative to the policy directory) is given.
 */
export function writeDemoPolicies(saeDir: string, saeName: string, report: FeatureReport, vector: { file: string; hook: string } | null): string {
  const dir = path.join(saeDir, 'policies');
  fs.mkdirSync(dir, { recursive: true });
  const features = demoWatchedFeatures(report)
    .map((f) => `          - {index: ${f.index}, label: ${JSON.stringify(f.label)}}`)
    .join('\n');
  fs.writeFileSync(
    path.join(dir, 'watch.yaml'),
    `# Written by saegate demo: watches three of the demo SAE's features on every request.\n` +
      `apiVersion: saegate/v1\nkind: Policy\nmetadata:\n  name: demo-watch\nspec:\n  actions:\n    - monitor:\n        sae: ${JSON.stringify(saeName)}\n        features:\n${features}\n`,
  );
  if (vector !== null) {
    fs.writeFileSync(
      path.join(dir, 'less-sad.yaml'),
      `# Written by saegate demo: steers away from sad stories, only when asked by the header\n` +
        `# ${DEMO_STEER_HEADER.name}: ${DEMO_STEER_HEADER.value} (the vector: saegate vectors build, happy minus sad prompts).\n` +
        `apiVersion: saegate/v1\nkind: Policy\nmetadata:\n  name: demo-less-sad\nspec:\n  match:\n    headers:\n      ${DEMO_STEER_HEADER.name}: [${DEMO_STEER_HEADER.value}]\n` +
        `  actions:\n    - steer:\n        vector: ${vector.file}\n        hooks: [${vector.hook}]\n        scale: ${DEMO_STEER_SCALE}\n        positions: all\n`,
    );
  }
  return dir;
}
