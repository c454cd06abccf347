/**
 * The stories260K drift study (issue 10), shared by the benchmark that prints its numbers
 * (test/bench/drift-study.ts, full size) and the CI-sized integration test
 * (test/integration/drift-stories.test.ts).
 *
 * 1. Corpora: stories text sampled from stories260K (split into SAE-training, baseline and held-out
 *    documents), text sampled from aidreams260K (another model trained on other text), and
 *    random-token text (uniform random vocabulary pieces of stories260K's tokenizer).
 * 2. A TopK SAE trained in-process on stories260K's activations at `hook` over the training split.
 * 3. A baseline recorded with the same code `saegate baseline record` runs (recordBaseline), on
 *    the baseline split; a DriftCalibrator over it at `alpha`.
 * 4. Cases, each recorded the same way, one baseline document per prompt: held-out stories (the
 *    null), random tokens, aidreams text, and the held-out stories prompts again with a random-
 *    direction steering vector added at `steerHook` (at or before `hook`) through the reference
 *    server's `steering` field, at each of `steerScales` × the mean row norm at `hook`.
 * 5. Per case, `windows` windows: documents drawn at random without replacement (within a window)
 *    until the window holds `windowTokens` tokens, summed and judged by `assessWindow`. Per score:
 *    p5/p50/p95 of the scores, the calibrated threshold at that size, the fraction of windows above.
 *
 * 6. The null again, the way α is stated (`nullResplits`): the baseline and held-out documents are
 *    pooled and split at random into a baseline and a held-out set of the same sizes, again and
 *    again; each split gets its own calibrator (its own seed) and its held-out documents are cut
 *    into *disjoint* windows, so windows within a split share no document. The pooled rate is the
 *    false-alarm rate over baselines, calibration draws and windows — what a threshold's α
 *    promises — and the spread of the per-split rates is how far one deployment's rate may lie
 *    from it (docs/monitor.md, "How exact α is").
 *
 * Every document is a whole prompt, as in the calibration (which draws whole baseline documents),
 * so windows and their null agree on within-document correlation.
 */
import { SeededRandom, shuffledIndices } from '../../src/common/random.js';
import { recordBaseline } from '../../src/lab/baseline/record.js';
import type { CollectInputDocument } from '../../src/lab/collect.js';
import { sampleCorpus } from '../../src/lab/corpus/sample.js';
import { wilson, type Rate } from '../../src/lab/eval/stats.js';
import { defaultTrainConfig, toSaeWeights, trainTopKSae } from '../../src/lab/train/trainer.js';
import { LocalEngine } from '../../src/model/engine.js';
import { loadModel } from '../../src/model/load.js';
import path from 'node:path';
import { writeBaseline, type Baseline, type BaselineDocument } from '../../src/monitor/baseline.js';
import { DriftCalibrator } from '../../src/monitor/calibration.js';
import { assessWindow } from '../../src/monitor/drift.js';
import { BaselineReference, type DistributionSums } from '../../src/monitor/reference.js';
import { saeWeightsHash } from '../../src/monitor/sae-hash.js';
import { SaePool } from '../../src/sae/pool.js';
import type { SaeWeights } from '../../src/sae/types.js';
import { openModelRun, type ModelRun } from '../../src/cli/model-run.js';
import { aidreams260K, stories260K } from './fixtures.js';

