/**
 * Paths to the real llama2.c checkpoints shared beside the repository (../shared/models, read-only;
 * never copied into the repo) and temp-directory helpers. Tests that need the checkpoints use
 * `describe.skipIf(!hasSharedModels)` so a checkout without them still passes, visibly skipping.
 * Also writers for checkpoint files (llama2.c, Hugging Face) so loaders can be tested on weights
 * built in the test, corrupted on purpose, or converted between layouts.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeSafetensors, type SafetensorsWriteTensor } from '../../src/common/safetensors.js';
import type { ModelWeights } from '../../src/model/types.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The shared model directory; SAEGATE_SHARED_MODELS overrides the default ../shared/models. */
export const sharedModelsDir = process.env.SAEGATE_SHARED_MODELS ?? path.resolve(repoRoot, '..', 'shared', 'models');

/** stories260K: the TinyStories 260K-parameter model, its 512-token tokenizer and greedy reference output. */
export const stories260K = {
  dir: path.join(sharedModelsDir, 'stories260K'),
  model: path.join(sharedModelsDir, 'stories260K', 'stories260K.bin'),
  tokenizer: path.join(sharedModelsDir, 'stories260K', 'tok512.bin'),
  greedy: path.join(sharedModelsDir, 'stories260K', 'greedy-from-bos.json'),
} as const;

/** aidreams260K: a second 260K model with its own (different) 512-token vocabulary. */
export const aidreams260K = {
  dir: path.join(sharedModelsDir, 'aidreams260K'),
  model: path.join(sharedModelsDir, 'aidreams260K', 'aidreams260K.bin'),
  tokenizer: path.join(sharedModelsDir, 'aidreams260K', 'tok512.bin'),
} as const;

/** The 32000-token Llama 2 vocabulary in llama2.c format. */
export const llama2Tokenizer = path.join(sharedModelsDir, 'llama2c-tokenizer', 'tokenizer.bin');

/** True when the shared checkpoints are present. */
export const hasSharedModels = [stories260K.model, stories260K.tokenizer, stories260K.greedy].every((f) => fs.existsSync(f));

/** Why model tests were skipped, for a test title. */
export const sharedModelsSkipReason = `shared models not found at ${sharedModelsDir}`;

/**
 * A title for a suite that needs the shared models: unchanged when they are present, and carrying
 * the skip reason when they are not (vitest's skipIf has no reason of its own).
 */
export function needsSharedModels(title: string): string {
  return hasSharedModels ? title : `${title} [skipped: ${sharedModelsSkipReason}]`;
}

/** The greedy-from-bos.json reference: prompt ids, number of steps, generated ids and decoded text. */
export interface GreedyReference {
  prompt_ids: number[];
  steps: number;
  ids: number[];
  text: string;
}

/** Reads stories260K's greedy-from-bos.json. */
export function readGreedyReference(): GreedyReference {
  return JSON.parse(fs.readFileSync(stories260K.greedy, 'utf8')) as GreedyReference;
}

/** A fresh directory under the OS temp dir; remove it with `removeTempDir`. */
export function makeTempDir(prefix = 'saegate-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** Removes a directory made by `makeTempDir`, contents and all. */
export function removeTempDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
}

/**
 * Reorders the rows of a q or k projection from llama2.c's interleaved RoPE layout to Hugging
 * Face's rotate_half layout, as convert_llama_weights_to_hf.py's `permute` does:
 * `w.view(heads, headDim / 2, 2, dim).transpose(1, 2)`, i.e. new row (h, half, i) = old row (h, 2i + half).
 */
export function interleavedToHalfRows(w: Float32Array, nHeads: number, headDim: number, cols: number): Float32Array {
  const out = new Float32Array(w.length);
  const halfDim = headDim / 2;
  for (let h = 0; h < nHeads; h++) {
    for (let half = 0; half < 2; half++) {
      for (let i = 0; i < halfDim; i++) {
        const from = (h * headDim + 2 * i + half) * cols;
        const to = (h * headDim + half * halfDim + i) * cols;
        out.set(w.subarray(from, from + cols), to);
      }
    }
  }
  return out;
}

