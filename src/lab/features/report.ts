/**
 * The feature report `saegate sae features` writes: per SAE latent, how often it fires, how strongly,
 * and the corpus contexts where it fired hardest. One JSON file (`features.json`) that the static page
 * (`html.ts`) embeds and that labels (`labels.ts`) annotate. docs/features.md documents every field.
 *
 * Reading a report back validates it fully (zod, then cross-field checks), so the page and any tool
 * built on the file can index `features[i]` and `tokens[marked]` without guarding.
 */
import { z } from 'zod';
import { err } from '../../common/errors.js';
import { jsonWithArrayLines, readJsonFile, writeTextAtomically } from '../../common/json-file.js';

/** The report format version this code writes and reads. */
export const FEATURE_REPORT_VERSION = 1;

/** The SAE a report describes. */
export interface FeatureReportSae {
  /** Directory (or file) the SAE was loaded from. */
  path: string;
  /** TransformerLens hook point the SAE reads, e.g. `blocks.6.hook_resid_post`. */
  hookName: string;
  dIn: number;
  dSae: number;
  /** `standard`, `topk`, `jumprelu` or `gated`. */
  architecture: string;
  /** TopK: active latents per row. */
  k?: number;
}

/** How examples were collected; recorded so a report says what its lists mean. */
export interface FeatureReportExampleSettings {
  /** Most examples kept per feature (top-N by activation). */
  perFeature: number;
  /** Most examples one document may contribute to one feature. */
  perDocument: number;
  /** Tokens kept before the activating token. */
  windowBefore: number;
  /** Tokens kept after the activating token. */
  windowAfter: number;
}

/** One context where a feature fired. */
export interface FeatureExample {
  /** Id of the corpus document. */
  document: string;
  /** Index of the activating token in the document (0-based). */
  position: number;
  /** The feature's activation on that token. */
  activation: number;
  /** Token texts of the window, in order (decoded text, whitespace and newlines kept). */
  tokens: string[];
  /** This feature's activation on each window token; 0 where it was inactive. Same length as `tokens`. */
  activations: number[];
  /** Index in the window of the activating token: `tokens[marked]` is the document's token `position`. */
  marked: number;
}

/** Activation histogram over the rows where a feature fired. */
export interface FeatureHistogram {
  /**
   * Upper end of the range; bins are equal-width over [0, max], bin i covering
   * [i·max/n, (i+1)·max/n) (the last bin includes `max`). 0 for a dead feature.
   */
  max: number;
  /** Rows per bin; they sum to `firing`. */
  counts: number[];
}

/** Everything the report says about one SAE latent. */
export interface FeatureEntry {
  /** Latent index, 0 ≤ index < d_sae; `features[i].index === i`. */
  index: number;
  /** Human label from `features.yaml`. */
  label?: string;
  /** Free-form notes from `features.yaml`. */
  notes?: string;
  /** Tags from `features.yaml`. */
  tags?: string[];
  /** Fraction of corpus tokens (rows) where the feature is active: `firing / corpus.tokens`. */
  frequency: number;
  /** Rows where the feature is active. */
  firing: number;
  /** Mean activation over the rows where it fires (0 for a dead feature). */
  meanActivation: number;
  /** Largest activation seen (0 for a dead feature). */
  maxActivation: number;
  /** Never fired on the corpus. */
  dead: boolean;
  /** `frequency > denseThreshold`. */
  dense: boolean;
  histogram: FeatureHistogram;
  /** Top contexts, highest activation first (ties: corpus order). */
  examples: FeatureExample[];
}

/** The whole report (`features.json`). */
export interface FeatureReport {
  version: 1;
  sae: FeatureReportSae;
  /** Model id the activations came from. */
  model: string;
  corpus: {
    path: string;
    documents: number;
    /** Tokens = activation rows encoded. */
    tokens: number;
  };
  /** ISO 8601 time the report was made. */
  createdAt: string;
  /** Firing frequency above which a feature is flagged dense. */
  denseThreshold: number;
  examples: FeatureReportExampleSettings;
  summary: {
    /** Features that never fired. */
    dead: number;
    /** Features with frequency > denseThreshold. */
    dense: number;
    /** Mean active latents per token. */
    meanL0: number;
  };
  /** One entry per latent, in index order. */
  features: FeatureEntry[];
}

const count = z.number().int().nonnegative();
const finite = z.number().finite();
const nonNegative = finite.nonnegative();

const exampleSchema = z.object({
  document: z.string(),
  position: count,
  activation: nonNegative,
  tokens: z.array(z.string()),
  activations: z.array(nonNegative),
  marked: count,
});

