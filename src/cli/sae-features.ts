/**
 * `saegate sae features`: runs a corpus through the model and an SAE and writes what each feature
 * responds to (top contexts, firing frequency, activations) as JSON and as a static HTML page.
 */
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { SaegateError } from '../common/errors.js';
import { readCorpus } from '../lab/corpus/read.js';
import { FeatureAccumulator } from '../lab/features/accumulator.js';
import { renderFeaturePage } from '../lab/features/html.js';
import { applyLabels, readFeatureLabels } from '../lab/features/labels.js';
import { writeFeatureReport } from '../lab/features/report.js';
import { loadSae } from '../sae/load.js';
import { SaePool } from '../sae/pool.js';
import { parseFlags, portFlag } from './args.js';
import { openModelRun } from './model-run.js';
import { StatusLine } from './status-line.js';

export const saeFeaturesUsage = `Usage: saegate sae features --sae DIR --corpus FILE [--out DIR] [options]

Runs every corpus document through the model, encodes the SAE's hook activations at every prompt
position, and writes per feature: the top activating contexts (the activating token marked),
firing frequency, mean and max activation, an activation histogram, and dead / dense flags —
to DIR/features.json and to DIR/features.html, a self-contained page (docs/features.md).

  --sae DIR                 SAELens or sparsify directory
  --corpus FILE             text or JSONL corpus (docs/corpus.md)
  --out DIR                 output directory (default: the SAE directory)
  --labels FILE             features.yaml with labels and notes (default: DIR/features.yaml of the
                            SAE when present)
  --model FILE|DIR          model run in-process (default: as for demo)
  --tokenizer FILE          tokenizer (default: found beside the model)
  --upstream URL            an external tap-speaking model server instead (start it with --tap <URL printed>)
  --tap-port N              port the collector's tap listens on with --upstream (default: any)
  --hook NAME               hook point, when the SAE files do not name one (sparsify)
  --max-documents N         documents read from the corpus (default: all)
  --top-k N                 active features read per token (default: k for TopK SAEs, else 64)
  --contexts N              examples kept per feature (default 10)
  --window-before N         tokens shown before the activating token (default 12)
  --window-after N          tokens shown after it (default 4)
  --dense-threshold F       firing frequency above which a feature is flagged dense (default 0.1)
  --device cpu|cuda         execution provider for the SAE (default cpu)
  --threads N               onnxruntime threads of the model (default: one per core)`;

const int = (min: number): z.ZodType<number> => z.coerce.number().int().min(min);

const flagsSpec = {
  sae: { type: 'string' },
  corpus: { type: 'string' },
  out: { type: 'string' },
  labels: { type: 'string' },
  model: { type: 'string' },
  tokenizer: { type: 'string' },
  upstream: { type: 'string' },
  'tap-port': { type: 'string' },
  hook: { type: 'string' },
  'max-documents': { type: 'string' },
  'top-k': { type: 'string' },
  contexts: { type: 'string' },
  'window-before': { type: 'string' },
  'window-after': { type: 'string' },
  'dense-threshold': { type: 'string' },
  device: { type: 'string' },
  threads: { type: 'string' },
} as const;

const schema = z
  .object({
    sae: z.string({ error: 'is required' }).min(1),
    corpus: z.string({ error: 'is required' }).min(1),
    out: z.string().min(1).optional(),
    labels: z.string().min(1).optional(),
    model: z.string().min(1).optional(),
    tokenizer: z.string().min(1).optional(),
    upstream: z.url().optional(),
    'tap-port': portFlag.optional(),
    hook: z.string().min(1).optional(),
    'max-documents': int(1).optional(),
    'top-k': int(1).optional(),
    contexts: int(0).default(10),
    'window-before': int(0).default(12),
    'window-after': int(0).default(4),
    'dense-threshold': z.coerce.number().gt(0).max(1).default(0.1),
    device: z.enum(['cpu', 'cuda']).default('cpu'),
    threads: int(1).optional(),
  })
  .refine((f) => f.model === undefined || f.upstream === undefined, { message: 'give --model or --upstream, not both', path: ['upstream'] });

/** Rows encoded per pool call. */
const ENCODE_ROWS = 2048;

