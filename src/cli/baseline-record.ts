/**
 * `saegate baseline record`: runs a corpus through a model and an SAE and writes the drift baseline
 * the monitor calibrates against (docs/monitor.md). The work is src/lab/baseline/record.ts; this
 * file checks inputs early (SAE, corpus, output directory before any model starts), wires the
 * model run and the SAE pool, and prints one status line and a summary on stderr.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { z } from 'zod';
import { err } from '../common/errors.js';
import { custom, integer, oneOf, parseCommand, text, type CommandSpec } from '../common/options.js';
import { SeededRandom, shuffledIndices } from '../common/random.js';
import { readCorpus } from '../lab/corpus/read.js';
import { recordBaseline } from '../lab/baseline/record.js';
import { recordProjectionBaseline } from '../lab/baseline/record-projection.js';
import { loadProjection, parseProjectionFlag } from '../monitor/projection.js';
import { writeBaseline } from '../monitor/baseline.js';
import { saeWeightsHash } from '../monitor/sae-hash.js';
import { bindSaeToModel, loadSae } from '../sae/load.js';
import { SaePool } from '../sae/pool.js';
import { openModelRun } from './model-run.js';
import { StatusLine, type ToolReporting } from './status-line.js';

const baselineRecordOptions = {
  sae: { type: text('DIR'), help: 'SAELens or sparsify directory; the baseline is for its hook and width (give --sae or --projection)' },
  projection: { type: text('NAME=FILE[@HOOK]'), help: "a projection monitor's baseline instead: each row's projection on the vector file's unit direction at HOOK (or --hook, or the file's only one); edges are the rows' quantiles" },
  corpus: { type: text('FILE'), required: true, help: 'text or JSONL corpus (docs/corpus.md) of normal traffic; each document is one baseline document' },
  out: { type: text('FILE'), required: true, help: 'baseline JSON to write (a temporary file, then renamed)' },
  model: { type: text('FILE|DIR'), defaultText: 'as for demo', help: 'model run in-process ($SAEGATE_DEMO_MODEL, else ../shared/models/stories260K, else a seeded synthetic model)' },
  tokenizer: { type: text('FILE'), defaultText: 'beside the model', help: 'tokenizer file' },
  upstream: { type: custom(z.url(), 'a URL', 'URL'), help: 'an external tap-speaking model server instead (start it with --tap <URL printed>)' },
  tapPort: { type: integer(0, 65535), defaultText: 'any', help: "port the collector's tap listens on with --upstream" },
  hook: { type: text('NAME'), defaultText: "the SAE's", help: 'hook point, when the SAE files (sparsify) or a --projection without @HOOK do not name one' },
  documents: { type: integer(2), defaultText: 'all', help: 'documents recorded: a seeded random subset of the corpus (kept in corpus order) when it has more' },
  maxTokens: { type: integer(1), defaultText: 'all', help: 'positions kept per document (the first ones, BOS included)' },
  seed: { type: integer(0), default: 0, help: 'seed of the --documents subset' },
  topK: { type: integer(1), defaultText: 'all', help: 'most active latents read per token, the strongest (the monitor reads all)' },
  device: { type: oneOf(['cpu', 'cuda']), default: 'cpu', help: 'execution provider for the SAE (and the in-process model)' },
  threads: { type: integer(1), defaultText: 'one per core', help: 'onnxruntime threads of the in-process model' },
} as const;

export const baselineRecordCommand = {
  name: 'baseline record',
  synopsis: 'saegate baseline record (--sae DIR | --projection NAME=FILE[@HOOK]) --corpus FILE --out FILE [--model FILE | --upstream URL] [options]',
  description:
    "Records a drift baseline: runs every corpus document through the model, encodes the SAE's hook\n" +
    'activations at every prompt position, and writes per document the features that fired, L0 and\n' +
    'FVU histograms and provenance (model, SAE id and weights hash, hook, counts, time, version) as\n' +
    'the baseline file the drift monitor calibrates against (docs/monitor.md). With --projection instead\n' +
    "of --sae, each position's projection on a direction is recorded for a projection monitor.",
  options: baselineRecordOptions,
  check: (f) =>
    f.model !== undefined && f.upstream !== undefined
      ? { option: 'upstream', message: 'give --model or --upstream, not both' }
      : (f.sae === undefined) === (f.projection === undefined)
        ? { option: 'sae', message: 'give --sae DIR or --projection NAME=FILE[@HOOK] (one of them)' }
        : undefined,
} as const satisfies CommandSpec<typeof baselineRecordOptions>;

function saegateVersion(): string {
  return (createRequire(import.meta.url)('../../package.json') as { version: string }).version;
}

/** Throws SAEGATE_ERR_BASELINE_FILE unless `file`'s directory exists and is writable (checked before the long run). */
function checkWritable(file: string): void {
  const dir = path.dirname(path.resolve(file));
  try {
    if (!fs.statSync(dir).isDirectory()) throw new Error(`${dir} is not a directory`);
    fs.accessSync(dir, fs.constants.W_OK);
  } catch (error) {
    throw err('SAEGATE_ERR_BASELINE_FILE', file, `cannot write into its directory: ${(error as Error).message}`);
  }
}