export interface DriftStudyOptions {
  /** SAE hook. */
  hook: string;
  /** Steering hook (at or before `hook`). */
  steerHook: string;
  /** Steering vector norms, as multiples of the mean row norm at `hook`. */
  steerScales: readonly number[];
  trainDocuments: number;
  baselineDocuments: number;
  heldOutDocuments: number;
  /** Documents per shifted case. */
  shiftedDocuments: number;
  /** Most tokens sampled per document (the prompt lengths). */
  documentTokens: number;
  windowTokens: number;
  windows: number;
  /**
   * Extra calibrator seeds the held-out case is judged under again (fresh thresholds, fresh
   * windows), pooled into `DriftStudyResult.nullPooled`: one seed's false-alarm count over
   * overlapping windows is noisy. Default none.
   */
  nullRepeats?: number;
  /** Random re-splits of baseline + held-out documents judged with disjoint windows (step 6). Default none. */
  nullResplits?: number;
  alpha: number;
  sae: { dSae: number; k: number; steps: number; batch: number; lr: number };
  seed: number;
  log?: (line: string) => void;
  /** When set, the baseline and every case's recorded documents are written here (baseline.json, case-<i>.json). */
  dumpDir?: string;
}

export const SCORE_NAMES = ['jsd', 'l0Psi', 'fvuPsi', 'meanFvu'] as const;
export type ScoreName = (typeof SCORE_NAMES)[number];

export interface ScoreSummary {
  p5: number;
  p50: number;
  p95: number;
  /** The calibrated threshold at the windows' token bucket (the median window's, when they differ). */
  threshold: number;
  /** Windows above the threshold. */
  above: number;
}

export interface CaseResult {
  name: string;
  documents: number;
  tokens: number;
  windows: number;
  /** Mean tokens per window. */
  windowTokens: number;
  scores: Record<ScoreName, ScoreSummary>;
  /** Windows where any of the four scores is above its threshold. */
  anyAbove: number;
  /** Windows where the family-wise `any` score is above its threshold (α over all scores together). */
  familyAbove: number;
}

/** Alarms over the windows of many splits, pooled, with the per-split rates' spread. */
export interface ResplitResult {
  splits: number;
  windows: number;
  /** Pooled, with 95% Wilson intervals (which treat the windows as independent). */
  above: Record<ScoreName | 'union' | 'family', Rate>;
  /**
   * Per statistic, the per-split rates' smallest, median and largest value, and a 95% interval of
   * their mean (± 1.96 standard errors over splits), which allows for the windows of one split
   * sharing its baseline and thresholds.
   */
  perSplit: Record<ScoreName | 'union' | 'family', { min: number; p50: number; max: number; low: number; high: number }>;
}

export interface DriftStudyResult {
  sae: { dIn: number; dSae: number; k: number; hash: string; trainRows: number; trainFvu: number };
  baseline: { documents: number; tokens: number; meanFvu: number };
  /** Mean row norm at the SAE's hook (the unit of the steering scales). */
  rowNorm: number;
  cases: CaseResult[];
  /** The held-out case over the study's calibrator and `nullRepeats` more: windows and alarms, pooled. */
  nullPooled: { runs: number; windows: number; above: Record<ScoreName, number>; anyAbove: number; familyAbove: number };
  /** Step 6; null without `nullResplits`. */
  nullResplit: ResplitResult | null;
  seconds: number;
}

async function sampleTexts(model: { model: string; tokenizer: string }, documents: number, maxTokens: number, seed: number): Promise<string[]> {
  const loaded = await loadModel({ model: model.model, tokenizer: model.tokenizer });
  const tokenizer = loaded.tokenizer!;
  const engine = await LocalEngine.create({ weights: loaded.weights, maxBatch: 32, samplableVocab: tokenizer.vocabSize, intraOpThreads: 1 });
  const texts: string[] = new Array<string>(documents).fill('');
  try {
    await sampleCorpus({
      engine,
      tokenizer,
      promptTokens: tokenizer.encode('', { addBos: true }),
      documents,
      seed,
      maxTokens,
      temperature: 1,
      topP: 1,
      concurrency: 32,
      onDocument: (doc) => {
        texts[doc.id] = doc.text;
      },
    });
  } finally {
    await engine.close();
  }
  return texts.filter((t) => t.trim().length > 0);
}

