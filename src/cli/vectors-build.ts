/**
 * `saegate vectors build`: a steering vector from two prompt sets (docs/steering.md, "Building a
 * vector"). The logic is in src/lab/vectors/; this file parses flags, composes the model and the
 * collectors, draws the progress bar, prints the separation report and writes the file.
 *
 * A collector gathers one hook point, so each hook is one pass with a collector of its own. The
 * model server is started once (in-process) and kept: every later collector listens on the port
 * the first one got, and the server's tap client reconnects to it (its backoff starts at 100 ms),
 * which costs far less than loading and compiling a model per hook (seconds at d_model 512). An
 * external server (--upstream) is pointed at that same URL once, for the same reason.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import { z } from 'zod';
import { err } from '../common/errors.js';
import { writeTextAtomically } from '../common/json-file.js';
import { custom, decimal, integer, oneOf, parseCommand, text, type CommandSpec } from '../common/options.js';
import { ActivationCollector, type CollectServerInfo } from '../lab/collect.js';
import { readCorpus } from '../lab/corpus/read.js';
import { buildVectors, type BuildProgress, type BuildVectorsResult } from '../lab/vectors/build.js';
import { loadModel } from '../model/load.js';
import { startModelServer, type ModelServer } from '../model/server.js';
import { allHookPoints, type LoadedModel } from '../model/types.js';
import { writeVectorFile } from '../steering/formats.js';
import { makeSteeringVector } from '../steering/vector.js';
import { defaultModel } from './default-model.js';
import { StatusLine, type ToolReporting } from './status-line.js';

const PROMPTS = 'Prompts and model';
const VECTOR = 'Vector';

/** `--hooks blocks.1.hook_resid_post,blocks.2.hook_resid_post`: distinct names, in the order given. */
const hookList = custom(
  z.union([
    z.array(z.string().min(1)).min(1),
    z
      .string()
      .regex(/^[^,\s]+(,[^,\s]+)*$/)
      .transform((s) => [...new Set(s.split(','))]),
  ]),
  'hook point names separated by commas, e.g. blocks.2.hook_resid_post,blocks.3.hook_resid_post',
  'H[,H…]',
);

const vectorsBuildOptions = {
  positive: { type: text('FILE'), group: PROMPTS, required: true, help: 'prompts the vector steers towards: text (prompts separated by blank lines) or JSONL (docs/corpus.md)' },
  negative: { type: text('FILE'), group: PROMPTS, required: true, help: 'prompts it steers away from, same formats' },
  hooks: { type: hookList, group: PROMPTS, required: true, help: 'hook points to build a direction at (one pass over the prompts per hook)' },
  model: { type: text('FILE|DIR'), group: PROMPTS, defaultText: 'as for demo', help: 'model run in-process ($SAEGATE_DEMO_MODEL, else ../shared/models/stories260K, else a seeded synthetic model)' },
  tokenizer: { type: text('FILE'), group: PROMPTS, defaultText: 'beside the model', help: 'tokenizer file' },
  upstream: { type: custom(z.url(), 'a URL', 'URL'), group: PROMPTS, help: 'an external tap-speaking model server instead; start it with --tap <the URL this prints>' },
  tapPort: { type: integer(0, 65535), group: PROMPTS, defaultText: 'any', help: "port the collector's tap listens on with --upstream (kept for every hook's pass)" },
  concurrency: { type: integer(1), group: PROMPTS, default: 8, help: 'prompts in flight at once' },
  out: { type: text('FILE'), group: VECTOR, required: true, help: 'vector file to write (.safetensors; .json and .gguf also work)' },
  method: { type: oneOf(['mean-diff', 'pca']), group: VECTOR, default: 'mean-diff', help: 'difference of the centroids, or the first principal component of paired differences' },
  position: { type: oneOf(['last', 'mean']), group: VECTOR, default: 'last', help: "a prompt's row: its last token, or the mean over its tokens after BOS" },
  heldOut: { type: decimal({ min: 0, max: 0.9 }, 'F'), group: VECTOR, default: 0.25, help: 'fraction of each set held out for the separation report' },
  seed: { type: integer(0), group: VECTOR, default: 0, help: 'seed of the held-out split and of the PCA start' },
  report: { type: text('FILE'), group: VECTOR, help: 'also write the separation report as JSON' },
  device: { type: oneOf(['cpu', 'cuda']), group: PROMPTS, default: 'cpu', help: 'execution provider of the in-process model' },
  threads: { type: integer(1), group: PROMPTS, defaultText: 'one per core', help: 'onnxruntime threads of the in-process model' },
} as const;

