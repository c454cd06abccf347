/**
 * `vectors build`: runs a positive and a negative prompt set through a tap-speaking model server,
 * summarises each prompt's activations at every requested hook into one row (the position rule),
 * and returns per hook the raw direction (direction.ts) and how well it separates the sets.
 *
 * The written direction uses every prompt. The separation report is honest about overfitting: a
 * direction is fitted again on the prompts outside a seeded held-out fraction of each set and
 * evaluated on the held-out prompts only (on the training prompts, and said so, when a set is too
 * small to hold any out). The split and the PCA start are drawn from `seed`, so the same
 * activations and seed give the same bytes.
 *
 * The activations come through `collect`, which the caller wires to an ActivationCollector (one
 * collection per hook: a collector gathers one hook point per pass). Both sets run in one pass per
 * hook so the model server batches across them.
 */
import { err } from '../../common/errors.js';
import { SeededRandom } from '../../common/random.js';
import type { CollectedDocument, CollectInputDocument } from '../collect.js';
import type { CorpusDocument } from '../corpus/read.js';
import { buildDirection, holdOut, pick, separation, summaryRow, type DirectionMethod, type PositionRule, type RowSet, type Separation } from './direction.js';

/** One prompt file, read with the corpus reader. */
export interface PromptSet {
  /** The file, named in errors and reports. */
  source: string;
  documents: readonly CorpusDocument[];
}

export type PromptSetName = 'positive' | 'negative';

/** Progress after every collected prompt. */
export interface BuildProgress {
  hook: string;
  /** 0-based index of `hook` in the hooks, and how many there are. */
  hookIndex: number;
  hooks: number;
  /** Prompts collected at this hook so far, out of `total` (both sets). */
  done: number;
  total: number;
}

export interface BuildVectorsOptions {
  /** Hook points to build a direction at; checked against the model by the caller. */
  hooks: readonly string[];
  positive: PromptSet;
  negative: PromptSet;
  /** Default 'mean-diff'. */
  method?: DirectionMethod;
  /** Default 'last'. */
  position?: PositionRule;
  /** Fraction of each set held out for the separation report, in [0, 0.9]. Default 0.25. */
  heldOut?: number;
  /** Seed of the held-out split and the PCA pairing and start. Default 0. */
  seed?: number;
  /** Runs `documents` through the model and yields each one's prompt rows at `hook` (skipping prompts that do not fit the context). */
  collect(hook: string, documents: CollectInputDocument[]): AsyncIterable<CollectedDocument>;
  onProgress?(progress: BuildProgress): void;
}

/** What `buildVectors` found at one hook. */
export interface HookBuild {
  hook: string;
  /** The raw direction written to the file (all prompts). */
  direction: Float32Array;
  /** Its L2 norm. */
  norm: number;
  /** Projections of the evaluation prompts on the direction fitted without them. */
  separation: Separation;
  /** 'held-out' normally; 'training' when a set was too small to hold prompts out. */
  evaluatedOn: 'held-out' | 'training';
}

export interface BuildVectorsResult {
  hooks: HookBuild[];
  dModel: number;
  counts: Record<PromptSetName, number>;
  heldOut: Record<PromptSetName, number>;
  method: DirectionMethod;
  position: PositionRule;
}

/** How many too-long prompt ids an error names before "…". */
const NAMED_PROMPTS = 5;

