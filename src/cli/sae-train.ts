/** `saegate sae train`: collect activations over a corpus (or read them), train TopK SAEs, report. */
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { SaegateError } from '../common/errors.js';
import { custom, decimal, flag, integer, oneOf, parseCommand, text, type CommandSpec, type OptionValues } from '../common/options.js';
import { SeededRandom, shuffledIndices } from '../common/random.js';
import { readCorpus, type CorpusDocument } from '../lab/corpus/read.js';
import { splitCorpus } from '../lab/corpus/split.js';
import type { ModelWeights } from '../model/types.js';
import { readRowsFile } from '../lab/rows-file.js';
import type { TrainConfig } from '../lab/train/protocol.js';
import { frontierMarkdown, trainReportMarkdown, writeReport, type FrontierReport, type TrainReport } from '../lab/train/report.js';
import { spliceEvaluation, type SpliceEvaluation } from '../lab/train/splice.js';
import { defaultTrainConfig, evaluateSae, toSaeWeights, trainTopKSae, writeSaeLensDirectory } from '../lab/train/trainer.js';
import { openModelRun } from './model-run.js';
import { StatusLine, type Status, type ToolReporting } from './status-line.js';

const DATA = 'Data';
const SAE = 'SAE and optimiser';
const RUN = 'Run';

/** `--k 4,8,16`: one SAE per distinct k, in the order given. */
const kList = custom(
  z.union([
    z.number().int().min(1).transform((k) => [k]),
    z.array(z.number().int().min(1)).min(1),
    z
      .string()
      .regex(/^\d+(,\d+)*$/)
      .transform((s) => [...new Set(s.split(',').map(Number))])
      .refine((ks) => ks.every((k) => k >= 1)),
  ]),
  'a positive integer or a comma-separated list, e.g. 4,8,16,32',
  'K[,K…]',
);

const saeTrainOptions = {
  corpus: { type: text('FILE'), group: DATA, help: "text or JSONL corpus (docs/corpus.md); documents run through the model and the hook's activations at every prompt position are the rows" },
  activations: { type: text('FILE'), group: DATA, help: '.npy or safetensors rows (rows × d_in) instead of a corpus' },
  tensor: { type: text('NAME'), group: DATA, help: 'tensor of a safetensors --activations file holding several' },
  model: { type: text('FILE|DIR'), group: DATA, defaultText: 'as for demo', help: 'model run in-process for --corpus ($SAEGATE_DEMO_MODEL, else ../shared/models/stories260K, else a seeded synthetic model)' },
  tokenizer: { type: text('FILE'), group: DATA, defaultText: 'beside the model', help: 'tokenizer file' },
  upstream: { type: custom(z.url(), 'a URL', 'URL'), group: DATA, help: 'an external tap-speaking model server instead; start it with --tap <the URL this prints> (CE loss recovered is then not measured)' },
  tapPort: { type: integer(0, 65535), group: DATA, defaultText: 'any', help: "port the collector's tap listens on with --upstream" },
  hook: { type: text('NAME'), group: DATA, default: 'blocks.2.hook_resid_post', help: 'hook point' },
  heldOut: { type: decimal({ min: 0, max: 0.9 }, 'F'), group: DATA, default: 0.1, help: 'fraction of documents (or rows) held out for evaluation' },
  maxRows: { type: integer(1), group: DATA, default: 2_000_000, help: 'most training rows collected' },
  maxTokensPerDocument: { type: integer(1), group: DATA, defaultText: 'all', help: 'positions kept per document' },
  spliceDocuments: { type: integer(0), group: DATA, default: 200, help: 'held-out documents for the CE-loss-recovered check' },
  dSae: { type: integer(1), group: SAE, defaultText: '16 × d_in', help: 'latents' },
  k: { type: kList, group: SAE, default: [8], defaultText: '8', help: 'active latents per row; several values train one SAE each into DIR/k<K>/ and write the FVU–L0 frontier to DIR/report.md' },
  auxK: { type: integer(0), group: SAE, defaultText: 'd_in / 2', help: 'AuxK latents per row' },
  auxCoef: { type: decimal({ min: 0 }), group: SAE, defaultText: '1/32', help: 'AuxK loss weight' },
  lr: { type: decimal({ above: 0 }), group: SAE, defaultText: '2e-4 · √(16384 / d_sae)', help: 'Adam learning rate' },
  batch: { type: integer(2), group: SAE, default: 4096, help: 'rows per step' },
  steps: { type: integer(1), group: SAE, default: 3000, help: 'optimiser steps' },
  warmup: { type: integer(0), group: SAE, defaultText: '50', help: 'warm-up steps' },
  decay: { type: decimal({ min: 0, max: 1 }, 'F'), group: SAE, defaultText: '0.2', help: 'fraction of steps at the end with linear decay to 0' },
  deadAfterRows: { type: integer(1), group: SAE, defaultText: '5 × batch', help: 'a latent silent for this many rows is dead and feeds AuxK' },
  seed: { type: integer(0), group: SAE, default: 0, help: 'seed for initialisation, batch order and the split' },
  out: { type: text('DIR'), group: RUN, required: true, help: 'output directory (created)' },
  checkpointEvery: { type: integer(0), group: RUN, default: 500, help: 'steps between checkpoints (DIR/checkpoint.safetensors; 0 = off)' },
  resume: { type: flag, group: RUN, default: false, help: "continue from DIR's checkpoint (same data and settings)" },
  device: { type: oneOf(['cpu', 'cuda']), group: RUN, default: 'cpu', help: 'execution provider' },
  threads: { type: integer(1), group: RUN, defaultText: 'one per core', help: 'onnxruntime threads' },
} as const;

