/**
 * Human labels for SAE features, kept in a YAML file beside the report (`features.yaml`): a mapping
 * from feature index to a label string or `{label, notes?, tags?}`. docs/features.md has an example.
 *
 * The file is written by people, so every error names the file, the key as written and its line.
 * YAML's own duplicate-key check is off: it compares keys as written (`7` vs `"07"`), while two keys
 * naming the same feature are the mistake worth catching; this module compares feature indices.
 */
import fs from 'node:fs';
import { LineCounter, isMap, isNode, isScalar, parseDocument } from 'yaml';
import { z } from 'zod';
import { err } from '../../common/errors.js';
import type { FeatureReport } from './report.js';

/** What a labels file says about one feature. */
export interface FeatureLabel {
  label: string;
  notes?: string;
  tags?: string[];
}

/** Labels by feature index. */
export type FeatureLabels = ReadonlyMap<number, FeatureLabel>;

/** Options of `readFeatureLabels` / `parseFeatureLabels`. */
export interface FeatureLabelsOptions {
  /** Latents of the SAE the labels are for; keys must be 0 … dSae − 1. */
  dSae: number;
}

const labelObjectSchema = z.strictObject({
  label: z.string(),
  notes: z.string().optional(),
  tags: z.array(z.string()).optional(),
});

function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  return typeof value === 'object' ? 'a mapping' : `${typeof value} ${JSON.stringify(value)}`;
}

/**
 * Parses labels from YAML text; `file` is only for messages. Throws SAEGATE_ERR_FEATURE_LABELS
 * naming the file (and the key and its line where there is one) for: a YAML syntax error, a
 * top level that is not a mapping, a key that is not an integer or is outside [0, dSae), two keys
 * naming the same feature, a value that is not a string or `{label, notes?, tags?}`, or an empty
 * label. An empty file means no labels.
 */
export function parseFeatureLabels(text: string, file: string, options: FeatureLabelsOptions): Map<number, FeatureLabel> {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: false, prettyErrors: false });
  if (doc.errors.length > 0) {
    const error = doc.errors[0];
    const { line, col } = lines.linePos(error.pos[0]);
    throw err('SAEGATE_ERR_FEATURE_LABELS', file, `YAML syntax error at line ${line}, column ${col}: ${error.message}`);
  }
  const labels = new Map<number, FeatureLabel>();
  const root = doc.contents;
  if (root === null || (isScalar(root) && root.value === null)) return labels;
  if (!isMap(root)) {
    throw err('SAEGATE_ERR_FEATURE_LABELS', file, `expected a mapping of feature index to label at the top level, got ${describeValue(root.toJS(doc))}`);
  }
  const firstLine = new Map<number, number>();
  for (const pair of root.items) {
    // Keys are quoted as written (`"07"`, `1.5`), so the message points at what the author typed.
    const keyRange = isNode(pair.key) ? pair.key.range : undefined;
    const keyText = keyRange ? text.slice(keyRange[0], keyRange[1]).trim() : String(pair.key);
    const line = keyRange ? lines.linePos(keyRange[0]).line : lines.linePos(root.range?.[0] ?? 0).line;
    const at = `key '${keyText}' (line ${line})`;
    const index = featureIndex(isScalar(pair.key) ? pair.key.value : undefined);
    if (index === null) throw err('SAEGATE_ERR_FEATURE_LABELS', file, `${at}: expected a feature index (an integer from 0 to ${options.dSae - 1})`);
    if (index >= options.dSae) throw err('SAEGATE_ERR_FEATURE_LABELS', file, `${at}: feature ${index} is out of range for d_sae = ${options.dSae} (0 to ${options.dSae - 1})`);
    const earlier = firstLine.get(index);
    if (earlier !== undefined) throw err('SAEGATE_ERR_FEATURE_LABELS', file, `${at}: feature ${index} is already labelled at line ${earlier}`);
    firstLine.set(index, line);

    const value: unknown = isNode(pair.value) ? pair.value.toJS(doc) : pair.value;
    labels.set(index, toLabel(value, file, at));
  }
  return labels;
}

/** A YAML key as a feature index: a non-negative integer, or a string of decimal digits; else null. */
function featureIndex(key: unknown): number | null {
  if (typeof key === 'number') return Number.isSafeInteger(key) && key >= 0 ? key : null;
  if (typeof key === 'string' && /^\d{1,15}$/.test(key)) return Number(key);
  return null;
}

function toLabel(value: unknown, file: string, at: string): FeatureLabel {
  let label: FeatureLabel;
  if (typeof value === 'string') {
    label = { label: value };
  } else if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    const parsed = labelObjectSchema.safeParse(value);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      if (issue.code === 'unrecognized_keys') {
        throw err('SAEGATE_ERR_FEATURE_LABELS', file, `${at}: unknown field ${issue.keys.map((k) => `'${k}'`).join(', ')} (a label mapping has label, notes and tags)`);
      }
      if (!('label' in value)) throw err('SAEGATE_ERR_FEATURE_LABELS', file, `${at}: field 'label' is missing`);
      throw err('SAEGATE_ERR_FEATURE_LABELS', file, `${at}: field '${issue.path.join('.')}': ${issue.message}`);
    }
    label = parsed.data;
  } else {
    throw err('SAEGATE_ERR_FEATURE_LABELS', file, `${at}: expected a label string or a mapping {label, notes?, tags?}, got ${describeValue(value)}`);
  }
  if (label.label.trim() === '') throw err('SAEGATE_ERR_FEATURE_LABELS', file, `${at}: the label is empty`);
  return label;
}

/**
 * Reads a labels file (see `parseFeatureLabels`). Throws SAEGATE_ERR_FEATURE_LABELS naming the file
 * when it cannot be read or is invalid.
 */
export function readFeatureLabels(file: string, options: FeatureLabelsOptions): Map<number, FeatureLabel> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    throw err('SAEGATE_ERR_FEATURE_LABELS', file, `cannot read: ${(error as Error).message}`);
  }
  return parseFeatureLabels(text, file, options);
}

/**
 * A copy of `report` with `label`, `notes` and `tags` of every labelled feature replaced by the
 * file's (a field the file omits is removed); features the file does not name keep theirs.
 * Throws SAEGATE_ERR_FEATURE_ARGUMENT when a label's index is outside the report's features (labels
 * read for another SAE).
 */
export function applyLabels(report: FeatureReport, labels: FeatureLabels): FeatureReport {
  const features = report.features.slice();
  for (const [index, entry] of labels) {
    const feature = features[index];
    if (!Number.isInteger(index) || index < 0 || feature === undefined) {
      throw err('SAEGATE_ERR_FEATURE_ARGUMENT', `label for feature ${index} but the report has ${features.length} features`);
    }
    const { index: entryIndex, label: _label, notes: _notes, tags: _tags, ...rest } = feature;
    features[index] = {
      index: entryIndex,
      label: entry.label,
      ...(entry.notes === undefined ? {} : { notes: entry.notes }),
      ...(entry.tags === undefined ? {} : { tags: [...entry.tags] }),
      ...rest,
    };
  }
  return { ...report, features };
}
