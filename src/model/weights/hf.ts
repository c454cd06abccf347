/**
 * Loader for Hugging Face Llama-style checkpoints: a directory with `config.json` and
 * `model.safetensors` (or shards listed in `model.safetensors.index.json`).
 *
 * The runtime implements exactly one architecture (pre-norm RMSNorm, RoPE, GQA attention without
 * biases, SwiGLU), so config.json is read defensively: a field that would change the math — RoPE
 * scaling, biases, sliding windows, soft-capping, multipliers, quantization — is refused with
 * SAEGATE_ERR_MODEL_CONFIG naming the field, instead of being ignored and producing a model that
 * loads fine and computes something else. Unknown fields that do not affect the forward pass
 * (torch_dtype, architectures, pretraining_tp, …) are fine.
 *
 * Hugging Face stores q_proj/k_proj rows in the `rotate_half` order (convert_llama_weights_to_hf
 * permutes Meta's interleaved rows), hence ropeStyle 'half'; no un-permuting is needed.
 */
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { err } from '../../common/errors.js';
import { SafetensorsFile } from '../../common/safetensors.js';
import type { LayerWeights, ModelConfig, ModelWeights } from '../types.js';
import { architectureProblem, firstNonFinite } from './checks.js';

const positiveInt = z.number().int().positive();

const configSchema = z.looseObject({
  model_type: z.string(),
  hidden_size: positiveInt,
  intermediate_size: positiveInt,
  num_hidden_layers: positiveInt,
  num_attention_heads: positiveInt,
  num_key_value_heads: positiveInt.nullish(),
  vocab_size: positiveInt,
  max_position_embeddings: positiveInt,
  rms_norm_eps: z.number().positive(),
  rope_theta: z.number().positive().nullish(),
  tie_word_embeddings: z.boolean().nullish(),
  head_dim: positiveInt.nullish(),
  hidden_act: z.string().nullish(),
});

/** A RoPE config that only restates the default (no scaling). */
function isDefaultRope(value: unknown): boolean {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const entries = Object.entries(value).filter(([key]) => key !== 'rope_theta');
  return entries.length > 0 && entries.every(([key, v]) => (key === 'rope_type' || key === 'type') && v === 'default');
}

/**
 * Fields that change the forward pass when set. Each check returns why the value is unsupported,
 * or null when the value is absent or harmless.
 */
const unsupportedFields: [field: string, check: (value: unknown) => string | null][] = [
  ['rope_scaling', (v) => (v == null || isDefaultRope(v) ? null : 'RoPE scaling changes the rotary frequencies')],
  ['rope_parameters', (v) => (v == null || isDefaultRope(v) ? null : 'RoPE scaling changes the rotary frequencies')],
  ['partial_rotary_factor', (v) => (v == null || v === 1 ? null : 'partial rotary embeddings')],
  ['attention_bias', (v) => (v === true ? 'q/k/v/o projection biases' : null)],
  ['mlp_bias', (v) => (v === true ? 'MLP projection biases' : null)],
  ['sliding_window', (v) => (v == null ? null : 'sliding-window attention')],
  ['use_sliding_window', (v) => (v === true ? 'sliding-window attention' : null)],
  ['attn_logit_softcapping', (v) => (v == null ? null : 'attention logit soft-capping')],
  ['final_logit_softcapping', (v) => (v == null ? null : 'final logit soft-capping')],
  ['query_pre_attn_scalar', (v) => (v == null ? null : 'a non-default attention scale')],
  ['embedding_multiplier', (v) => (v == null || v === 1 ? null : 'a scaled embedding')],
  ['residual_multiplier', (v) => (v == null || v === 1 ? null : 'a scaled residual')],
  ['attention_multiplier', (v) => (v == null ? null : 'a non-default attention scale')],
  ['logits_scaling', (v) => (v == null || v === 1 ? null : 'scaled logits')],
  ['num_local_experts', (v) => (v == null ? null : 'mixture of experts')],
  ['num_experts', (v) => (v == null ? null : 'mixture of experts')],
  ['no_rope_layers', (v) => (v == null ? null : 'layers without RoPE')],
  ['quantization_config', (v) => (v == null ? null : 'quantized weights')],
];

/**
 * Parses and checks a config.json object; `file` is for error messages. Exported for tests and
 * tools that want the ModelConfig without loading weights.
 */