export const vectorsBuildCommand = {
  name: 'vectors build',
  synopsis: 'saegate vectors build --positive FILE --negative FILE --hooks H[,H…] --out FILE.safetensors [options]',
  description:
    'Runs both prompt sets through the model (in-process, or any tap-speaking server with --upstream) and\n' +
    'writes, per hook, the raw difference of the positive and negative centroids (scale 1 moves the\n' +
    'negative centroid onto the positive one) or the first principal component of paired differences,\n' +
    'with metadata. Prints, per hook, how well the direction separates the held-out prompts\n' +
    "(projection means and spread, Cohen's d, AUROC). Deterministic under --seed.",
  options: vectorsBuildOptions,
  check: (f) => {
    if (f.model !== undefined && f.upstream !== undefined) return { option: 'upstream', message: 'give --model or --upstream, not both' };
    return undefined;
  },
} as const satisfies CommandSpec<typeof vectorsBuildOptions>;

function saegateVersion(): string {
  return (createRequire(import.meta.url)('../../package.json') as { version: string }).version;
}

function progressBar(p: BuildProgress): string {
  const width = 24;
  const filled = Math.round((width * p.done) / p.total);
  return `hook ${p.hookIndex + 1}/${p.hooks} ${p.hook} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${p.done}/${p.total} prompts`;
}

const fixed = (x: number | null, digits: number): string => (x === null ? 'n/a' : x.toFixed(digits));

/** The separation report as aligned lines: one row per hook. */
export function reportLines(result: BuildVectorsResult): string[] {
  const header = ['hook', 'norm', 'pos mean', 'pos sd', 'neg mean', 'neg sd', "Cohen's d", 'AUROC'];
  const rows = result.hooks.map((h) => [
    h.hook,
    fixed(h.norm, 4),
    fixed(h.separation.positive.mean, 4),
    fixed(h.separation.positive.std, 4),
    fixed(h.separation.negative.mean, 4),
    fixed(h.separation.negative.std, 4),
    fixed(h.separation.cohensD, 3),
    fixed(h.separation.auroc, 3),
  ]);
  const widths = header.map((title, c) => Math.max(title.length, ...rows.map((r) => r[c].length)));
  const line = (cells: string[]): string => cells.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  ');
  const evaluated = result.hooks[0]?.evaluatedOn === 'held-out' ? `${result.heldOut.positive} positive and ${result.heldOut.negative} negative held-out prompts (direction fitted on the others)` : 'the training prompts (too few prompts to hold any out)';
  return [`separation on ${evaluated}; projections on the unit direction:`, line(header), ...rows.map(line)];
}

interface HookPassesOptions {
  /** The in-process model; null with `upstream`. */
  loaded: LoadedModel | null;
  upstream: string | undefined;
  tapPort: number | undefined;
  device: 'cpu' | 'cuda';
  threads: number | undefined;
  log: (line: string) => void;
}

/** One collector per hook pass in turn, on one tap port, in front of one model server (see the file comment). */
class HookPasses {
  private collector: ActivationCollector | null = null;
  private server: ModelServer | null = null;
  private tapPort: number | undefined;
  /** The connected model server's hello, once the first pass connected. */
  info: CollectServerInfo | null = null;

  constructor(private readonly options: HookPassesOptions) {
    this.tapPort = options.tapPort;
  }

  /** Closes the previous pass's collector, opens one for `hook`, and waits for the model server to connect to it. */
  async open(hook: string): Promise<{ collector: ActivationCollector; upstream: string }> {
    const { options } = this;
    await this.collector?.close();
    this.collector = null;
    const collector = await ActivationCollector.start({ hook, tapPort: this.tapPort ?? 0, log: options.log });
    this.collector = collector;
    this.tapPort ??= Number(new URL(collector.tapUrl).port);
    if (options.loaded && this.server === null) {
      this.server = await startModelServer({ model: options.loaded.source, loaded: options.loaded, port: 0, tapUrl: collector.tapUrl, device: options.device, threads: options.threads, maxBatch: 8 });
    } else if (options.upstream !== undefined && this.info === null) {
      options.log(`waiting for the model server at ${options.upstream} to connect its tap to ${collector.tapUrl} (start it with --tap ${collector.tapUrl})`);
    }
    this.info = await collector.waitForServer(options.upstream !== undefined && this.info === null ? 120_000 : 30_000);
    return { collector, upstream: this.server?.url ?? options.upstream! };
  }