export const saeTrainCommand = {
  name: 'sae train',
  synopsis: 'saegate sae train --out DIR (--corpus FILE | --activations FILE) [options]',
  description:
    'Trains TopK sparse autoencoders (Gao et al. 2024: TopK, unit-norm decoder rows, encoder initialised\n' +
    "as the decoder's transpose, b_dec at the geometric median, AuxK for dead latents, Adam) and writes\n" +
    "each as a SAELens directory (cfg.json + sae_weights.safetensors) that 'saegate serve --sae' loads,\n" +
    'with report.json / report.md (held-out FVU, L0, dead latents, CE loss recovered).',
  options: saeTrainOptions,
  check: (f) => {
    if ((f.corpus === undefined) === (f.activations === undefined)) return { option: 'corpus', message: 'give exactly one of --corpus and --activations' };
    if (f.activations !== undefined && (f.model !== undefined || f.upstream !== undefined)) return { option: 'activations', message: '--model/--upstream run a --corpus; --activations needs neither' };
    if (f.model !== undefined && f.upstream !== undefined) return { option: 'upstream', message: 'give --model or --upstream, not both' };
    return undefined;
  },
} as const satisfies CommandSpec<typeof saeTrainOptions>;

type Flags = OptionValues<typeof saeTrainOptions>;


/** Rows gathered in chunks and joined once: collection never reallocates a growing array. */
class RowSink {
  private readonly chunks: Float32Array[] = [];
  rows = 0;
  constructor(readonly dIn: number) {}
  add(rows: Float32Array, count: number): void {
    this.chunks.push(rows.subarray(0, count * this.dIn));
    this.rows += count;
  }
  join(): Float32Array {
    const out = new Float32Array(this.rows * this.dIn);
    let offset = 0;
    for (const c of this.chunks) {
      out.set(c, offset);
      offset += c.length;
    }
    return out;
  }
}

interface Dataset {
  dIn: number;
  train: Float32Array;
  trainRows: number;
  heldOut: Float32Array;
  heldOutRows: number;
  trainDocuments: number | null;
  heldOutDocuments: number | null;
  /** Token ids of held-out documents, for the splice check (corpus + in-process model only). */
  heldOutTokens: number[][];
  source: string;
  modelName: string | null;
  spliceSkipped: string | null;
}