type BaselineRecordFlags = ReturnType<typeof parseCommand<typeof baselineRecordOptions>>;

/** The corpus documents to record (SAEGATE_ERR_CORPUS_FILE with fewer than 2). */
async function chooseDocuments(flags: BaselineRecordFlags): Promise<Awaited<ReturnType<typeof readCorpus>>> {
  let documents = await readCorpus(flags.corpus);
  if (documents.length < 2) throw err('SAEGATE_ERR_CORPUS_FILE', flags.corpus, `${documents.length === 0 ? 'no documents' : 'one document'}: a baseline needs at least 2 (calibration resamples whole documents)`);
  if (flags.documents !== undefined && flags.documents < documents.length) {
    const chosen = Array.from(shuffledIndices(documents.length, new SeededRandom(flags.seed)).subarray(0, flags.documents)).sort((a, b) => a - b);
    documents = chosen.map((i) => documents[i]);
  }
  return documents;
}

/** `--projection`: a projection monitor's baseline (no SAE). */
async function baselineRecordProjection(flags: BaselineRecordFlags, projectionFlag: string): Promise<void> {
  const status = new StatusLine(process.stderr);
  const parsed = parseProjectionFlag(projectionFlag);
  const projection = loadProjection(parsed.hook === undefined && flags.hook !== undefined ? { ...parsed, hook: flags.hook } : parsed);
  const documents = await chooseDocuments(flags);
  checkWritable(flags.out);
  const started = performance.now();
  const run = await openModelRun({ hook: projection.hook, model: flags.model, tokenizer: flags.tokenizer, upstream: flags.upstream, tapPort: flags.tapPort, device: flags.device, threads: flags.threads, log: (line) => status.log(line) });
  try {
    if (run.server.dModel !== projection.dModel) throw err('SAEGATE_ERR_VECTOR_FILE', parsed.file, `the direction has ${projection.dModel} values but the model's d_model is ${run.server.dModel}`);
    const { baseline, skipped } = await recordProjectionBaseline({
      collector: run.collector,
      upstream: run.upstream,
      projection,
      documents,
      maxTokensPerDocument: flags.maxTokens,
      identity: { model: run.server.modelId, sae: { id: projection.name, hash: projection.hash }, hook: projection.hook, saegateVersion: saegateVersion() },
      onProgress: (p) => status.draw(`baseline: ${p.documents}/${p.total} documents, ${p.tokens} tokens`),
    });
    if (baseline.documents.length < 2) {
      throw err('SAEGATE_ERR_CORPUS_FILE', flags.corpus, `only ${baseline.documents.length} document(s) had tokens (${skipped} did not fit the model's context): a baseline needs at least 2`);
    }
    writeBaseline(flags.out, baseline);
    status.clear();
    const p = baseline.provenance;
    const seconds = (performance.now() - started) / 1000;
    process.stderr.write(
      `saegate baseline record: ${p.documents} documents, ${p.tokens} tokens of ${p.model} at ${p.hook} projected on ${p.sae.id} (${baseline.bins.projection?.length ?? 0} edges)` +
        `${skipped > 0 ? `, ${skipped} skipped (too long for the context)` : ''} in ${seconds.toFixed(1)} s → ${flags.out}\n`,
    );
  } finally {
    status.clear();
    await run.close();
  }
}

