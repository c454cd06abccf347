/**
 * One entry point for "give me a model": picks the loader from what `--model` names, finds the
 * tokenizer when none is given, and refuses a tokenizer that does not fit the model.
 *
 * - `synthetic:KEY=VALUE,…` — seeded random weights and the byte-level synthetic tokenizer;
 * - a directory (or its config.json / *.safetensors / index file) — a Hugging Face checkpoint,
 *   with tokenizer.json from the same directory;
 * - any other file — a llama2.c v0 checkpoint, with `tok{vocab}.bin` or `tokenizer.bin` beside it.
 *
 * Vocabulary rule: a llama2.c or synthetic tokenizer must have exactly the model's vocab_size
 * (llama2.c reads the tokenizer with the model's count, so any difference means the wrong file).
 * A Hugging Face tokenizer may be smaller than the embedding — checkpoints pad vocab_size to a
 * multiple of 64 or 128 — but never larger, or it could emit ids the model has no row for.
 */
import fs from 'node:fs';
import path from 'node:path';
import { err } from '../common/errors.js';
import { HfTokenizer, loadHfTokenizer } from './tokenizer/hf.js';
import { loadLlama2cTokenizer } from './tokenizer/llama2c.js';
import { syntheticTokenizer } from './tokenizer/synthetic.js';
import type { LoadedModel, ModelConfig, ModelWeights, Tokenizer } from './types.js';
import { loadHfWeights } from './weights/hf.js';
import { loadLlama2cWeights } from './weights/llama2c.js';
import { syntheticWeights, type SyntheticModelOptions } from './weights/synthetic.js';

/** What to load. */
export interface LoadModelOptions {
  /** A llama2.c `.bin` file, a Hugging Face directory, or `synthetic:dim=…,layers=…,…`. */
  model: string;
  /** Tokenizer file (llama2.c `.bin`, `tokenizer.json`, or a directory holding one). Default: found beside the model. */
  tokenizer?: string;
  /** Model name for the API. Default: the weight file's base name without extension (HF: the directory's name; synthetic: "synthetic"). */
  name?: string;
}

const SYNTHETIC_PREFIX = 'synthetic';

/**
 * Whether a model argument (or a LoadedModel's `source`) is a `synthetic:` spec: seeded random
 * weights, never trained, so its text is gibberish. The API and banners label such a model.
 */
export function isSyntheticModel(model: string): boolean {
  return model === SYNTHETIC_PREFIX || model.startsWith(`${SYNTHETIC_PREFIX}:`);
}

/** Keys of a `synthetic:` spec and the option each sets. */
const syntheticKeys: Record<string, keyof SyntheticModelOptions> = {
  dim: 'dim',
  hidden: 'hiddenDim',
  layers: 'nLayers',
  heads: 'nHeads',
  kv: 'nKvHeads',
  vocab: 'vocabSize',
  ctx: 'maxSeqLen',
  seed: 'seed',
  theta: 'ropeTheta',
  eps: 'normEps',
  std: 'initStd',
  tied: 'tiedEmbeddings',
  rope: 'ropeStyle',
};

/**
 * Parses `synthetic:dim=512,layers=8,heads=8,kv=4,hidden=1376,vocab=4096,ctx=512,seed=1` (every key
 * optional; seed defaults to 1; `tied=true|false`, `rope=interleaved|half`).
 */
export function parseSyntheticSpec(spec: string): SyntheticModelOptions {
  const options: SyntheticModelOptions = { seed: 1 };
  const body = spec.slice(SYNTHETIC_PREFIX.length).replace(/^:/, '');
  for (const pair of body.split(',').filter((p) => p.trim() !== '')) {
    const [key, value, ...rest] = pair.split('=').map((s) => s.trim());
    const field = syntheticKeys[key];
    if (!Object.hasOwn(syntheticKeys, key) || value === undefined || rest.length > 0) {
      throw err('SAEGATE_ERR_MODEL_CONFIG', spec, `'${pair}' is not KEY=VALUE with KEY one of ${Object.keys(syntheticKeys).join(', ')}`);
    }
    if (field === 'tiedEmbeddings') {
      if (value !== 'true' && value !== 'false') throw err('SAEGATE_ERR_MODEL_CONFIG', spec, `tied=${value}: expected true or false`);
      options.tiedEmbeddings = value === 'true';
    } else if (field === 'ropeStyle') {
      if (value !== 'interleaved' && value !== 'half') throw err('SAEGATE_ERR_MODEL_CONFIG', spec, `rope=${value}: expected interleaved or half`);
      options.ropeStyle = value;
    } else {
      const number = Number(value);
      if (value === '' || !Number.isFinite(number)) throw err('SAEGATE_ERR_MODEL_CONFIG', spec, `${key}=${value}: expected a number`);
      options[field] = number;
    }
  }
  return options;
}