/** Text made of uniformly random vocabulary pieces (ids above BOS/EOS) of stories260K's tokenizer. */
async function randomTokenTexts(documents: number, tokens: number, seed: number): Promise<string[]> {
  const loaded = await loadModel({ model: stories260K.model, tokenizer: stories260K.tokenizer });
  const tokenizer = loaded.tokenizer!;
  const random = new SeededRandom(seed);
  return Array.from({ length: documents }, () => tokenizer.decode(Array.from({ length: tokens }, () => 3 + Math.floor(random.next() * (tokenizer.vocabSize - 3)))));
}

function asDocuments(texts: readonly string[], prefix: string): CollectInputDocument[] {
  return texts.map((text, i) => ({ id: `${prefix}-${i}`, text }));
}

async function trainSae(run: ModelRun, documents: CollectInputDocument[], options: DriftStudyOptions): Promise<{ sae: SaeWeights; rows: number; rowNorm: number; fvu: number }> {
  const dIn = run.server.dModel;
  const chunks: Float32Array[] = [];
  let rows = 0;
  for await (const doc of run.collector.collect(documents, { upstream: run.upstream })) {
    chunks.push(doc.rows.subarray(0, doc.tokenCount * dIn));
    rows += doc.tokenCount;
  }
  const data = new Float32Array(rows * dIn);
  let at = 0;
  for (const c of chunks) {
    data.set(c, at);
    at += c.length;
  }
  let normSum = 0;
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let i = 0; i < dIn; i++) s += data[r * dIn + i] ** 2;
    normSum += Math.sqrt(s);
  }
  const config = defaultTrainConfig({ dIn, dSae: options.sae.dSae, k: options.sae.k, batchRows: options.sae.batch, steps: options.sae.steps, lr: options.sae.lr, seed: options.seed, warmupSteps: Math.min(50, Math.floor(options.sae.steps / 5)) });
  const result = await trainTopKSae({ rows: data, count: rows, config, run: { intraOpThreads: 1 } });
  const sae = toSaeWeights(result.params, config, { hookName: options.hook, modelName: run.server.modelId, source: 'drift-study' });
  return { sae, rows, rowNorm: normSum / rows, fvu: result.history[result.history.length - 1]?.fvu ?? NaN };
}

function quantile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return NaN;
  const at = Math.min(sorted.length - 1, Math.max(0, Math.round(q * (sorted.length - 1))));
  return sorted[at];
}

/** Sums of `docs[picked…]` on the baseline's bins. */
function windowSums(docs: readonly BaselineDocument[], picked: readonly number[], dSae: number, l0Bins: number, fvuBins: number): DistributionSums {
  const firingCounts = new Float64Array(dSae);
  const l0Histogram = new Float64Array(l0Bins);
  const fvuHistogram = new Float64Array(fvuBins);
  let tokens = 0;
  let fvuSum = 0;
  for (const i of picked) {
    const doc = docs[i];
    tokens += doc.tokens;
    fvuSum += doc.fvuSum;
    for (let j = 0; j < doc.features.length; j++) firingCounts[doc.features[j]] += doc.counts[j];
    for (let b = 0; b < l0Bins; b++) l0Histogram[b] += doc.l0[b];
    for (let b = 0; b < fvuBins; b++) fvuHistogram[b] += doc.fvu[b];
  }
  return { tokens, firingCounts, fvuSum, l0Histogram, fvuHistogram, projectionHistogram: null };
}

