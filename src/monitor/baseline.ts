/**
 * Drift baselines: what "normal traffic" looked like for one SAE at one hook, stored as per-document
 * sufficient statistics so the monitor can bootstrap its null distributions from them
 * (calibration.ts). One JSON file, `version: 1`, documented field by field in docs/monitor.md.
 *
 * Reading a baseline validates it fully (zod, then cross-field checks), so the reference and the
 * calibrator can index without guarding. `checkCompatible` then refuses a baseline recorded for
 * another model, SAE, hook, width or binning.
 */
import { z } from 'zod';
import { err } from '../common/errors.js';
import { jsonWithArrayLines, readJsonFile, writeTextAtomically } from '../common/json-file.js';
import { sameEdges } from './histogram.js';

/** The baseline format version this code writes and reads. */
export const BASELINE_VERSION = 1;

/** Where a baseline's numbers came from. */
export interface BaselineProvenance {
  /** Model id the activations came from. */
  model: string;
  sae: {
    /** SAE id (directory name or registry id). */
    id: string;
    /** Content hash of the SAE weights (e.g. `sha256:…`); compared verbatim. */
    hash: string;
  };
  /** TransformerLens hook point, e.g. `blocks.6.hook_resid_post`. */
  hook: string;
  /** SAE width. */
  dSae: number;
  /** Tokens (rows) over all documents. */
  tokens: number;
  /** Documents recorded. */
  documents: number;
  /** ISO 8601 time the baseline was recorded. */
  createdAt: string;
  /** saegate version that recorded it. */
  saegateVersion: string;
}

/** Bin edges the histograms use; see histogram.ts. */
export interface BaselineBins {
  l0: number[];
  fvu: number[];
  /** Present when documents carry projection histograms. */
  projection?: number[];
}

/** One document's sufficient statistics. */
export interface BaselineDocument {
  /** Tokens (rows) of the document; > 0. */
  tokens: number;
  /** Features that fired in the document, strictly increasing, each < d_sae. */
  features: number[];
  /** Rows where each of `features` fired (same length; 1 ≤ count ≤ tokens). */
  counts: number[];
  /** Rows per L0 bin (`bins.l0.length + 1` entries, summing to `tokens`). */
  l0: number[];
  /** Rows per FVU bin (`bins.fvu.length + 1` entries, summing to `tokens`). */
  fvu: number[];
  /** Sum of the rows' FVU (for mean FVU). */
  fvuSum: number;
  /** Rows per projection bin, when `bins.projection` is set. */
  projection?: number[];
}

/** A whole baseline file. */
export interface Baseline {
  version: 1;
  provenance: BaselineProvenance;
  bins: BaselineBins;
  documents: BaselineDocument[];
}

const count = z.number().int().nonnegative();
const finite = z.number().finite();

const baselineSchema = z.object({
  version: z.literal(BASELINE_VERSION),
  provenance: z.object({
    model: z.string(),
    sae: z.object({ id: z.string(), hash: z.string() }),
    hook: z.string(),
    dSae: count.positive(),
    tokens: count,
    documents: count,
    createdAt: z.string(),
    saegateVersion: z.string(),
  }),
  bins: z.object({ l0: z.array(finite).min(1), fvu: z.array(finite).min(1), projection: z.array(finite).min(1).optional() }),
  documents: z.array(
    z.object({
      tokens: count.positive(),
      features: z.array(count),
      counts: z.array(count.positive()),
      l0: z.array(count),
      fvu: z.array(count),
      fvuSum: finite.nonnegative(),
      projection: z.array(count).optional(),
    }),
  ),
});

function increasing(values: readonly number[]): boolean {
  for (let i = 1; i < values.length; i++) if (values[i] <= values[i - 1]) return false;
  return true;
}

function sum(values: readonly number[]): number {
  let total = 0;
  for (const v of values) total += v;
  return total;
}

/** The checks zod cannot express. Returns the first problem (with its path), or null. */
function findInconsistency(baseline: Baseline): string | null {
  const { provenance, bins, documents } = baseline;
  for (const [name, edges] of [['l0', bins.l0], ['fvu', bins.fvu], ['projection', bins.projection ?? [0]]] as const) {
    if (!increasing(edges)) return `bins.${name} is not strictly increasing`;
  }
  let tokens = 0;
  for (let d = 0; d < documents.length; d++) {
    const doc = documents[d];
    const at = `documents.${d}`;
    tokens += doc.tokens;
    if (doc.counts.length !== doc.features.length) return `${at}: ${doc.counts.length} counts for ${doc.features.length} features`;
    if (!increasing(doc.features)) return `${at}.features is not strictly increasing`;
    const last = doc.features[doc.features.length - 1];
    if (last !== undefined && last >= provenance.dSae) return `${at}.features: feature ${last} is outside d_sae = ${provenance.dSae}`;
    for (let i = 0; i < doc.counts.length; i++) {
      if (doc.counts[i] > doc.tokens) return `${at}.counts.${i} is ${doc.counts[i]}, more than the document's ${doc.tokens} tokens`;
    }
    for (const name of ['l0', 'fvu', 'projection'] as const) {
      const histogram = doc[name];
      const edges = bins[name];
      if (edges === undefined) {
        if (histogram !== undefined) return `${at}.projection is present but bins.projection is not`;
        continue;
      }
      if (histogram === undefined) return `${at}.${name} is missing (bins.${name} is set)`;
      if (histogram.length !== edges.length + 1) return `${at}.${name} has ${histogram.length} bins, expected ${edges.length + 1}`;
      if (sum(histogram) !== doc.tokens) return `${at}.${name} counts sum to ${sum(histogram)}, expected the document's ${doc.tokens} tokens`;
    }
  }
  if (provenance.documents !== documents.length) return `provenance.documents is ${provenance.documents} but the file has ${documents.length} documents`;
  if (provenance.tokens !== tokens) return `provenance.tokens is ${provenance.tokens} but the documents hold ${tokens}`;
  return null;
}

