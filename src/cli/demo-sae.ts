/**
 * The demo's SAE. `saegate demo` runs an SAE over the hook point it taps, so `npm start` shows the
 * SAE engine at work. No SAE is published for the embedded default model (stories260K, or the
 * synthetic fallback) and model files are never committed, so the first start trains one with the
 * project's own tools — `model sample` → `sae train` → `sae features` → `baseline record` →
 * `vectors build`, exactly as a user would run them — writes the example policies
 * (demo-policies.ts) and caches it all; later starts load it at once.
 *
 * The cache key is the model (its resolved path, size and modification time, or the synthetic
 * spec), the hook and the recipe version, so a changed model or recipe trains afresh. Training
 * writes into a temporary directory beside the target and renames it into place when complete: an
 * interrupted first start leaves no half-written SAE behind.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { isSaegateError } from '../common/errors.js';
import { readJsonFile } from '../common/json-file.js';
import { readFeatureReport } from '../lab/features/report.js';
import { baselineRecord } from './baseline-record.js';
import { writeDemoPolicies } from './demo-policies.js';
import { modelSample } from './model-sample.js';
import { vectorsBuild } from './vectors-build.js';
import { saeFeatures } from './sae-features.js';
import { saeTrain } from './sae-train.js';
import { QuietPhase, StatusLine, type ToolReporting } from './status-line.js';

/** Bump when the recipe changes, so caches of the old recipe are not reused. */
const RECIPE_VERSION = 2;

/** What the first start trains: small and quick (about a minute on two cores), still meaningful. */
export const DEMO_SAE_RECIPE = {
  documents: 200,
  /** Tokens per sampled document (fewer when the model's context is shorter). */
  maxTokens: 256,
  k: 8,
  steps: 400,
  lr: 8e-3,
  spliceDocuments: 20,
  seed: 0,
} as const;

/** Where saegate caches what it builds: $SAEGATE_CACHE_DIR, else $XDG_CACHE_HOME/saegate, else ~/.cache/saegate. */
export function cacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  if (env.SAEGATE_CACHE_DIR) return path.resolve(env.SAEGATE_CACHE_DIR);
  if (env.XDG_CACHE_HOME) return path.join(path.resolve(env.XDG_CACHE_HOME), 'saegate');
  return path.join(os.homedir(), '.cache', 'saegate');
}

/** The model's identity for the cache: the synthetic spec, or the resolved path with size and mtime. */
function modelIdentity(model: string): string {
  if (model.startsWith('synthetic:')) return model;
  try {
    const real = fs.realpathSync(model);
    const stat = fs.statSync(real);
    return `${real}\0${stat.size}\0${Math.round(stat.mtimeMs)}`;
  } catch {
    // Loading the model will name the problem; the key only has to be stable.
    return path.resolve(model);
  }
}

/** The cache directory of the demo SAE for this model and hook. */
export function demoSaeDir(model: string, hook: string, env: NodeJS.ProcessEnv = process.env): string {
  const key = createHash('sha256').update(`${RECIPE_VERSION}\0${hook}\0${modelIdentity(model)}`).digest('hex').slice(0, 16);
  return path.join(cacheRoot(env), 'demo-sae', key);
}

export interface DemoSae {
  /** The SAELens directory to load. */
  dir: string;
  /** features.html of the SAE, when it exists. */
  featuresPage: string | null;
  /** DIR/baseline.json (the drift baseline recorded on the SAE's corpus), when it exists. */
  baseline: string | null;
  /** DIR/policies (the example policies), when it exists. */
  policies: string | null;
}

/** The example prompt sets the demo's steering vector is built from (examples/prompts in the repository). */
const EXAMPLE_PROMPTS = path.resolve(import.meta.dirname, '..', '..', 'examples', 'prompts');

/** What a cached demo directory holds. */
function cached(dir: string): DemoSae {
  const existing = (file: string): string | null => (fs.existsSync(path.join(dir, file)) ? path.join(dir, file) : null);
  return { dir, featuresPage: featuresPage(dir), baseline: existing('baseline.json'), policies: existing('policies') };
}

/** Thrown when a signal stopped the first start's training; nothing was cached. */
export class DemoSaeInterrupted extends Error {
  constructor() {
    super('interrupted while training the demo SAE; nothing was cached');
  }
}