/** Serialises weights as a llama2.c v0 checkpoint (RoPE tables written as zeros; a negative vocab when untied). */
export function writeLlama2cCheckpoint(file: string, weights: ModelWeights): void {
  const c = weights.config;
  const header = Buffer.alloc(28);
  [c.dim, c.hiddenDim, c.nLayers, c.nHeads, c.nKvHeads, c.tiedEmbeddings ? c.vocabSize : -c.vocabSize, c.maxSeqLen].forEach((v, i) => header.writeInt32LE(v, i * 4));
  const parts: Float32Array[] = [weights.tokenEmbedding];
  const layerFields = ['attnNorm', 'wq', 'wk', 'wv', 'wo', 'ffnNorm', 'w1', 'w2', 'w3'] as const;
  for (const field of layerFields) for (const layer of weights.layers) parts.push(layer[field]);
  parts.push(weights.finalNorm, new Float32Array(c.maxSeqLen * (c.dim / c.nHeads)));
  if (weights.classifier) parts.push(weights.classifier);
  fs.writeFileSync(file, Buffer.concat([header, ...parts.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength))]));
}

/** Writes a llama2.c tokenizer.bin from pieces (UTF-8 text or raw bytes) and scores. */
export function writeLlama2cTokenizer(file: string, entries: readonly { piece: string | Uint8Array; score: number }[]): void {
  const chunks: Buffer[] = [];
  let maxLength = 1;
  for (const { piece, score } of entries) {
    const bytes = typeof piece === 'string' ? Buffer.from(piece, 'utf8') : Buffer.from(piece);
    maxLength = Math.max(maxLength, bytes.length);
    const head = Buffer.alloc(8);
    head.writeFloatLE(score, 0);
    head.writeInt32LE(bytes.length, 4);
    chunks.push(head, bytes);
  }
  const header = Buffer.alloc(4);
  header.writeInt32LE(maxLength, 0);
  fs.writeFileSync(file, Buffer.concat([header, ...chunks]));
}

/** Options of `writeHfCheckpoint`. */
export interface HfCheckpointOptions {
  /** Storage dtype of every tensor. Default F32. */
  dtype?: 'F32' | 'F16' | 'BF16';
  /** Split the tensors over this many shards with a model.safetensors.index.json. Default 1 (model.safetensors). */
  shards?: number;
  /** Extra or overriding config.json fields. */
  configOverrides?: Record<string, unknown>;
  /** Extra tensors to write (e.g. an unexpected bias). */
  extraTensors?: Record<string, SafetensorsWriteTensor>;
}

/**
 * Writes weights as a Hugging Face Llama directory (config.json + safetensors). Interleaved-RoPE
 * weights (llama2.c) get their q/k rows permuted to the rotate_half layout, as HF's converter does.
 */
