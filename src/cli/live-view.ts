/**
 * The live view for `serve` and the demo: a hub whose feature labels come from each SAE
 * directory's `features.yaml` and whose links go to each SAE's `features.html` (served under
 * `/ui/features/N` with the page's own hash-based CSP). Composition only; the view lives in
 * src/proxy/live.
 */
import fs from 'node:fs';
import path from 'node:path';
import { featurePageCsp } from '../lab/features/html.js';
import { readFeatureLabels } from '../lab/features/labels.js';
import { LiveHub, type LiveDriftSource } from '../proxy/live/hub.js';
import { featurePagePath, LiveView, type LiveFeaturePage } from '../proxy/live/routes.js';
import type { SaeWeights } from '../sae/types.js';

/** Builds the live view over `saes` (labels and feature pages when their directories have them). */
export function createLiveView(saes: readonly SaeWeights[], options: { drift?: LiveDriftSource } = {}): LiveView {
  const labels = new Map<string, ReadonlyMap<number, { label: string }>>();
  const pages: LiveFeaturePage[] = [];
  const pageByHook: Record<string, string> = {};
  for (const sae of saes) {
    const dir = path.resolve(sae.config.source);
    const hook = sae.config.hookName;
    const labelsFile = path.join(dir, 'features.yaml');
    // A bad labels file stops start-up (SAEGATE_ERR_FEATURE_LABELS names it), as it does for `sae features`.
    if (fs.existsSync(labelsFile) && !labels.has(hook)) labels.set(hook, readFeatureLabels(labelsFile, { dSae: sae.config.dSae }));
    const page = path.join(dir, 'features.html');
    if (fs.existsSync(page) && pageByHook[hook] === undefined) {
      pageByHook[hook] = featurePagePath(pages.length);
      pages.push({ hook, file: page, csp: featurePageCsp });
    }
  }
  const hub = new LiveHub({
    label: (hook, index) => labels.get(hook)?.get(index)?.label,
    featurePages: pageByHook,
    ...(options.drift && { drift: options.drift }),
  });
  return new LiveView({ hub, featurePages: pages });
}