function activationsDataset(flags: Flags, file: string): Dataset {
  const block = readRowsFile(file, flags.tensor === undefined ? {} : { tensor: flags.tensor });
  const { rowCount, width } = block;
  // A seeded row split (documents are unknown here): the first F of a seeded order is held out.
  const heldOutRows = Math.floor(rowCount * flags.heldOut);
  const order = shuffledIndices(rowCount, new SeededRandom(flags.seed));
  const pick = (from: number, to: number): Float32Array => {
    const out = new Float32Array((to - from) * width);
    for (let r = from; r < to; r++) out.set(block.rows.subarray(order[r] * width, (order[r] + 1) * width), (r - from) * width);
    return out;
  };
  const trainRows = Math.min(rowCount - heldOutRows, flags.maxRows);
  return {
    dIn: width,
    heldOut: pick(0, heldOutRows),
    heldOutRows,
    train: pick(heldOutRows, heldOutRows + trainRows),
    trainRows,
    trainDocuments: null,
    heldOutDocuments: null,
    heldOutTokens: [],
    source: `activations ${file}`,
    modelName: null,
    spliceSkipped: 'rows came from an activations file, not a model',
  };
}

async function corpusDataset(flags: Flags, file: string, status: Status, finalPath: (file: string) => string): Promise<Dataset & { model: ModelWeights | null }> {
  const documents = await readCorpus(file);
  const { train, heldOut } = splitCorpus(documents, { heldOutFraction: flags.heldOut, seed: flags.seed });
  if (train.length === 0) throw new SaegateError('SAEGATE_ERR_CONFIG', ['corpus', `${file}: no training documents after holding out ${flags.heldOut}`]);
  const run = await openModelRun({ hook: flags.hook, model: flags.model, tokenizer: flags.tokenizer, upstream: flags.upstream, tapPort: flags.tapPort, device: flags.device, threads: flags.threads, log: (line) => status.log(line) });
  try {
    const dIn = run.server.dModel;
    const collect = async (docs: CorpusDocument[], sink: RowSink, limit: number, label: string, tokens: number[][] | null): Promise<number> => {
      let used = 0;
      const controller = new AbortController();
      try {
        for await (const doc of run.collector.collect(docs, { upstream: run.upstream, maxTokensPerDocument: flags.maxTokensPerDocument, signal: controller.signal })) {
          const take = Math.min(doc.tokenCount, limit - sink.rows);
          sink.add(doc.rows, take);
          if (tokens && doc.tokenIds.length > 0 && tokens.length < flags.spliceDocuments) tokens.push([...doc.tokenIds]);
          used++;
          status.draw(`collecting ${label}: ${used}/${docs.length} documents, ${sink.rows} rows`);
          if (sink.rows >= limit) {
            controller.abort();
            break;
          }
        }
      } catch (error) {
        if (!controller.signal.aborted) throw error;
      }
      return used;
    };
    const trainSink = new RowSink(dIn);
    const trainDocuments = await collect(train, trainSink, flags.maxRows, 'training rows', null);
    const heldOutSink = new RowSink(dIn);
    const heldOutTokens: number[][] = [];
    // Held-out rows in proportion to the training rows, so --max-rows bounds both.
    const heldOutLimit = Math.ceil((flags.maxRows * flags.heldOut) / (1 - flags.heldOut));
    const heldOutDocuments = await collect(heldOut, heldOutSink, heldOutLimit, 'held-out rows', heldOutTokens);
    status.log(`collected ${trainSink.rows} training rows from ${trainDocuments} documents and ${heldOutSink.rows} held-out rows from ${heldOutDocuments} documents at ${flags.hook}`);
    return {
      dIn,
      train: trainSink.join(),
      trainRows: trainSink.rows,
      heldOut: heldOutSink.join(),
      heldOutRows: heldOutSink.rows,
      trainDocuments,
      heldOutDocuments,
      heldOutTokens,
      source: `corpus ${finalPath(file)} through ${run.describe}`,
      modelName: run.loaded?.name ?? run.server.modelId,
      spliceSkipped: run.loaded ? null : 'the model ran in an external server (--upstream); the splice needs it in-process (--model)',
      model: run.loaded?.weights ?? null,
    };
  } finally {
    await run.close();
  }
}