/**
 * Validates an already-parsed baseline. `source` names it in errors (the file path). Throws
 * SAEGATE_ERR_BASELINE_FILE for another version, a field of the wrong type (with its path) or an
 * inconsistency (see `findInconsistency`).
 */
export function parseBaseline(raw: unknown, source: string): Baseline {
  if (typeof raw === 'object' && raw !== null && 'version' in raw && raw.version !== BASELINE_VERSION) {
    throw err('SAEGATE_ERR_BASELINE_FILE', source, `version ${JSON.stringify(raw.version)} is not supported (this saegate reads version ${BASELINE_VERSION})`);
  }
  const parsed = baselineSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const at = issue.path.length > 0 ? `field '${issue.path.join('.')}'` : 'top level';
    throw err('SAEGATE_ERR_BASELINE_FILE', source, `${at}: ${issue.message}`);
  }
  const baseline: Baseline = parsed.data;
  const inconsistency = findInconsistency(baseline);
  if (inconsistency !== null) throw err('SAEGATE_ERR_BASELINE_FILE', source, inconsistency);
  return baseline;
}

/** Reads and validates a baseline file; SAEGATE_ERR_BASELINE_FILE naming the file on any problem. */
export function readBaseline(file: string): Baseline {
  return parseBaseline(readJsonFile(file, 'SAEGATE_ERR_BASELINE_FILE'), file);
}

/**
 * Writes `baseline` as JSON, one document per line after a header line, through a temporary file
 * renamed into place (a reader never sees half a file). SAEGATE_ERR_BASELINE_FILE if it cannot be written.
 */
export function writeBaseline(file: string, baseline: Baseline): void {
  const { documents, ...header } = baseline;
  writeTextAtomically(file, jsonWithArrayLines({ ...header, documents }, 'documents'), 'SAEGATE_ERR_BASELINE_FILE');
}

/** What the monitored SAE is; a baseline must match it to be used. */
export interface ExpectedBaseline {
  model: string;
  /** SAE id; not compared when absent. */
  saeId?: string;
  /** SAE weights hash; not compared when absent. */
  saeHash?: string;
  hook: string;
  dSae: number;
  /** The monitor's bin edges; each compared when given. */
  l0Edges?: ArrayLike<number>;
  fvuEdges?: ArrayLike<number>;
  projectionEdges?: ArrayLike<number>;
}

/**
 * Throws SAEGATE_ERR_BASELINE_MISMATCH naming `source` and every field where `baseline` differs from
 * `expected` (expected vs recorded); returns nothing when they match.
 */
export function checkCompatible(baseline: Baseline, expected: ExpectedBaseline, source: string): void {
  const p = baseline.provenance;
  const differences: string[] = [];
  const compare = (field: string, want: unknown, got: unknown): void => {
    if (want !== got) differences.push(`${field}: expected ${JSON.stringify(want)}, baseline has ${JSON.stringify(got)}`);
  };
  compare('model', expected.model, p.model);
  if (expected.saeId !== undefined) compare('sae.id', expected.saeId, p.sae.id);
  if (expected.saeHash !== undefined) compare('sae.hash', expected.saeHash, p.sae.hash);
  compare('hook', expected.hook, p.hook);
  compare('dSae', expected.dSae, p.dSae);
  const edges = (field: string, want: ArrayLike<number> | undefined, got: readonly number[] | undefined): void => {
    if (want === undefined) return;
    if (got === undefined || !sameEdges(want, got)) {
      differences.push(`${field}: expected [${Array.from(want).join(', ')}], baseline has ${got === undefined ? 'none' : `[${got.join(', ')}]`}`);
    }
  };
  edges('bins.l0', expected.l0Edges, baseline.bins.l0);
  edges('bins.fvu', expected.fvuEdges, baseline.bins.fvu);
  edges('bins.projection', expected.projectionEdges, baseline.bins.projection);
  if (differences.length > 0) throw err('SAEGATE_ERR_BASELINE_MISMATCH', source, differences.join('; '));
}