  async close(): Promise<void> {
    await this.server?.close();
    await this.collector?.close();
  }
}

/** Runs the command; returns the lines to print on stdout. */
export async function vectorsBuild(argv: string[], reporting: ToolReporting = {}): Promise<string[]> {
  const flags = parseCommand(vectorsBuildCommand, argv);
  const status = reporting.status ?? new StatusLine(process.stderr);
  const [positive, negative] = await Promise.all([readCorpus(flags.positive), readCorpus(flags.negative)]);

  // Hooks are checked before anything runs: in-process against the model's hook points here,
  // with --upstream against the server's hello once it connects (below).
  let loaded: LoadedModel | null = null;
  if (flags.upstream === undefined) {
    loaded = await loadModel({ model: flags.model ?? defaultModel(), tokenizer: flags.tokenizer });
    const available = allHookPoints(loaded.weights.config);
    for (const hook of flags.hooks) if (!available.includes(hook)) throw err('SAEGATE_ERR_UNKNOWN_HOOK', loaded.name, hook, available.join(', '));
  }

  const passes = new HookPasses({ loaded, upstream: flags.upstream, tapPort: flags.tapPort, device: flags.device, threads: flags.threads, log: (line) => status.log(line) });
  const result = await buildVectors({
    hooks: flags.hooks,
    positive: { source: flags.positive, documents: positive },
    negative: { source: flags.negative, documents: negative },
    method: flags.method,
    position: flags.position,
    heldOut: flags.heldOut,
    seed: flags.seed,
    async *collect(hook, documents) {
      const { collector, upstream } = await passes.open(hook);
      const missing = flags.hooks.find((h) => !passes.info!.hookPoints.includes(h));
      if (missing !== undefined) throw err('SAEGATE_ERR_UNKNOWN_HOOK', passes.info!.modelId, missing, passes.info!.hookPoints.join(', '));
      yield* collector.collect(documents, { upstream, concurrency: flags.concurrency, tooLong: 'skip' });
    },
    onProgress: (p) => {
      status.draw(progressBar(p));
      // Without a terminal there is no bar to redraw: one line per finished hook instead.
      if (!status.interactive && p.done === p.total) status.log(progressBar(p));
    },
  }).finally(async () => {
    status.clear();
    await passes.close();
  });
  const modelName = loaded?.name ?? passes.info?.modelId ?? null;

  // No creation time: the same prompts, model and seed give the same bytes.
  const vector = makeSteeringVector(flags.out, new Map(result.hooks.map((h) => [h.hook, h.direction])), {
    ...(modelName !== null && { model: modelName }),
    method: result.method,
    position: result.position,
    counts: result.counts,
    seed: flags.seed,
    saegateVersion: saegateVersion(),
    description: `${result.method} of '${path.basename(flags.positive)}' (positive) against '${path.basename(flags.negative)}' (negative)`,
  });
  writeVectorFile(flags.out, vector);
  if (flags.report !== undefined) {
    const report = {
      version: 1,
      vector: flags.out,
      id: vector.id,
      model: modelName,
      method: result.method,
      position: result.position,
      seed: flags.seed,
      counts: result.counts,
      heldOut: result.heldOut,
      hooks: result.hooks.map((h) => ({ hook: h.hook, norm: h.norm, evaluatedOn: h.evaluatedOn, ...h.separation })),
    };
    writeTextAtomically(flags.report, `${JSON.stringify(report, null, 2)}\n`, 'SAEGATE_ERR_CONFIG');
  }
  return [
    ...reportLines(result),
    `${flags.out}: ${result.hooks.length} direction(s) of ${result.dModel} values from ${result.counts.positive} positive and ${result.counts.negative} negative prompts, id ${vector.id.slice(0, 16)}…`,
  ];
}