export function parseHfConfig(raw: unknown, file: string): ModelConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw err('SAEGATE_ERR_MODEL_CONFIG', file, 'not a JSON object');
  const fields = raw as Record<string, unknown>;
  const modelType = fields.model_type;
  if (modelType !== 'llama' && modelType !== 'mistral') {
    throw err('SAEGATE_ERR_MODEL_CONFIG', file, `model_type ${JSON.stringify(modelType)} is not supported (expected 'llama', or 'mistral' without sliding_window)`);
  }
  for (const [field, check] of unsupportedFields) {
    const problem = check(fields[field]);
    if (problem) throw err('SAEGATE_ERR_MODEL_CONFIG', file, `field '${field}' = ${JSON.stringify(fields[field])} is not supported (${problem})`);
  }
  const result = configSchema.safeParse(raw);
  if (!result.success) {
    const issue = result.error.issues[0];
    throw err('SAEGATE_ERR_MODEL_CONFIG', file, `field '${issue.path.join('.')}': ${issue.message}`);
  }
  const c = result.data;
  const hiddenAct = c.hidden_act ?? 'silu';
  if (hiddenAct !== 'silu') throw err('SAEGATE_ERR_MODEL_CONFIG', file, `field 'hidden_act' = ${JSON.stringify(hiddenAct)} is not supported (only 'silu', i.e. SwiGLU)`);
  if (c.head_dim != null && c.head_dim * c.num_attention_heads !== c.hidden_size) {
    throw err('SAEGATE_ERR_MODEL_CONFIG', file, `field 'head_dim' = ${c.head_dim} is not supported (must equal hidden_size / num_attention_heads = ${c.hidden_size / c.num_attention_heads})`);
  }
  // transformers v5 moves rope_theta into rope_parameters; a default-type entry may carry it.
  const ropeParameters = fields.rope_parameters as { rope_theta?: unknown } | null | undefined;
  const nestedTheta = typeof ropeParameters?.rope_theta === 'number' ? ropeParameters.rope_theta : null;
  const config: ModelConfig = {
    dim: c.hidden_size,
    hiddenDim: c.intermediate_size,
    nLayers: c.num_hidden_layers,
    nHeads: c.num_attention_heads,
    nKvHeads: c.num_key_value_heads ?? c.num_attention_heads,
    vocabSize: c.vocab_size,
    maxSeqLen: c.max_position_embeddings,
    normEps: c.rms_norm_eps,
    ropeTheta: c.rope_theta ?? nestedTheta ?? 10000,
    ropeStyle: 'half',
    // LlamaConfig and MistralConfig both default to untied.
    tiedEmbeddings: c.tie_word_embeddings ?? false,
  };
  const problem = architectureProblem(config);
  if (problem) throw err('SAEGATE_ERR_MODEL_CONFIG', file, problem);
  return config;
}

/** Reads tensors by name across one file or several shards. */
class TensorSource {
  readonly #files = new Map<string, SafetensorsFile>();
  /** Tensor name → file path. */
  readonly locations = new Map<string, string>();

  constructor(directory: string) {
    const single = path.join(directory, 'model.safetensors');
    const index = path.join(directory, 'model.safetensors.index.json');
    try {
      if (fs.existsSync(index)) {
        this.#openIndex(directory, index);
      } else if (fs.existsSync(single)) {
        for (const name of this.#open(single).tensors.keys()) this.locations.set(name, single);
      } else {
        throw err('SAEGATE_ERR_MODEL_FILE', directory, 'no model.safetensors or model.safetensors.index.json in the directory (only safetensors checkpoints are supported)');
      }
    } catch (error) {
      // Shards opened before a bad one would otherwise leak their descriptors.
      this.close();
      throw error;
    }
  }

  #open(file: string): SafetensorsFile {
    let opened = this.#files.get(file);
    if (!opened) {
      opened = SafetensorsFile.open(file);
      this.#files.set(file, opened);
    }
    return opened;
  }

  #openIndex(directory: string, index: string): void {
    let parsed: unknown;
    try {
      parsed = JSON.parse(fs.readFileSync(index, 'utf8'));
    } catch (cause) {
      throw err('SAEGATE_ERR_MODEL_FILE', index, `not valid JSON: ${(cause as Error).message}`);
    }
    const result = z.object({ weight_map: z.record(z.string(), z.string()) }).safeParse(parsed);
    if (!result.success) throw err('SAEGATE_ERR_MODEL_FILE', index, 'weight_map is missing or not an object of file names');
    for (const [name, shard] of Object.entries(result.data.weight_map)) {
      // Shards live beside the index; a path that leaves the directory is not a checkpoint.
      if (shard !== path.basename(shard)) throw err('SAEGATE_ERR_MODEL_FILE', index, `shard '${shard}' of tensor '${name}' is not a file name in the same directory`);
      const file = path.join(directory, shard);
      if (!this.#open(file).has(name)) throw err('SAEGATE_ERR_MODEL_FILE', file, `tensor '${name}' listed in ${path.basename(index)} is not in the shard`);
      this.locations.set(name, file);
    }
  }