const entrySchema = z.object({
  index: count,
  label: z.string().optional(),
  notes: z.string().optional(),
  tags: z.array(z.string()).optional(),
  frequency: nonNegative.max(1),
  firing: count,
  meanActivation: nonNegative,
  maxActivation: nonNegative,
  dead: z.boolean(),
  dense: z.boolean(),
  histogram: z.object({ max: nonNegative, counts: z.array(count).min(1) }),
  examples: z.array(exampleSchema),
});

const reportSchema = z.object({
  version: z.literal(FEATURE_REPORT_VERSION),
  sae: z.object({
    path: z.string(),
    hookName: z.string(),
    dIn: count.positive(),
    dSae: count.positive(),
    architecture: z.string(),
    k: count.positive().optional(),
  }),
  model: z.string(),
  corpus: z.object({ path: z.string(), documents: count, tokens: count }),
  createdAt: z.string(),
  denseThreshold: nonNegative.max(1),
  examples: z.object({ perFeature: count, perDocument: count, windowBefore: count, windowAfter: count }),
  summary: z.object({ dead: count, dense: count, meanL0: nonNegative }),
  features: z.array(entrySchema),
});

/**
 * The checks zod cannot express: one entry per latent in index order, and every example's window
 * consistent with itself, histogram and dead flag agreeing with `firing`. Returns the first problem, or null.
 */
function findInconsistency(report: FeatureReport): string | null {
  if (report.features.length !== report.sae.dSae) {
    return `'features' has ${report.features.length} entries, expected one per latent (d_sae = ${report.sae.dSae})`;
  }
  for (let i = 0; i < report.features.length; i++) {
    const entry = report.features[i];
    if (entry.index !== i) return `features.${i}.index is ${entry.index}, expected ${i} (entries are in index order)`;
    if (entry.dead !== (entry.firing === 0)) return `features.${i}.dead is ${entry.dead} but firing is ${entry.firing}`;
    const binned = entry.histogram.counts.reduce((sum, n) => sum + n, 0);
    if (binned !== entry.firing) return `features.${i}.histogram counts sum to ${binned}, expected firing = ${entry.firing}`;
    for (let e = 0; e < entry.examples.length; e++) {
      const example = entry.examples[e];
      if (example.activations.length !== example.tokens.length) {
        return `features.${i}.examples.${e}: ${example.activations.length} activations for ${example.tokens.length} tokens`;
      }
      if (example.marked >= example.tokens.length) {
        return `features.${i}.examples.${e}.marked is ${example.marked}, outside its ${example.tokens.length}-token window`;
      }
    }
  }
  return null;
}

/**
 * Reads and validates a report written by `writeFeatureReport`. Throws SAEGATE_ERR_FEATURE_REPORT
 * naming the file for: unreadable, not JSON, another `version`, a field of the wrong type (with its
 * path), or an inconsistent report (see `findInconsistency`).
 */
export function readFeatureReport(file: string): FeatureReport {
  const raw = readJsonFile(file, 'SAEGATE_ERR_FEATURE_REPORT');
  if (typeof raw === 'object' && raw !== null && 'version' in raw && raw.version !== FEATURE_REPORT_VERSION) {
    throw err('SAEGATE_ERR_FEATURE_REPORT', file, `version ${JSON.stringify(raw.version)} is not supported (this saegate reads version ${FEATURE_REPORT_VERSION})`);
  }
  const parsed = reportSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const at = issue.path.length > 0 ? `field '${issue.path.join('.')}'` : 'top level';
    throw err('SAEGATE_ERR_FEATURE_REPORT', file, `${at}: ${issue.message}`);
  }
  const report: FeatureReport = parsed.data;
  const inconsistency = findInconsistency(report);
  if (inconsistency !== null) throw err('SAEGATE_ERR_FEATURE_REPORT', file, inconsistency);
  return report;
}

/**
 * Writes `report` as JSON: the header fields on the first line, then one feature per line, so a
 * 16k-latent report greps and diffs by feature. Written to a temporary file beside the target and
 * renamed, so a reader never sees half a report. Throws SAEGATE_ERR_FEATURE_REPORT when the file
 * cannot be written.
 */
export function writeFeatureReport(file: string, report: FeatureReport): void {
  // `features` is the last key of the interface; keep it last so the header line reads first.
  const { features, ...header } = report;
  writeTextAtomically(file, jsonWithArrayLines({ ...header, features }, 'features'), 'SAEGATE_ERR_FEATURE_REPORT');
}
