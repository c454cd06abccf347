/**
 * `saegate sae features`: runs a corpus through the model and an SAE and writes what each feature
 * responds to (top contexts, firing frequency, activations) as JSON and as a static HTML page.
 */
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { SaegateError } from '../common/errors.js';
import { custom, decimal, integer, oneOf, parseCommand, text, type CommandSpec } from '../common/options.js';
import { readCorpus } from '../lab/corpus/read.js';
import { FeatureAccumulator } from '../lab/features/accumulator.js';
import { renderFeaturePage } from '../lab/features/html.js';
import { applyLabels, readFeatureLabels } from '../lab/features/labels.js';
import { writeFeatureReport } from '../lab/features/report.js';
import { loadSae } from '../sae/load.js';
import { SaePool, type EncodeResult } from '../sae/pool.js';
import { openModelRun } from './model-run.js';
import { StatusLine, type ToolReporting } from './status-line.js';

const saeFeaturesOptions = {
  sae: { type: text('DIR'), required: true, help: 'SAELens or sparsify directory' },
  corpus: { type: text('FILE'), required: true, help: 'text or JSONL corpus (docs/corpus.md)' },
  out: { type: text('DIR'), defaultText: 'the SAE directory', help: 'output directory' },
  labels: { type: text('FILE'), defaultText: "the SAE's features.yaml", help: 'features.yaml with labels and notes (default: features.yaml in the SAE directory when present)' },
  model: { type: text('FILE|DIR'), defaultText: 'as for demo', help: 'model run in-process' },
  tokenizer: { type: text('FILE'), defaultText: 'beside the model', help: 'tokenizer file' },
  upstream: { type: custom(z.url(), 'a URL', 'URL'), help: 'an external tap-speaking model server instead (start it with --tap <URL printed>)' },
  tapPort: { type: integer(0, 65535), defaultText: 'any', help: "port the collector's tap listens on with --upstream" },
  hook: { type: text('NAME'), defaultText: "the SAE's", help: 'hook point, when the SAE files do not name one (sparsify)' },
  maxDocuments: { type: integer(1), defaultText: 'all', help: 'documents read from the corpus' },
  topK: { type: integer(1), defaultText: 'all', help: 'most active features read per token, the strongest' },
  contexts: { type: integer(0), default: 10, help: 'examples kept per feature' },
  windowBefore: { type: integer(0), default: 12, help: 'tokens shown before the activating token' },
  windowAfter: { type: integer(0), default: 4, help: 'tokens shown after it' },
  denseThreshold: { type: decimal({ above: 0, max: 1 }, 'F'), default: 0.1, help: 'firing frequency above which a feature is flagged dense' },
  device: { type: oneOf(['cpu', 'cuda']), default: 'cpu', help: 'execution provider for the SAE' },
  threads: { type: integer(1), defaultText: 'one per core', help: 'onnxruntime threads of the model' },
} as const;

export const saeFeaturesCommand = {
  name: 'sae features',
  synopsis: 'saegate sae features --sae DIR --corpus FILE [--out DIR] [options]',
  description:
    "Runs every corpus document through the model, encodes the SAE's hook activations at every prompt\n" +
    'position, and writes per feature: the top activating contexts (the activating token marked),\n' +
    'firing frequency, mean and max activation, an activation histogram, and dead / dense flags —\n' +
    'to DIR/features.json and to DIR/features.html, a self-contained page (docs/features.md).',
  options: saeFeaturesOptions,
  check: (f) => (f.model !== undefined && f.upstream !== undefined ? { option: 'upstream', message: 'give --model or --upstream, not both' } : undefined),
} as const satisfies CommandSpec<typeof saeFeaturesOptions>;

/** Rows encoded per pool call. */
const ENCODE_ROWS = 2048;