/** Judges `windows` random windows of ≥ `windowTokens` tokens drawn from `recorded`'s documents. */
export function judgeWindows(name: string, recorded: Baseline, calibrator: DriftCalibrator, windowTokens: number, windows: number, seed: number): CaseResult {
  const docs = recorded.documents;
  const { dSae } = calibrator.reference;
  const l0Bins = calibrator.reference.totals.l0Histogram.length;
  const fvuBins = calibrator.reference.totals.fvuHistogram.length;
  const random = new SeededRandom(seed);
  const scores = Object.fromEntries(SCORE_NAMES.map((s) => [s, new Float64Array(windows)])) as Record<ScoreName, Float64Array>;
  const above = Object.fromEntries(SCORE_NAMES.map((s) => [s, 0])) as Record<ScoreName, number>;
  const thresholds: Record<ScoreName, number>[] = [];
  let anyAbove = 0;
  let familyAbove = 0;
  let tokenSum = 0;
  for (let w = 0; w < windows; w++) {
    const order = shuffledIndices(docs.length, random);
    const picked: number[] = [];
    let tokens = 0;
    for (let i = 0; i < order.length && tokens < windowTokens; i++) {
      picked.push(order[i]);
      tokens += docs[order[i]].tokens;
    }
    const assessment = assessWindow(windowSums(docs, picked, dSae, l0Bins, fvuBins), calibrator);
    tokenSum += tokens;
    let any = false;
    for (const s of SCORE_NAMES) {
      scores[s][w] = assessment.scores[s];
      if (assessment.exceeded[s]) {
        above[s]++;
        any = true;
      }
    }
    if (any) anyAbove++;
    if (assessment.exceeded.any) familyAbove++;
    thresholds.push({ jsd: assessment.thresholds.jsd, l0Psi: assessment.thresholds.l0Psi, fvuPsi: assessment.thresholds.fvuPsi, meanFvu: assessment.thresholds.meanFvu });
  }
  const summary = {} as Record<ScoreName, ScoreSummary>;
  for (const s of SCORE_NAMES) {
    const sorted = Float64Array.from(scores[s]).sort();
    const t = Float64Array.from(thresholds.map((x) => x[s])).sort();
    summary[s] = { p5: quantile(sorted, 0.05), p50: quantile(sorted, 0.5), p95: quantile(sorted, 0.95), threshold: quantile(t, 0.5), above: above[s] };
  }
  const tokens = docs.reduce((sum, d) => sum + d.tokens, 0);
  return { name, documents: docs.length, tokens, windows, windowTokens: tokenSum / windows, scores: summary, anyAbove, familyAbove };
}

/**
 * Step 6: `splits` random re-splits of `pool` into a baseline of `baselineDocuments` and the rest,
 * each judged by a fresh calibrator on disjoint windows of ≥ `windowTokens` tokens cut from the
 * rest in random order (a last, short window is dropped).
 */
export function judgeResplits(base: Baseline, pool: readonly BaselineDocument[], options: { baselineDocuments: number; windowTokens: number; alpha: number; splits: number; seed: number }): ResplitResult {
  const keys = [...SCORE_NAMES, 'union', 'family'] as const;
  const hits = Object.fromEntries(keys.map((k) => [k, 0])) as Record<(typeof keys)[number], number>;
  const rates = Object.fromEntries(keys.map((k) => [k, [] as number[]])) as Record<(typeof keys)[number], number[]>;
  const random = new SeededRandom(options.seed);
  let windows = 0;
  for (let split = 0; split < options.splits; split++) {
    const order = shuffledIndices(pool.length, random);
    const baselineDocs = Array.from(order.subarray(0, options.baselineDocuments), (i) => pool[i]);
    const heldOut = Array.from(order.subarray(options.baselineDocuments), (i) => pool[i]);
    const reference = new BaselineReference({ ...base, documents: baselineDocs, provenance: { ...base.provenance, documents: baselineDocs.length, tokens: baselineDocs.reduce((sum, d) => sum + d.tokens, 0) } });
    const calibrator = new DriftCalibrator(reference, { alpha: options.alpha, seed: options.seed + 1 + split });
    const l0Bins = reference.totals.l0Histogram.length;
    const fvuBins = reference.totals.fvuHistogram.length;
    const splitHits = Object.fromEntries(keys.map((k) => [k, 0])) as Record<(typeof keys)[number], number>;
    let splitWindows = 0;
    let picked: number[] = [];
    let tokens = 0;
    for (let i = 0; i < heldOut.length; i++) {
      picked.push(i);
      tokens += heldOut[i].tokens;
      if (tokens < options.windowTokens) continue;
      const assessment = assessWindow(windowSums(heldOut, picked, reference.dSae, l0Bins, fvuBins), calibrator);
      splitWindows++;
      let union = false;
      for (const s of SCORE_NAMES) {
        if (assessment.exceeded[s]) {
          splitHits[s]++;
          union = true;
        }
      }
      if (union) splitHits.union++;
      if (assessment.exceeded.any) splitHits.family++;
      picked = [];
      tokens = 0;
    }
    windows += splitWindows;
    for (const k of keys) {
      hits[k] += splitHits[k];
      rates[k].push(splitHits[k] / splitWindows);
    }
  }
  const spread = (values: number[]): ResplitResult['perSplit']['jsd'] => {
    const sorted = Float64Array.from(values).sort();
    const n = values.length;
    const mean = values.reduce((a, x) => a + x, 0) / n;
    const se = n > 1 ? Math.sqrt(values.reduce((a, x) => a + (x - mean) ** 2, 0) / (n - 1) / n) : NaN;
    return { min: sorted[0], p50: quantile(sorted, 0.5), max: sorted[n - 1], low: Math.max(0, mean - 1.96 * se), high: mean + 1.96 * se };
  };
  return {
    splits: options.splits,
    windows,
    above: Object.fromEntries(keys.map((k) => [k, wilson(hits[k], windows)])) as ResplitResult['above'],
    perSplit: Object.fromEntries(keys.map((k) => [k, spread(rates[k])])) as ResplitResult['perSplit'],
  };
}