export async function saeFeatures(argv: string[]): Promise<void> {
  const flags = parseFlags(argv, flagsSpec, schema, saeFeaturesUsage);
  const status = new StatusLine(process.stderr);
  const sae = loadSae(flags.sae, flags.hook === undefined ? {} : { hookName: flags.hook });
  const { dSae } = sae.config;
  const topK = Math.min(dSae, flags['top-k'] ?? sae.config.k ?? 64);
  const labelsFile = flags.labels ?? (fs.existsSync(path.join(flags.sae, 'features.yaml')) ? path.join(flags.sae, 'features.yaml') : null);
  // Labels are read before the long run so a bad file fails in milliseconds.
  const labels = labelsFile === null ? null : readFeatureLabels(labelsFile, { dSae });
  const documents = await readCorpus(flags.corpus, flags['max-documents'] === undefined ? {} : { maxDocuments: flags['max-documents'] });
  const outDir = path.resolve(flags.out ?? flags.sae);
  fs.mkdirSync(outDir, { recursive: true });

  const accumulator = new FeatureAccumulator({ dSae, contextsPerFeature: flags.contexts, windowBefore: flags['window-before'], windowAfter: flags['window-after'], denseThreshold: flags['dense-threshold'] });
  const run = await openModelRun({ hook: sae.config.hookName, model: flags.model, tokenizer: flags.tokenizer, upstream: flags.upstream, tapPort: flags['tap-port'], threads: flags.threads, log: (line) => status.log(line) });
  let pool: SaePool | null = null;
  let rows = 0;
  let done = 0;
  /** Rows with more active features than --top-k: their weaker features are not counted. */
  let truncatedRows = 0;
  try {
    pool = await SaePool.create({ sae, topK, device: flags.device });
    if (run.server.dModel !== sae.config.dIn) {
      throw new SaegateError('SAEGATE_ERR_SAE_FILE', [sae.config.source, `d_in ${sae.config.dIn} does not match the model's d_model ${run.server.dModel}`]);
    }
    for await (const doc of run.collector.collect(documents, { upstream: run.upstream })) {
      const T = doc.tokenCount;
      if (doc.tokenIds.length < T) throw new SaegateError('SAEGATE_ERR_COLLECT_SERVER', [run.server.modelId, `it sent no prompt tokens for document '${doc.id}'; feature contexts need them (the reference server sends them)`]);
      const indices = new Int32Array(T * topK);
      const values = new Float32Array(T * topK);
      for (let start = 0; start < T; start += ENCODE_ROWS) {
        const n = Math.min(ENCODE_ROWS, T - start);
        const result = await pool.encode(doc.rows.slice(start * sae.config.dIn, (start + n) * sae.config.dIn), n);
        indices.set(result.indices, start * topK);
        values.set(result.values, start * topK);
        for (let r = 0; r < n; r++) if (result.l0[r] > topK) truncatedRows++;
      }
      accumulator.addDocument({ id: doc.id, tokens: Array.from({ length: T }, (_, p) => ({ id: doc.tokenIds[p], text: doc.tokenTexts[p] })), indices, values, k: topK });
      rows += T;
      done++;
      status.draw(`features: ${done}/${documents.length} documents, ${rows} tokens`);
    }
  } finally {
    await run.close();
    await pool?.close();
  }
  let report = accumulator.finish({
    sae: { path: path.resolve(flags.sae), hookName: sae.config.hookName, dIn: sae.config.dIn, dSae, architecture: sae.config.architecture, ...(sae.config.k !== null && { k: sae.config.k }) },
    model: run.server.modelId,
    corpus: { path: path.resolve(flags.corpus) },
  });
  if (labels) report = applyLabels(report, labels);
  const jsonFile = path.join(outDir, 'features.json');
  const htmlFile = path.join(outDir, 'features.html');
  writeFeatureReport(jsonFile, report);
  fs.writeFileSync(htmlFile, renderFeaturePage(report));
  status.clear();
  if (truncatedRows > 0) {
    process.stderr.write(`warning: ${truncatedRows} of ${rows} tokens had more than --top-k ${topK} active features; only their ${topK} strongest are counted (frequencies of weak features are undercounted; raise --top-k)\n`);
  }
  process.stderr.write(
    `saegate sae features: ${done} documents, ${rows} tokens; ${report.summary.dead} dead and ${report.summary.dense} dense of ${dSae} features, mean L0 ${report.summary.meanL0.toFixed(2)}\n` +
      `  ${jsonFile}\n  ${htmlFile}\n`,
  );
}