function progressText(p: { step: number; steps: number; loss: number; fvu: number; l0: number; deadFraction: number; auxFvu: number; rowsPerSecond: number }, k: number): string {
  const width = 24;
  const filled = Math.round((width * p.step) / p.steps);
  return `k=${k} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${p.step}/${p.steps}  loss ${p.loss.toFixed(4)}  FVU ${p.fvu.toFixed(4)}  L0 ${p.l0.toFixed(2)}  dead ${(100 * p.deadFraction).toFixed(1)}%  auxK ${p.auxFvu.toFixed(3)}  ${Math.round(p.rowsPerSecond)} rows/s`;
}

/** Runs `sae train`; `reporting` redirects its progress and lines and maps the paths its reports name. */
export async function saeTrain(argv: string[], reporting: ToolReporting = {}): Promise<void> {
  const flags = parseCommand(saeTrainCommand, argv);
  const status = reporting.status ?? new StatusLine(process.stderr);
  const finalPath = reporting.finalPath ?? ((file: string) => file);
  const outDir = path.resolve(flags.out);
  fs.mkdirSync(outDir, { recursive: true });

  const data = flags.activations !== undefined ? { ...activationsDataset(flags, flags.activations), model: null } : await corpusDataset(flags, flags.corpus!, status, finalPath);
  if (data.trainRows < flags.batch) status.log(`note: ${data.trainRows} training rows is fewer than one batch of ${flags.batch}; rows repeat within a step`);
  const dSae = flags.dSae ?? 16 * data.dIn;
  const multi = flags.k.length > 1;
  const frontier: FrontierReport = { version: 1, createdAt: new Date().toISOString(), hookName: flags.hook, model: data.modelName, dSae, points: [] };

  for (const k of flags.k) {
    const dir = multi ? path.join(outDir, `k${k}`) : outDir;
    fs.mkdirSync(dir, { recursive: true });
    const config: TrainConfig = defaultTrainConfig({
      dIn: data.dIn,
      dSae,
      k,
      batchRows: flags.batch,
      steps: flags.steps,
      seed: flags.seed,
      ...(flags.auxK !== undefined && { kAux: flags.auxK }),
      ...(flags.auxCoef !== undefined && { auxCoef: flags.auxCoef }),
      ...(flags.lr !== undefined && { lr: flags.lr }),
      ...(flags.warmup !== undefined && { warmupSteps: flags.warmup }),
      ...(flags.decay !== undefined && { decayFraction: flags.decay }),
      ...(flags.deadAfterRows !== undefined && { deadAfterRows: flags.deadAfterRows }),
    });
    const checkpointPath = path.join(dir, 'checkpoint.safetensors');
    if (flags.resume && !fs.existsSync(checkpointPath)) throw new SaegateError('SAEGATE_ERR_TRAIN_CHECKPOINT', [checkpointPath, 'no checkpoint to resume from']);
    // Without a terminal, one line per tenth of the run (the first progress message at or past each mark).
    let nextLogStep = Math.max(1, Math.floor(config.steps / 10));
    const result = await trainTopKSae({
      rows: data.train,
      count: data.trainRows,
      config,
      run: {
        device: flags.device,
        intraOpThreads: flags.threads,
        progressEvery: Math.max(1, Math.min(100, Math.floor(config.steps / 30))),
        checkpointEvery: flags.checkpointEvery,
        checkpointPath: flags.checkpointEvery > 0 ? checkpointPath : null,
        resumeFrom: flags.resume ? checkpointPath : null,
      },
      onProgress: (p) => {
        status.draw(progressText(p, k));
        if (!status.interactive && (p.step >= nextLogStep || p.step === p.steps)) {
          status.log(progressText(p, k));
          while (nextLogStep <= p.step) nextLogStep += Math.max(1, Math.floor(config.steps / 10));
        }
      },
    });
    const sae = toSaeWeights(result.params, config, { hookName: flags.hook, modelName: data.modelName, source: dir });
    writeSaeLensDirectory(dir, sae, { saegate_train: { seed: config.seed, steps: config.steps, batch_rows: config.batchRows, lr: config.lr, k_aux: config.kAux } });
    status.draw(`k=${k}: evaluating on ${data.heldOutRows} held-out rows`);
    const evaluation = data.heldOutRows > 0 ? await evaluateSae(sae, data.heldOut, data.heldOutRows, { device: flags.device }) : null;
    let splice: SpliceEvaluation | null = null;
    let spliceSkipped = data.spliceSkipped;
    if (data.model && data.heldOutTokens.length > 0 && flags.spliceDocuments > 0) {
      splice = await spliceEvaluation({
        model: data.model,
        sae,
        documents: data.heldOutTokens.slice(0, flags.spliceDocuments),
        device: flags.device,
        intraOpThreads: flags.threads,
        onProgress: (done, total) => status.draw(`k=${k}: CE loss recovered, document ${done}/${total}`),
      });
    } else if (spliceSkipped === null) {
      spliceSkipped = flags.spliceDocuments === 0 ? '--splice-documents 0' : 'no held-out documents';
    }
    const dense = evaluation ? [...evaluation.firing].filter((f) => f > 0.1 * evaluation.rows).length / dSae : 0;
    const final = result.history[result.history.length - 1];
    const report: TrainReport = {
      version: 1,
      createdAt: new Date().toISOString(),
      sae: { directory: finalPath(dir), hookName: flags.hook, model: data.modelName, dIn: data.dIn, dSae, k },
      data: { source: data.source, trainRows: data.trainRows, heldOutRows: data.heldOutRows, trainDocuments: data.trainDocuments, heldOutDocuments: data.heldOutDocuments },
      config,
      training: {
        seconds: result.trainSeconds,
        rowsPerSecond: ((config.steps - result.resumedAtStep) * config.batchRows) / Math.max(result.trainSeconds, 1e-9),
        resumedAtStep: result.resumedAtStep,
        final,
        history: result.history,
      },
      heldOut: evaluation ? { rows: evaluation.rows, fvu: evaluation.fvu, l0: evaluation.l0, deadFraction: evaluation.deadFraction, denseFraction: dense } : { rows: 0, fvu: NaN, l0: NaN, deadFraction: NaN, denseFraction: NaN },
      splice,
      spliceSkipped: splice ? null : spliceSkipped,
    };
    writeReport(dir, report, trainReportMarkdown(report));
    frontier.points.push({ k, directory: finalPath(dir), heldOutFvu: report.heldOut.fvu, l0: report.heldOut.l0, deadFraction: report.heldOut.deadFraction, ceIncrease: splice?.ceIncrease ?? null, ceRecovered: splice?.ceRecovered ?? null, seconds: result.trainSeconds });
    status.log(
      `k=${k}: held-out FVU ${report.heldOut.fvu.toFixed(4)}, L0 ${report.heldOut.l0.toFixed(2)}, dead ${(100 * report.heldOut.deadFraction).toFixed(2)}%` +
        (splice ? `, CE +${splice.ceIncrease.toFixed(4)} nats (${(100 * splice.ceRecovered).toFixed(1)}% recovered)` : '') +
        ` → ${finalPath(dir)}`,
    );
  }
  if (multi) {
    writeReport(outDir, frontier, frontierMarkdown(frontier));
    status.log(`frontier → ${finalPath(path.join(outDir, 'report.md'))}`);
  }
  status.clear();
}