/** Loads a tokenizer file by its kind: JSON or a directory is Hugging Face, anything else llama2.c. */
function loadTokenizerFile(location: string): Tokenizer {
  const isDirectory = fs.existsSync(location) && fs.statSync(location).isDirectory();
  return isDirectory || location.endsWith('.json') ? loadHfTokenizer(location) : loadLlama2cTokenizer(location);
}

/** Refuses a tokenizer whose vocabulary cannot be this model's (module comment for the rule). */
function checkVocabulary(tokenizer: Tokenizer, tokenizerSource: string, config: ModelConfig, modelSource: string): void {
  const allowSmaller = tokenizer instanceof HfTokenizer;
  const fits = allowSmaller ? tokenizer.vocabSize <= config.vocabSize : tokenizer.vocabSize === config.vocabSize;
  if (!fits) {
    const rule = allowSmaller ? 'at most' : 'exactly';
    throw err(
      'SAEGATE_ERR_TOKENIZER_MISMATCH',
      tokenizerSource,
      modelSource,
      `the tokenizer has ${tokenizer.vocabSize} tokens but the model's vocab_size is ${config.vocabSize} (must be ${rule} ${config.vocabSize})`,
    );
  }
}

/** Where a model argument points. */
type ModelKind = { kind: 'synthetic' } | { kind: 'hf'; directory: string } | { kind: 'llama2c'; file: string };

function classify(model: string): ModelKind {
  if (isSyntheticModel(model)) return { kind: 'synthetic' };
  let stat: fs.Stats;
  try {
    stat = fs.statSync(model);
  } catch {
    throw err('SAEGATE_ERR_MODEL_FILE', model, 'does not exist');
  }
  if (stat.isDirectory()) return { kind: 'hf', directory: model };
  const base = path.basename(model);
  if (base === 'config.json' || base.endsWith('.safetensors') || base.endsWith('.safetensors.index.json')) return { kind: 'hf', directory: path.dirname(model) };
  return { kind: 'llama2c', file: model };
}

/**
 * Loads weights and tokenizer. Errors: SAEGATE_ERR_MODEL_FILE / _MODEL_CONFIG / _SAFETENSORS from
 * the weight loaders, SAEGATE_ERR_TOKENIZER_FILE from the tokenizer loaders, and
 * SAEGATE_ERR_TOKENIZER_MISMATCH when the tokenizer's vocabulary does not fit the model's.
 * `tokenizer` is null only when none was given and none was found beside the model.
 */
export async function loadModel(options: LoadModelOptions): Promise<LoadedModel> {
  const target = classify(options.model);
  let weights: ModelWeights;
  let tokenizer: Tokenizer | null = null;
  let tokenizerSource: string | null = options.tokenizer ?? null;
  let name: string;
  let source: string;

  switch (target.kind) {
    case 'synthetic': {
      weights = syntheticWeights(parseSyntheticSpec(options.model));
      source = options.model;
      name = SYNTHETIC_PREFIX;
      if (tokenizerSource === null) tokenizer = syntheticTokenizer(weights.config.vocabSize);
      break;
    }
    case 'hf': {
      weights = loadHfWeights(target.directory);
      source = path.resolve(target.directory);
      name = path.basename(source);
      if (tokenizerSource === null && fs.existsSync(path.join(target.directory, 'tokenizer.json'))) tokenizerSource = path.join(target.directory, 'tokenizer.json');
      break;
    }
    case 'llama2c': {
      weights = loadLlama2cWeights(target.file);
      source = path.resolve(target.file);
      name = path.basename(source, path.extname(source));
      if (tokenizerSource === null) {
        const directory = path.dirname(target.file);
        const candidates = [`tok${weights.config.vocabSize}.bin`, 'tokenizer.bin'].map((f) => path.join(directory, f));
        tokenizerSource = candidates.find((f) => fs.existsSync(f)) ?? null;
      }
      break;
    }
  }

  if (tokenizerSource !== null) {
    tokenizer = loadTokenizerFile(tokenizerSource);
    checkVocabulary(tokenizer, tokenizerSource, weights.config, source);
  }
  return { weights, tokenizer, name: options.name ?? name, source };
}