/** A seeded random direction of norm `norm`. */
function randomDirection(dIn: number, norm: number, seed: number): number[] {
  const random = new SeededRandom(seed);
  const v = Array.from({ length: dIn }, () => random.next() - 0.5);
  const length = Math.sqrt(v.reduce((s, x) => s + x * x, 0));
  return v.map((x) => (x * norm) / length);
}

export async function runDriftStudy(options: DriftStudyOptions): Promise<DriftStudyResult> {
  const started = performance.now();
  const log = options.log ?? (() => {});
  const storiesCount = options.trainDocuments + options.baselineDocuments + options.heldOutDocuments;
  log(`sampling ${storiesCount} stories260K documents, ${options.shiftedDocuments} aidreams260K documents, ${options.shiftedDocuments} random-token documents`);
  const stories = await sampleTexts(stories260K, storiesCount, options.documentTokens, options.seed);
  const aidreams = await sampleTexts(aidreams260K, options.shiftedDocuments, options.documentTokens, options.seed + 1);
  const randomTokens = await randomTokenTexts(options.shiftedDocuments, options.documentTokens, options.seed + 2);
  const order = shuffledIndices(stories.length, new SeededRandom(options.seed + 3));
  const split = (from: number, to: number, prefix: string): CollectInputDocument[] => asDocuments(Array.from(order.subarray(from, Math.min(to, stories.length)), (i) => stories[i]), prefix);
  const trainDocs = split(0, options.trainDocuments, 'train');
  const baselineDocs = split(options.trainDocuments, options.trainDocuments + options.baselineDocuments, 'baseline');
  const heldOutDocs = split(options.trainDocuments + options.baselineDocuments, storiesCount, 'held-out');

  const run = await openModelRun({ hook: options.hook, model: stories260K.model, tokenizer: stories260K.tokenizer, threads: 1, log });
  let pool: SaePool | null = null;
  try {
    log(`collecting ${trainDocs.length} documents at ${options.hook} and training a ${options.sae.dSae}-latent k=${options.sae.k} SAE for ${options.sae.steps} steps`);
    const trained = await trainSae(run, trainDocs, options);
    const { sae } = trained;
    pool = await SaePool.create({ sae, topK: options.sae.k });
    const hash = saeWeightsHash(sae);
    const identity = { model: run.server.modelId, sae: { id: 'drift-study', hash }, hook: options.hook, saegateVersion: 'study' };
    const record = async (documents: CollectInputDocument[], requestFields?: Record<string, unknown>): Promise<Baseline> =>
      (await recordBaseline({ collector: run.collector, upstream: run.upstream, pool: pool!, dIn: sae.config.dIn, dSae: sae.config.dSae, documents, identity, requestFields })).baseline;
    log(`recording the baseline on ${baselineDocs.length} documents`);
    const baseline = await record(baselineDocs);
    if (options.dumpDir !== undefined) writeBaseline(path.join(options.dumpDir, 'baseline.json'), baseline);
    const reference = new BaselineReference(baseline);
    const calibrator = new DriftCalibrator(reference, { alpha: options.alpha, seed: options.seed + 4 });
    const cases: CaseResult[] = [];
    const judge = (name: string, recorded: Baseline, windows: number, seed: number): void => {
      if (options.dumpDir !== undefined) writeBaseline(path.join(options.dumpDir, `case-${cases.length}.json`), recorded);
      const result = judgeWindows(name, recorded, calibrator, options.windowTokens, windows, seed);
      cases.push(result);
      log(`${name}: ${result.anyAbove}/${result.windows} windows above a threshold`);
    };
    log(`recording held-out and shifted cases`);
    const heldOut = await record(heldOutDocs);
    judge('held-out stories', heldOut, options.windows, options.seed + 10);
    const nullPooled = { runs: 1, windows: cases[0].windows, above: Object.fromEntries(SCORE_NAMES.map((s) => [s, cases[0].scores[s].above])) as Record<ScoreName, number>, anyAbove: cases[0].anyAbove, familyAbove: cases[0].familyAbove };
    for (let r = 1; r <= (options.nullRepeats ?? 0); r++) {
      const again = judgeWindows('held-out stories', heldOut, new DriftCalibrator(reference, { alpha: options.alpha, seed: options.seed + 100 + r }), options.windowTokens, options.windows, options.seed + 200 + r);
      nullPooled.runs++;
      nullPooled.windows += again.windows;
      nullPooled.anyAbove += again.anyAbove;
      nullPooled.familyAbove += again.familyAbove;
      for (const s of SCORE_NAMES) nullPooled.above[s] += again.scores[s].above;
    }
    const splits = options.nullResplits ?? 0;
    const nullResplit =
      splits > 0
        ? judgeResplits(baseline, [...baseline.documents, ...heldOut.documents], { baselineDocuments: baseline.documents.length, windowTokens: options.windowTokens, alpha: options.alpha, splits, seed: options.seed + 500 })
        : null;
    judge('random tokens', await record(asDocuments(randomTokens, 'random')), Math.min(options.windows, 100), options.seed + 11);
    judge('aidreams260K text', await record(asDocuments(aidreams, 'aidreams')), Math.min(options.windows, 100), options.seed + 12);
    const steerPrompts = heldOutDocs.slice(0, options.shiftedDocuments);
    for (const [i, scale] of options.steerScales.entries()) {
      const vector = randomDirection(sae.config.dIn, scale * trained.rowNorm, options.seed + 20);
      const steered = await record(steerPrompts.map((d) => ({ id: `${d.id}-steer${i}`, text: d.text })), { steering: [{ hook: options.steerHook, vector, positions: 'all' }] });
      judge(`steered ${scale}×‖x‖ at ${options.steerHook}`, steered, Math.min(options.windows, 100), options.seed + 30 + i);
    }
    return {
      sae: { dIn: sae.config.dIn, dSae: sae.config.dSae, k: options.sae.k, hash, trainRows: trained.rows, trainFvu: trained.fvu },
      baseline: { documents: baseline.provenance.documents, tokens: baseline.provenance.tokens, meanFvu: reference.meanFvu },
      rowNorm: trained.rowNorm,
      cases,
      nullPooled,
      nullResplit,
      seconds: (performance.now() - started) / 1000,
    };
  } finally {
    await run.close();
    await pool?.close();
  }
}