/** Collects both sets at one hook into summary rows; throws SAEGATE_ERR_PROMPT_TOO_LONG for prompts the server skipped. */
async function collectHook(options: BuildVectorsOptions, hook: string, hookIndex: number, position: PositionRule): Promise<Record<PromptSetName, RowSet>> {
  const { positive, negative } = options;
  const inputs: CollectInputDocument[] = [
    ...positive.documents.map((d) => ({ id: `positive:${d.id}`, text: d.text })),
    ...negative.documents.map((d) => ({ id: `negative:${d.id}`, text: d.text })),
  ];
  const total = inputs.length;
  const seen = new Uint8Array(total);
  let sets: Record<PromptSetName, RowSet> | null = null;
  let done = 0;
  for await (const doc of options.collect(hook, inputs)) {
    const dModel = doc.dModel;
    sets ??= {
      positive: { rows: new Float64Array(positive.documents.length * dModel), count: positive.documents.length, dModel },
      negative: { rows: new Float64Array(negative.documents.length * dModel), count: negative.documents.length, dModel },
    };
    const isPositive = doc.index < positive.documents.length;
    const set = isPositive ? sets.positive : sets.negative;
    const row = isPositive ? doc.index : doc.index - positive.documents.length;
    summaryRow(doc.rows, doc.tokenCount, dModel, position, set.rows.subarray(row * dModel, (row + 1) * dModel));
    seen[doc.index] = 1;
    options.onProgress?.({ hook, hookIndex, hooks: options.hooks.length, done: ++done, total });
  }
  // The collector skips prompts the server refuses as too long for its context (and yields the rest).
  for (const [name, set, offset] of [
    ['positive', positive, 0],
    ['negative', negative, positive.documents.length],
  ] as const) {
    const missing = set.documents.filter((_, i) => seen[offset + i] === 0).map((d) => d.id);
    if (missing.length > 0) {
      const named = missing.slice(0, NAMED_PROMPTS).map((id) => `'${id}'`).join(', ') + (missing.length > NAMED_PROMPTS ? ', …' : '');
      throw err('SAEGATE_ERR_PROMPT_TOO_LONG', set.source, `${missing.length} ${name} prompt(s) do not fit the model's context: ${named} (ids are 0-based positions in a text file)`);
    }
  }
  return sets!;
}

/**
 * Builds one direction per hook. Throws SAEGATE_ERR_PROMPT_SET_EMPTY for an empty set,
 * SAEGATE_ERR_PROMPT_TOO_LONG for prompts over the model's context, SAEGATE_ERR_CONFIG for bad
 * options, and whatever `collect` throws.
 */
export async function buildVectors(options: BuildVectorsOptions): Promise<BuildVectorsResult> {
  const method = options.method ?? 'mean-diff';
  const position = options.position ?? 'last';
  const heldOutFraction = options.heldOut ?? 0.25;
  const seed = options.seed ?? 0;
  if (!(heldOutFraction >= 0 && heldOutFraction <= 0.9)) throw err('SAEGATE_ERR_CONFIG', 'heldOut', `a fraction in [0, 0.9], got ${heldOutFraction}`);
  if (options.hooks.length === 0) throw err('SAEGATE_ERR_CONFIG', 'hooks', 'at least one hook point');
  for (const set of [options.positive, options.negative]) {
    if (set.documents.length === 0) throw err('SAEGATE_ERR_PROMPT_SET_EMPTY', set.source, 'expected text (prompts separated by blank lines) or JSONL (docs/corpus.md)');
  }
  const hooks: HookBuild[] = [];
  let dModel = 0;
  let heldOut: Record<PromptSetName, number> = { positive: 0, negative: 0 };
  for (const [hookIndex, hook] of options.hooks.entries()) {
    const sets = await collectHook(options, hook, hookIndex, position);
    dModel = sets.positive.dModel;
    const direction = buildDirection(sets.positive, sets.negative, method, seed);
    // The same split at every hook: a fresh generator from the seed each time.
    const random = new SeededRandom(seed);
    const pos = holdOut(sets.positive.count, heldOutFraction, random);
    // Sets of one size share the split, so PCA's pairs (prompt i with prompt i) stay pairs.
    const neg = sets.negative.count === sets.positive.count ? pos : holdOut(sets.negative.count, heldOutFraction, random);
    heldOut = { positive: pos.heldOut.length, negative: neg.heldOut.length };
    const canHoldOut = pos.heldOut.length > 0 && neg.heldOut.length > 0;
    const report = canHoldOut
      ? separation(pick(sets.positive, pos.heldOut), pick(sets.negative, neg.heldOut), buildDirection(pick(sets.positive, pos.train), pick(sets.negative, neg.train), method, seed))
      : separation(sets.positive, sets.negative, direction);
    if (!canHoldOut) heldOut = { positive: 0, negative: 0 };
    const values = Float32Array.from(direction);
    let sumSquares = 0;
    for (const v of values) sumSquares += v * v;
    hooks.push({ hook, direction: values, norm: Math.sqrt(sumSquares), separation: report, evaluatedOn: canHoldOut ? 'held-out' : 'training' });
  }
  return {
    hooks,
    dModel,
    counts: { positive: options.positive.documents.length, negative: options.negative.documents.length },
    heldOut,
    method,
    position,
  };
}