/** DIR/features.html when the SAE directory has one. */
export function featuresPage(dir: string): string | null {
  const page = path.join(dir, 'features.html');
  return fs.existsSync(page) ? page : null;
}

/** True when process `pid` exists (signal 0 checks without sending anything). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes the work directories of first starts that were killed mid-training (Ctrl-C during the
 * minute it takes): those whose process is gone. A live one belongs to a demo training right now.
 * Liveness is by pid on this host: a cache directory shared between hosts or pid namespaces could
 * see another host's live work as abandoned (that demo then fails at its rename and says so).
 */
function removeAbandoned(dir: string): void {
  const prefix = `${path.basename(dir)}.partial-`;
  for (const name of fs.readdirSync(path.dirname(dir))) {
    if (!name.startsWith(prefix)) continue;
    const pid = Number(name.slice(prefix.length).split('-')[0]);
    if (Number.isInteger(pid) && pid > 0 && alive(pid)) continue;
    fs.rmSync(path.join(path.dirname(dir), name), { recursive: true, force: true });
  }
}

/** The numbers of report.json the demo's summary line quotes. */
const trainReportSummary = z.object({
  heldOut: z.object({ fvu: z.number(), l0: z.number(), deadFraction: z.number() }),
  splice: z.object({ ceRecovered: z.number() }).nullable(),
});

/** One line on the SAE in `dir`, from its report.json. */
function summaryLine(dir: string): string {
  let parsed;
  try {
    parsed = trainReportSummary.safeParse(readJsonFile(path.join(dir, 'report.json'), 'SAEGATE_ERR_CONFIG'));
  } catch {
    parsed = null;
  }
  // The SAE is cached and usable either way; the line is a courtesy.
  if (!parsed?.success) return 'its report.json is unreadable';
  const { heldOut, splice } = parsed.data;
  return (
    `held-out FVU ${heldOut.fvu.toFixed(3)}, L0 ${heldOut.l0.toFixed(1)}, dead ${(100 * heldOut.deadFraction).toFixed(1)}%` +
    (splice ? `, ${(100 * splice.ceRecovered).toFixed(1)}% of CE loss recovered` : '')
  );
}

/**
 * The cached demo SAE for `model` at `hook`, trained first when there is none. The first start is
 * quiet: one progress line per phase (drawn in place on a terminal), a line as each phase ends, and
 * a summary; what the tools say along the way (their summaries, skipped documents) is kept and
 * printed only when a phase fails. The reports and the feature page name the cache directory they
 * end up in, not the work directory they are built in. Throws what the tools throw (typed errors)
 * when training fails; the cache is then left as it was.
 */