  read(name: string, expectedShape: readonly number[]): Float32Array {
    const file = this.locations.get(name);
    if (file === undefined) throw err('SAEGATE_ERR_MODEL_FILE', [...this.#files.keys()].join(', '), `tensor '${name}' is missing`);
    const opened = this.#open(file);
    const info = opened.info(name);
    if (info.shape.length !== expectedShape.length || info.shape.some((d, i) => d !== expectedShape[i])) {
      throw err('SAEGATE_ERR_MODEL_FILE', file, `tensor '${name}' has shape [${info.shape.join(', ')}], expected [${expectedShape.join(', ')}] from config.json`);
    }
    const values = opened.getFloat32(name);
    const bad = firstNonFinite(values);
    if (bad >= 0) throw err('SAEGATE_ERR_MODEL_FILE', file, `tensor '${name}' has a non-finite value (${values[bad]}) at element ${bad}`);
    return values;
  }

  close(): void {
    for (const opened of this.#files.values()) opened.close();
  }
}

/** Tensor names that may appear without being used: buffers older exports saved by mistake. */
const ignorableTensor = /^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$/;

/**
 * Loads a Hugging Face Llama-style directory. SAEGATE_ERR_MODEL_CONFIG for config.json problems,
 * SAEGATE_ERR_MODEL_FILE for a missing/unexpected tensor, a shape that disagrees with the config
 * (naming the tensor, expected and actual shape) or non-finite weights, SAEGATE_ERR_SAFETENSORS for
 * a malformed safetensors file.
 */
export function loadHfWeights(directory: string): ModelWeights {
  const configFile = path.join(directory, 'config.json');
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(configFile, 'utf8'));
  } catch (cause) {
    const problem = (cause as NodeJS.ErrnoException).code === 'ENOENT' ? 'does not exist' : `cannot be read as JSON: ${(cause as Error).message}`;
    throw err('SAEGATE_ERR_MODEL_CONFIG', configFile, problem);
  }
  const config = parseHfConfig(raw, configFile);
  const { dim, hiddenDim, nLayers, vocabSize } = config;
  const kvDim = (config.nKvHeads * dim) / config.nHeads;

  const source = new TensorSource(directory);
  try {
    const expected = new Set<string>(['model.embed_tokens.weight', 'model.norm.weight']);
    // A tied checkpoint may still carry lm_head.weight (transformers ties it at load); it is unused.
    if (!config.tiedEmbeddings || source.locations.has('lm_head.weight')) expected.add('lm_head.weight');
    const layerTensors = ['input_layernorm', 'post_attention_layernorm', 'self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj'];
    for (let l = 0; l < nLayers; l++) for (const t of layerTensors) expected.add(`model.layers.${l}.${t}.weight`);
    for (const name of source.locations.keys()) {
      if (!expected.has(name) && !ignorableTensor.test(name)) {
        throw err('SAEGATE_ERR_MODEL_FILE', source.locations.get(name), `unexpected tensor '${name}': not part of a ${nLayers}-layer Llama model without biases`);
      }
    }

    const layer = (l: number, t: string, shape: number[]): Float32Array => source.read(`model.layers.${l}.${t}.weight`, shape);
    const layers: LayerWeights[] = Array.from({ length: nLayers }, (_, l) => ({
      attnNorm: layer(l, 'input_layernorm', [dim]),
      wq: layer(l, 'self_attn.q_proj', [dim, dim]),
      wk: layer(l, 'self_attn.k_proj', [kvDim, dim]),
      wv: layer(l, 'self_attn.v_proj', [kvDim, dim]),
      wo: layer(l, 'self_attn.o_proj', [dim, dim]),
      ffnNorm: layer(l, 'post_attention_layernorm', [dim]),
      w1: layer(l, 'mlp.gate_proj', [hiddenDim, dim]),
      w2: layer(l, 'mlp.down_proj', [dim, hiddenDim]),
      w3: layer(l, 'mlp.up_proj', [hiddenDim, dim]),
    }));
    return {
      config,
      tokenEmbedding: source.read('model.embed_tokens.weight', [vocabSize, dim]),
      layers,
      finalNorm: source.read('model.norm.weight', [dim]),
      classifier: config.tiedEmbeddings ? null : source.read('lm_head.weight', [vocabSize, dim]),
    };
  } finally {
    source.close();
  }
}
