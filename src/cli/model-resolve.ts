/**
 * Which model `npm start` (and the lab commands' default) runs, in order:
 *
 * 1. `--model FILE` / `SAEGATE_MODEL` (or the older `SAEGATE_DEMO_MODEL`);
 * 2. a local models folder: `SAEGATE_MODELS_DIR`, then `../shared/models` beside a development
 *    checkout — `stories260K/stories260K.bin` (+ its `tok512.bin`) inside it;
 * 3. the cache (`<cache>/models/stories260K/`), verified by sha256;
 * 4. a download of stories260K (MIT, llama2.c's `karpathy/tinyllamas` model repository) into the
 *    cache, verified by sha256 and written atomically, with a progress callback;
 * 5. offline (the download failed): a seeded synthetic model, labelled as such, and one line saying
 *    why.
 *
 * The two hashes are of the files that reproduce llama2.c's documented greedy output.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { downloadVerified, hasVerifiedFile } from '../common/download.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export const SYNTHETIC_DEFAULT_MODEL = 'synthetic:dim=64,layers=4,heads=4,kv=2,hidden=172,vocab=512,ctx=512,seed=1';

/** stories260K's public home and the sha256 of each file. */
export const STORIES260K = {
  base: 'https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K',
  files: {
    'stories260K.bin': 'b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696',
    'tok512.bin': '037cb335abb25d1fa9e8ecae30ed2a3a8ace9302862ebcdc05d51a6bbb10c312',
  },
} as const;

export type ModelOrigin = 'flag' | 'env' | 'models-dir' | 'shared' | 'cache' | 'download' | 'synthetic';

export interface ResolvedModel {
  /** Model path (or `synthetic:…` spec) for `loadModel`. */
  model: string;
  /** Tokenizer beside it, when there is one. */
  tokenizer: string | null;
  origin: ModelOrigin;
  /** True for the synthetic fallback: banners, the live view and /v1/models say so. */
  synthetic: boolean;
  /** Why the synthetic fallback was used (the download error), in one line. */
  note?: string;
}

export interface ResolveModelOptions {
  /** `--model`. */
  flag?: string;
  env?: NodeJS.ProcessEnv;
  /** saegate's cache directory. */
  cacheDir: string;
  /** Base URL of the stories260K files (tests point it at a local server). */
  baseUrl?: string;
  /** Download progress, bytes. */
  onProgress?: (file: string, received: number, total: number | null) => void;
  /** Skip the download (and the network) entirely. */
  offline?: boolean;
  /** The development checkout's models folder; null skips it. Default `../shared/models` beside the repository. */
  sharedModelsDir?: string | null;
}

function tokenizerBeside(model: string): string | null {
  const tok = path.join(path.dirname(model), 'tok512.bin');
  return fs.existsSync(tok) ? tok : null;
}

function inFolder(folder: string): string | null {
  const model = path.join(folder, 'stories260K', 'stories260K.bin');
  return fs.existsSync(model) ? model : null;
}

/** Resolves the default model (see the module comment for the order). */
export async function resolveDefaultModel(options: ResolveModelOptions): Promise<ResolvedModel> {
  const env = options.env ?? process.env;
  if (options.flag) return { model: options.flag, tokenizer: null, origin: 'flag', synthetic: options.flag.startsWith('synthetic:') };
  const fromEnv = env.SAEGATE_MODEL ?? env.SAEGATE_DEMO_MODEL;
  if (fromEnv) return { model: fromEnv, tokenizer: null, origin: 'env', synthetic: fromEnv.startsWith('synthetic:') };
  if (env.SAEGATE_MODELS_DIR) {
    const model = inFolder(path.resolve(env.SAEGATE_MODELS_DIR));
    if (model) return { model, tokenizer: tokenizerBeside(model), origin: 'models-dir', synthetic: false };
  }
  const sharedDir = options.sharedModelsDir === undefined ? path.join(repoRoot, '..', 'shared', 'models') : options.sharedModelsDir;
  const shared = sharedDir === null ? null : inFolder(sharedDir);
  if (shared) return { model: shared, tokenizer: tokenizerBeside(shared), origin: 'shared', synthetic: false };

  const cacheFolder = path.join(options.cacheDir, 'models', 'stories260K');
  const cached = Object.fromEntries(Object.keys(STORIES260K.files).map((name) => [name, path.join(cacheFolder, name)])) as Record<keyof typeof STORIES260K.files, string>;
  const verified = await Promise.all(Object.entries(STORIES260K.files).map(([name, sha]) => hasVerifiedFile(path.join(cacheFolder, name), sha)));
  if (verified.every(Boolean)) return { model: cached['stories260K.bin'], tokenizer: cached['tok512.bin'], origin: 'cache', synthetic: false };

  if (!options.offline) {
    try {
      for (const [name, sha] of Object.entries(STORIES260K.files)) {
        const target = path.join(cacheFolder, name);
        if (await hasVerifiedFile(target, sha)) continue;
        await downloadVerified({
          url: `${options.baseUrl ?? STORIES260K.base}/${name}`,
          target,
          sha256: sha,
          timeoutMs: 60_000,
          onProgress: (received, total) => options.onProgress?.(name, received, total),
        });
      }
      return { model: cached['stories260K.bin'], tokenizer: cached['tok512.bin'], origin: 'download', synthetic: false };
    } catch (error) {
      return { model: SYNTHETIC_DEFAULT_MODEL, tokenizer: null, origin: 'synthetic', synthetic: true, note: (error as Error).message };
    }
  }
  return { model: SYNTHETIC_DEFAULT_MODEL, tokenizer: null, origin: 'synthetic', synthetic: true, note: 'offline: no download attempted' };
}

/**
 * The one line `npm start` prints when it fell back to the synthetic model: why (the download's
 * error, whitespace collapsed so a multi-line message stays one line), that the model writes
 * gibberish, and how to run stories260K without the network. Null for any other model.
 */
export function fallbackNotice(resolved: ResolvedModel): string | null {
  if (resolved.origin !== 'synthetic') return null;
  const why = (resolved.note ?? 'no download attempted').replace(/\s+/g, ' ').trim();
  return (
    `no real model (${why}); using a seeded synthetic model that writes gibberish, labelled SYNTHETIC. ` +
    'To run stories260K offline, put stories260K.bin and tok512.bin in DIR/stories260K/ and set SAEGATE_MODELS_DIR=DIR'
  );
}