export async function ensureDemoSae(options: { model: string; hook: string; steerHook: string; contextLength: number; log: (line: string) => void }): Promise<DemoSae> {
  const { model, hook, log } = options;
  const dir = demoSaeDir(model, hook);
  if (fs.existsSync(path.join(dir, 'cfg.json'))) return cached(dir);
  const r = DEMO_SAE_RECIPE;
  log(
    `saegate demo: first start for this model, so training a demo SAE for ${hook} ` +
      `(${r.documents} sampled documents, TopK k = ${r.k}, ${r.steps} steps; about a minute). ` +
      `It is cached in ${dir}; later starts load it at once. --no-sae skips it.\n`,
  );
  fs.mkdirSync(path.dirname(dir), { recursive: true });
  removeAbandoned(dir);
  const work = fs.mkdtempSync(`${dir}.partial-${process.pid}-`);
  const corpus = path.join(work, 'corpus.jsonl');
  // Named as it will be once renamed: the baseline and the policies refer to the SAE by its directory's name.
  const sae = path.join(work, path.basename(dir));
  // Built in `work`, renamed to `dir`: the files name where they will be.
  const finalPath = (file: string): string => {
    if (file === corpus) return path.join(dir, 'corpus.jsonl');
    if (file === sae || file.startsWith(`${sae}${path.sep}`)) return path.join(dir, path.relative(sae, file));
    return file;
  };
  const line = new StatusLine(process.stderr);
  let phase = new QuietPhase(line, 'setup');
  let step = 'setup';
  /** Runs one phase of the recipe with its own progress line; one line when it ends. */
  const run = async <T>(label: string, tool: string, body: (reporting: ToolReporting) => Promise<T>): Promise<T> => {
    phase = new QuietPhase(line, `saegate demo: ${label}`);
    step = tool;
    const started = performance.now();
    const result = await body({ status: phase, finalPath });
    phase.clear();
    log(`saegate demo: ${label}: done in ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
    return result;
  };
  try {
    // The prompt is BOS alone: a document fills the rest of the context at most.
    const maxTokens = Math.max(1, Math.min(r.maxTokens, options.contextLength - 1));
    // model sample stops cleanly on Ctrl-C (SIGINT/SIGTERM); the later steps install no handler,
    // so a signal ends the process there and the next start removes the work directory.
    const sampled = await run('[1/5] sampling a corpus', 'model sample', (reporting) =>
      modelSample(['--model', model, '--n', String(r.documents), '--max-tokens', String(maxTokens), '--seed', String(r.seed), '--out', corpus], reporting),
    );
    if (!sampled) throw new DemoSaeInterrupted();
    await run('[2/5] training the SAE', 'sae train', (reporting) =>
      saeTrain(
        [
          '--corpus', corpus,
          '--model', model,
          '--hook', hook,
          '--k', String(r.k),
          '--steps', String(r.steps),
          '--lr', String(r.lr),
          '--seed', String(r.seed),
          '--splice-documents', String(r.spliceDocuments),
          '--checkpoint-every', '0',
          '--out', sae,
        ],
        reporting,
      ),
    );
    await run('[3/5] feature pages', 'sae features', (reporting) => saeFeatures(['--sae', sae, '--corpus', corpus, '--model', model], reporting));
    // Drift works from the first request: a baseline of the corpus the SAE was trained on.
    await run('[4/5] drift baseline', 'baseline record', (reporting) => baselineRecord(['--sae', sae, '--corpus', corpus, '--model', model, '--out', path.join(sae, 'baseline.json')], reporting));
    // The example steer policy's vector, from the prompt sets shipped in the repository.
    const prompts = { positive: path.join(EXAMPLE_PROMPTS, 'happy.txt'), negative: path.join(EXAMPLE_PROMPTS, 'sad.txt') };
    let haveVector = fs.existsSync(prompts.positive) && fs.existsSync(prompts.negative);
    if (haveVector) {
      try {
        await run('[5/5] steering vector (happy minus sad openings)', 'vectors build', (reporting) =>
          vectorsBuild(['--positive', prompts.positive, '--negative', prompts.negative, '--hooks', options.steerHook, '--position', 'last', '--model', model, '--out', path.join(sae, 'less-sad.safetensors')], reporting),
        );
      } catch (error) {
        // The SAE, its baseline and the watch policy are still worth having (a small synthetic
        // model's context can be too short for the prompt sets): no steer policy, said once.
        phase.clear();
        haveVector = false;
        log(`saegate demo: [5/5] steering vector skipped, so no example steer policy (${isSaegateError(error) ? error.message : String(error)})\n`);
      }
    }
    writeDemoPolicies(sae, path.basename(dir), readFeatureReport(path.join(sae, 'features.json')), haveVector ? { file: '../less-sad.safetensors', hook: options.steerHook } : null);
    step = 'caching';
    fs.renameSync(corpus, path.join(sae, 'corpus.jsonl'));
    try {
      fs.renameSync(sae, dir);
    } catch (error) {
      // Another demo finished first: use its SAE.
      if (!fs.existsSync(path.join(dir, 'cfg.json'))) throw error;
    }
  } catch (error) {
    phase.clear();
    // The tools' messages speak of their own flags; say which step of the demo's recipe it was,
    // with what the step said before it failed.
    if (!(error instanceof DemoSaeInterrupted)) {
      log(phase.logged.map((text) => `${text}\n`).join(''));
      log(`saegate demo: the demo SAE's '${step}' step failed; nothing was cached (the work directory ${work} is removed)\n`);
    }
    throw error;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  log(`saegate demo: demo SAE ready in ${dir}: ${summaryLine(dir)} (report.md, features.html, baseline.json, policies/)\n`);
  return cached(dir);
}