/** The study's numbers as a text table: per case, per score, quantiles, threshold and fraction above. */
export function formatDriftStudy(result: DriftStudyResult, options: Pick<DriftStudyOptions, 'alpha' | 'windowTokens' | 'hook'>): string {
  const lines: string[] = [];
  const f = (x: number): string => (Math.abs(x) >= 0.01 || x === 0 ? x.toFixed(4) : x.toExponential(2));
  lines.push(
    `SAE: stories260K ${options.hook}, ${result.sae.dIn}×${result.sae.dSae} TopK k=${result.sae.k}, trained on ${result.sae.trainRows} rows (final training FVU ${result.sae.trainFvu.toFixed(3)})`,
    `baseline: ${result.baseline.documents} documents, ${result.baseline.tokens} tokens, mean FVU ${result.baseline.meanFvu.toFixed(3)}; α = ${options.alpha} per score; windows of ≥ ${options.windowTokens} tokens; mean row norm at the hook ${result.rowNorm.toFixed(3)}`,
    '',
    `| case | windows | score | p5 | p50 | p95 | threshold | above |`,
    `|---|---|---|---|---|---|---|---|`,
  );
  for (const c of result.cases) {
    for (const s of SCORE_NAMES) {
      const x = c.scores[s];
      lines.push(`| ${c.name} | ${c.windows} | ${s} | ${f(x.p5)} | ${f(x.p50)} | ${f(x.p95)} | ${f(x.threshold)} | ${x.above}/${c.windows} (${((100 * x.above) / c.windows).toFixed(1)}%) |`);
    }
    lines.push(`| ${c.name} | ${c.windows} | any score (each at α) | | | | | ${c.anyAbove}/${c.windows} (${((100 * c.anyAbove) / c.windows).toFixed(1)}%) |`);
    lines.push(`| ${c.name} | ${c.windows} | any (family-wise α) | | | | | ${c.familyAbove}/${c.windows} (${((100 * c.familyAbove) / c.windows).toFixed(1)}%) |`);
  }
  const pooled = result.nullPooled;
  const rate = (n: number): string => `${n}/${pooled.windows} (${((100 * n) / pooled.windows).toFixed(2)}%)`;
  lines.push(
    '',
    `held-out stories against the study's one baseline, ${pooled.runs} calibrator seeds, overlapping windows from one pool of held-out documents, pooled: ${SCORE_NAMES.map((s) => `${s} ${rate(pooled.above[s])}`).join(', ')}; any score ${rate(pooled.anyAbove)}; family-wise any ${rate(pooled.familyAbove)}`,
    '',
    `${result.seconds.toFixed(1)} s in all`,
  );
  const resplit = result.nullResplit;
  if (resplit !== null) {
    const pct = (x: number): string => `${(100 * x).toFixed(2)}%`;
    lines.splice(
      lines.length - 2,
      0,
      `held-out stories over ${resplit.splits} random re-splits of the baseline + held-out documents (a fresh baseline and calibrator each, disjoint windows), ${resplit.windows} windows:`,
      '',
      `| statistic | false alarms | rate | 95% Wilson | 95% over splits | per split: min / median / max |`,
      `|---|---|---|---|---|---|`,
      ...([...SCORE_NAMES, 'union', 'family'] as const).map((k) => {
        const r = resplit.above[k];
        const p = resplit.perSplit[k];
        const name = k === 'union' ? 'any score (each at α)' : k === 'family' ? 'any (family-wise α)' : k;
        return `| ${name} | ${r.hits}/${r.n} | ${pct(r.value)} | ${pct(r.low)}–${pct(r.high)} | ${pct(p.low)}–${pct(p.high)} | ${pct(p.min)} / ${pct(p.p50)} / ${pct(p.max)} |`;
      }),
      '',
    );
  }
  return lines.join('\n');
}