/** Runs `sae features`; `reporting` redirects its progress and lines and maps the paths its report names. */
export async function saeFeatures(argv: string[], reporting: ToolReporting = {}): Promise<void> {
  const flags = parseCommand(saeFeaturesCommand, argv);
  const status = reporting.status ?? new StatusLine(process.stderr);
  const finalPath = reporting.finalPath ?? ((file: string) => file);
  const sae = loadSae(flags.sae, flags.hook === undefined ? {} : { hookName: flags.hook });
  const { dSae } = sae.config;
  const topK = flags.topK;
  const labelsFile = flags.labels ?? (fs.existsSync(path.join(flags.sae, 'features.yaml')) ? path.join(flags.sae, 'features.yaml') : null);
  // Labels are read before the long run so a bad file fails in milliseconds.
  const labels = labelsFile === null ? null : readFeatureLabels(labelsFile, { dSae });
  const documents = await readCorpus(flags.corpus, flags.maxDocuments === undefined ? {} : { maxDocuments: flags.maxDocuments });
  const outDir = path.resolve(flags.out ?? flags.sae);
  fs.mkdirSync(outDir, { recursive: true });

  const accumulator = new FeatureAccumulator({ dSae, contextsPerFeature: flags.contexts, windowBefore: flags.windowBefore, windowAfter: flags.windowAfter, denseThreshold: flags.denseThreshold });
  const run = await openModelRun({ hook: sae.config.hookName, model: flags.model, tokenizer: flags.tokenizer, upstream: flags.upstream, tapPort: flags.tapPort, threads: flags.threads, log: (line) => status.log(line) });
  let pool: SaePool | null = null;
  let rows = 0;
  let done = 0;
  /** Rows with more active features than --top-k: their weaker features are not counted. */
  let truncatedRows = 0;
  try {
    pool = await SaePool.create({ sae, ...(topK !== undefined && { topK }), device: flags.device });
    if (run.server.dModel !== sae.config.dIn) {
      throw new SaegateError('SAEGATE_ERR_SAE_FILE', [sae.config.source, `d_in ${sae.config.dIn} does not match the model's d_model ${run.server.dModel}`]);
    }
    for await (const doc of run.collector.collect(documents, { upstream: run.upstream })) {
      const T = doc.tokenCount;
      if (doc.tokenIds.length < T) throw new SaegateError('SAEGATE_ERR_COLLECT_SERVER', [run.server.modelId, `it sent no prompt tokens for document '${doc.id}'; feature contexts need them (the reference server sends them)`]);
      // Each chunk lists every active feature (at most --top-k) in slots as wide as its largest L0;
      // the document gets the widest chunk's width, narrower chunks padded with −1.
      const chunks: EncodeResult[] = [];
      let width = 1;
      for (let start = 0; start < T; start += ENCODE_ROWS) {
        const n = Math.min(ENCODE_ROWS, T - start);
        const result = await pool.encode(doc.rows.slice(start * sae.config.dIn, (start + n) * sae.config.dIn), n);
        chunks.push(result);
        width = Math.max(width, result.topK);
        if (topK !== undefined) for (let r = 0; r < n; r++) if (result.l0[r] > topK) truncatedRows++;
      }
      const indices = new Int32Array(T * width).fill(-1);
      const values = new Float32Array(T * width);
      chunks.forEach((result, c) => {
        const first = c * ENCODE_ROWS;
        const w = result.topK;
        for (let r = 0; r < result.rowCount; r++) {
          indices.set(result.indices.subarray(r * w, (r + 1) * w), (first + r) * width);
          values.set(result.values.subarray(r * w, (r + 1) * w), (first + r) * width);
        }
      });
      accumulator.addDocument({ id: doc.id, tokens: Array.from({ length: T }, (_, p) => ({ id: doc.tokenIds[p], text: doc.tokenTexts[p] })), indices, values, k: width });
      rows += T;
      done++;
      status.draw(`features: ${done}/${documents.length} documents, ${rows} tokens`);
    }
  } finally {
    await run.close();
    await pool?.close();
  }
  let report = accumulator.finish({
    sae: { path: finalPath(path.resolve(flags.sae)), hookName: sae.config.hookName, dIn: sae.config.dIn, dSae, architecture: sae.config.architecture, ...(sae.config.k !== null && { k: sae.config.k }) },
    model: run.server.modelId,
    corpus: { path: finalPath(path.resolve(flags.corpus)) },
  });
  if (labels) report = applyLabels(report, labels);
  const jsonFile = path.join(outDir, 'features.json');
  const htmlFile = path.join(outDir, 'features.html');
  writeFeatureReport(jsonFile, report);
  fs.writeFileSync(htmlFile, renderFeaturePage(report));
  status.clear();
  if (truncatedRows > 0 && topK !== undefined) {
    status.log(`warning: ${truncatedRows} of ${rows} tokens had more than --top-k ${topK} active features; only their ${topK} strongest are counted (frequencies of weak features are undercounted; raise or drop --top-k)`);
  }
  status.log(
    `saegate sae features: ${done} documents, ${rows} tokens; ${report.summary.dead} dead and ${report.summary.dense} dense of ${dSae} features, mean L0 ${report.summary.meanL0.toFixed(2)}\n` +
      `  ${finalPath(jsonFile)}\n  ${finalPath(htmlFile)}`,
  );
}
