/**
 * Watched features for `saegate serve --watch FILE` (docs/monitor.md, "Watched features"): a YAML or
 * JSON file `features: [{sae, index, label?}]`. Each watched feature gets its firing rate and mean
 * activation exported per window (two series per window each), so their number is capped. A label
 * defaults to the SAE's features.yaml label (passed in by the caller), else `feature N`.
 */
import fs from 'node:fs';
import { z } from 'zod';
import { err } from '../common/errors.js';
import { formatProblem, parseYamlFile, type FileProblem } from '../common/yaml-locate.js';
import type { WatchedFeature } from './metrics.js';

const watchSchema = z.strictObject({
  features: z.array(
    z.strictObject({
      sae: z.string().min(1),
      index: z.number().int().nonnegative(),
      label: z.string().min(1).optional(),
    }),
  ),
});

/** What the file may name: SAEs by id, with their width and features.yaml labels. */
export type WatchContext = ReadonlyMap<string, { readonly dSae: number; readonly labels?: ReadonlyMap<number, string> }>;

/** Parses a watch file's text; watched features by SAE id, or every problem. */
export function parseWatchFile(text: string, file: string, saes: WatchContext, maxWatched: number): { watched: Map<string, WatchedFeature[]> | null; problems: FileProblem[] } {
  const { value, problems, locate } = parseYamlFile(text, file, watchSchema);
  if (value === null || locate === null) return { watched: null, problems };
  const watched = new Map<string, WatchedFeature[]>();
  const seen = new Set<string>();
  value.features.forEach((f, i) => {
    const at = (field: string, message: string): void => {
      problems.push({ file, ...locate(['features', i, field]), path: `features[${i}].${field}`, message });
    };
    const sae = saes.get(f.sae);
    if (sae === undefined) return at('sae', `no SAE '${f.sae}' is loaded (loaded: ${[...saes.keys()].join(', ') || 'none'})`);
    if (f.index >= sae.dSae) return at('index', `feature ${f.index} is outside d_sae = ${sae.dSae} of SAE '${f.sae}'`);
    const key = `${f.sae}#${f.index}`;
    if (seen.has(key)) return at('index', `feature ${f.index} of SAE '${f.sae}' is listed twice`);
    seen.add(key);
    const list = watched.get(f.sae) ?? [];
    list.push({ feature: f.index, label: f.label ?? sae.labels?.get(f.index) ?? `feature ${f.index}` });
    watched.set(f.sae, list);
  });
  if (problems.length === 0 && seen.size > maxWatched) {
    problems.push({
      file,
      line: 0,
      column: 0,
      path: '',
      message: `${seen.size} watched features exceed --max-watched-features (${maxWatched}); each adds 2 series per window: watch fewer features or raise the cap`,
    });
  }
  return { watched: problems.length === 0 ? watched : null, problems };
}

/** Reads a watch file; SAEGATE_ERR_WATCH_FILE listing every problem. */
export function readWatchFile(file: string, saes: WatchContext, maxWatched: number): Map<string, WatchedFeature[]> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    throw err('SAEGATE_ERR_WATCH_FILE', file, `cannot read (${(error as NodeJS.ErrnoException).code ?? String(error)})`);
  }
  const { watched, problems } = parseWatchFile(text, file, saes, maxWatched);
  if (watched === null) throw err('SAEGATE_ERR_WATCH_FILE', file, problems.map(formatProblem).join('\n'));
  return watched;
}