/** Runs the command. `reporting` redirects its progress and lines (the demo's quiet first start). */
export async function baselineRecord(argv: string[], reporting: ToolReporting = {}): Promise<void> {
  const flags = parseCommand(baselineRecordCommand, argv);
  if (flags.projection !== undefined) return baselineRecordProjection(flags, flags.projection);
  const status = reporting.status ?? new StatusLine(process.stderr);
  const finalPath = reporting.finalPath ?? ((file: string) => file);
  // Everything that can fail in milliseconds fails before the model starts.
  const sae = loadSae(flags.sae!, flags.hook === undefined ? {} : { hookName: flags.hook });
  const { dIn, dSae, hookName } = sae.config;
  const documents = await chooseDocuments(flags);
  checkWritable(flags.out);
  const topK = flags.topK;
  const started = performance.now();
  const run = await openModelRun({ hook: hookName, model: flags.model, tokenizer: flags.tokenizer, upstream: flags.upstream, tapPort: flags.tapPort, device: flags.device, threads: flags.threads, log: (line) => status.log(line) });
  let pool: SaePool | null = null;
  try {
    bindSaeToModel(sae, { dModel: run.server.dModel, hookPoints: run.server.hookPoints });
    pool = await SaePool.create({ sae, ...(topK !== undefined && { topK }), device: flags.device });
    const recorded = await recordBaseline({
      collector: run.collector,
      upstream: run.upstream,
      pool,
      dIn,
      dSae,
      documents,
      maxTokensPerDocument: flags.maxTokens,
      identity: { model: run.server.modelId, sae: { id: path.basename(path.resolve(flags.sae!)), hash: saeWeightsHash(sae) }, hook: hookName, saegateVersion: saegateVersion() },
      onProgress: (p) => status.draw(`baseline: ${p.documents}/${p.total} documents, ${p.tokens} tokens`),
    });
    const { baseline, skipped, truncatedRows } = recorded;
    if (baseline.documents.length < 2) {
      throw err('SAEGATE_ERR_CORPUS_FILE', flags.corpus, `only ${baseline.documents.length} document(s) had tokens (${skipped} did not fit the model's context): a baseline needs at least 2`);
    }
    writeBaseline(flags.out, baseline);
    status.clear();
    if (truncatedRows > 0 && topK !== undefined) {
      status.log(`warning: ${truncatedRows} of ${baseline.provenance.tokens} tokens had more than --top-k ${topK} active latents; only their ${topK} strongest are counted (raise or drop --top-k)`);
    }
    const p = baseline.provenance;
    if (sae.config.modelName !== null && sae.config.modelName !== p.model) {
      // The monitor compares a baseline's model with the SAE's model_name; say so now, not at serve time.
      status.log(`warning: the SAE's cfg.json names model '${sae.config.modelName}' but the model server calls itself '${p.model}'; the baseline records '${p.model}', and a monitor that expects '${sae.config.modelName}' will refuse it`);
    }
    const seconds = (performance.now() - started) / 1000;
    status.log(
      `saegate baseline record: ${p.documents} documents, ${p.tokens} tokens of ${p.model} at ${p.hook} through ${p.sae.id} (d_sae ${p.dSae})` +
        `${skipped > 0 ? `, ${skipped} skipped (too long for the context)` : ''} in ${seconds.toFixed(1)} s → ${finalPath(flags.out)}`,
    );
  } finally {
    status.clear();
    await run.close();
    await pool?.close();
  }
}