export function writeHfCheckpoint(dir: string, weights: ModelWeights, options: HfCheckpointOptions = {}): void {
  const c = weights.config;
  const headDim = c.dim / c.nHeads;
  const dtype = options.dtype ?? 'F32';
  const permute = c.ropeStyle === 'interleaved';
  const tensors: Record<string, SafetensorsWriteTensor> = {};
  const put = (name: string, shape: number[], data: Float32Array): void => {
    tensors[name] = { dtype, shape, data };
  };
  const kvDim = c.nKvHeads * headDim;
  put('model.embed_tokens.weight', [c.vocabSize, c.dim], weights.tokenEmbedding);
  weights.layers.forEach((layer, l) => {
    const p = `model.layers.${l}`;
    put(`${p}.input_layernorm.weight`, [c.dim], layer.attnNorm);
    put(`${p}.self_attn.q_proj.weight`, [c.dim, c.dim], permute ? interleavedToHalfRows(layer.wq, c.nHeads, headDim, c.dim) : layer.wq);
    put(`${p}.self_attn.k_proj.weight`, [kvDim, c.dim], permute ? interleavedToHalfRows(layer.wk, c.nKvHeads, headDim, c.dim) : layer.wk);
    put(`${p}.self_attn.v_proj.weight`, [kvDim, c.dim], layer.wv);
    put(`${p}.self_attn.o_proj.weight`, [c.dim, c.dim], layer.wo);
    put(`${p}.post_attention_layernorm.weight`, [c.dim], layer.ffnNorm);
    put(`${p}.mlp.gate_proj.weight`, [c.hiddenDim, c.dim], layer.w1);
    put(`${p}.mlp.down_proj.weight`, [c.dim, c.hiddenDim], layer.w2);
    put(`${p}.mlp.up_proj.weight`, [c.hiddenDim, c.dim], layer.w3);
  });
  put('model.norm.weight', [c.dim], weights.finalNorm);
  if (weights.classifier) put('lm_head.weight', [c.vocabSize, c.dim], weights.classifier);
  Object.assign(tensors, options.extraTensors ?? {});

  const config = {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: c.dim,
    intermediate_size: c.hiddenDim,
    num_hidden_layers: c.nLayers,
    num_attention_heads: c.nHeads,
    num_key_value_heads: c.nKvHeads,
    vocab_size: c.vocabSize,
    max_position_embeddings: c.maxSeqLen,
    rms_norm_eps: c.normEps,
    rope_theta: c.ropeTheta,
    rope_scaling: null,
    attention_bias: false,
    mlp_bias: false,
    hidden_act: 'silu',
    tie_word_embeddings: c.tiedEmbeddings,
    torch_dtype: { F32: 'float32', F16: 'float16', BF16: 'bfloat16' }[dtype],
    ...options.configOverrides,
  };
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2));

  const shards = options.shards ?? 1;
  if (shards === 1) {
    writeSafetensors(path.join(dir, 'model.safetensors'), tensors, { format: 'pt' });
    return;
  }
  const names = Object.keys(tensors);
  const weightMap: Record<string, string> = {};
  for (let s = 0; s < shards; s++) {
    const file = `model-${String(s + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
    const part: Record<string, SafetensorsWriteTensor> = {};
    names.filter((_, i) => i % shards === s).forEach((name) => {
      part[name] = tensors[name];
      weightMap[name] = file;
    });
    writeSafetensors(path.join(dir, file), part, { format: 'pt' });
  }
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }, null, 2));
}

/** Options of `writeHfTokenizer`. */
export interface HfTokenizerOptions {
  /** tokenizer_config.json contents; omitted when null. Default: Llama-2 style `<s>` / `</s>`, add_bos_token true, a chat template. */
  tokenizerConfig?: Record<string, unknown> | null;
  /** generation_config.json contents; omitted when absent. */
  generationConfig?: Record<string, unknown>;
}

/**
 * Writes a small Llama-2-style tokenizer.json (sentencepiece BPE with byte fallback: ids 0–2
 * `<unk>`/`<s>`/`</s>`, 3–258 byte tokens, then "▁", letters and merges for "hello" and "world",
 * and a special `<|eot|>` at 277; 278 ids in all) and its config files into `dir`.
 */
export function writeHfTokenizer(dir: string, options: HfTokenizerOptions = {}): void {
  const vocab: Record<string, number> = { '<unk>': 0, '<s>': 1, '</s>': 2 };
  for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`] = 3 + b;
  const pieces = ['▁', 'h', 'e', 'l', 'o', 'w', 'r', 'd', 'he', 'll', 'hell', 'hello', '▁hello', 'wo', 'wor', 'worl', 'world', '▁world'];
  pieces.forEach((piece, i) => (vocab[piece] = 259 + i));
  const merges = ['h e', 'l l', 'he ll', 'hell o', '▁ hello', 'w o', 'wo r', 'wor l', 'worl d', '▁ world'];
  const special = (id: number, content: string) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  const tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [special(0, '<unk>'), special(1, '<s>'), special(2, '</s>'), special(277, '<|eot|>')],
    normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '▁' }, { type: 'Replace', pattern: { String: ' ' }, content: '▁' }] },
    pre_tokenizer: null,
    post_processor: null,
    decoder: {
      type: 'Sequence',
      decoders: [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }],
    },
    model: { type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, vocab, merges },
  };
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(tokenizer));
  const config =
    options.tokenizerConfig === undefined
      ? {
          bos_token: { content: '<s>', lstrip: false, normalized: false, rstrip: false, single_word: false, __type: 'AddedToken' },
          eos_token: '</s>',
          add_bos_token: true,
          clean_up_tokenization_spaces: false,
          chat_template: "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}<|eot|>{% endfor %}",
        }
      : options.tokenizerConfig;
  if (config !== null) fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(config));
  if (options.generationConfig) fs.writeFileSync(path.join(dir, 'generation_config.json'), JSON.stringify(options.generationConfig));
}
