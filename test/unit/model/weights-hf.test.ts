import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SafetensorsFile } from '../../../src/common/safetensors.js';
import type { ModelWeights } from '../../../src/model/types.js';
import { loadHfWeights, parseHfConfig } from '../../../src/model/weights/hf.js';
import { loadLlama2cWeights } from '../../../src/model/weights/llama2c.js';
import { syntheticWeights } from '../../../src/model/weights/synthetic.js';
import { expectSaegateError } from '../../helpers/errors.js';
import { hasSharedModels, needsSharedModels, makeTempDir, removeTempDir, stories260K, writeHfCheckpoint } from '../../helpers/fixtures.js';
import { argmax, referenceForward } from '../../helpers/reference-forward.js';

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** Largest logit difference over all positions of a prompt, plus whether every argmax agrees. */
function compareLogits(a: ModelWeights, b: ModelWeights, prompt: number[]): { worst: number; sameArgmax: boolean } {
  const ra = referenceForward(a, prompt);
  const rb = referenceForward(b, prompt);
  let worst = 0;
  let sameArgmax = true;
  ra.logits.forEach((row, p) => {
    worst = Math.max(worst, maxAbsDiff(row, rb.logits[p]));
    sameArgmax &&= argmax(row) === argmax(rb.logits[p]);
  });
  return { worst, sameArgmax };
}

const baseConfig = {
  model_type: 'llama',
  hidden_size: 64,
  intermediate_size: 172,
  num_hidden_layers: 2,
  num_attention_heads: 8,
  num_key_value_heads: 4,
  vocab_size: 512,
  max_position_embeddings: 256,
  rms_norm_eps: 1e-5,
};

describe('Hugging Face config.json', () => {
  it('maps the fields to a ModelConfig with the documented defaults', () => {
    expect(parseHfConfig({ ...baseConfig, num_key_value_heads: undefined }, 'config.json')).toEqual({
      dim: 64,
      hiddenDim: 172,
      nLayers: 2,
      nHeads: 8,
      nKvHeads: 8,
      vocabSize: 512,
      maxSeqLen: 256,
      normEps: 1e-5,
      ropeTheta: 10000,
      ropeStyle: 'half',
      tiedEmbeddings: false,
    });
  });

  it.each([
    ['rope_scaling null and harmless extra fields', { rope_scaling: null, torch_dtype: 'bfloat16', architectures: ['LlamaForCausalLM'], pretraining_tp: 1, bos_token_id: 1 }],
    ['a default-type rope_scaling', { rope_scaling: { rope_type: 'default' } }],
    ['mistral without a sliding window', { model_type: 'mistral', sliding_window: null }],
    ['attention_bias and mlp_bias false, head_dim consistent, hidden_act silu', { attention_bias: false, mlp_bias: false, head_dim: 8, hidden_act: 'silu' }],
  ])('accepts %s', (_name, overrides) => {
    expect(parseHfConfig({ ...baseConfig, ...overrides }, 'config.json').dim).toBe(64);
  });

  it('takes rope_theta from the top level or from a default-type rope_parameters', () => {
    expect(parseHfConfig({ ...baseConfig, rope_theta: 500000 }, 'c').ropeTheta).toBe(500000);
    expect(parseHfConfig({ ...baseConfig, rope_parameters: { rope_type: 'default', rope_theta: 1e6 } }, 'c').ropeTheta).toBe(1e6);
    expect(parseHfConfig({ ...baseConfig, tie_word_embeddings: true }, 'c').tiedEmbeddings).toBe(true);
  });

  it.each([
    ['rope_scaling', { rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 } }],
    ['rope_scaling', { rope_scaling: { type: 'linear', factor: 2 } }],
    ['rope_parameters', { rope_parameters: { rope_type: 'yarn', factor: 4, rope_theta: 10000 } }],
    ['attention_bias', { attention_bias: true }],
    ['mlp_bias', { mlp_bias: true }],
    ['sliding_window', { model_type: 'mistral', sliding_window: 4096 }],
    ['sliding_window', { sliding_window: 4096 }],
    ['hidden_act', { hidden_act: 'gelu' }],
    ['head_dim', { head_dim: 16 }],
    ['partial_rotary_factor', { partial_rotary_factor: 0.5 }],
    ['quantization_config', { quantization_config: { quant_method: 'gptq' } }],
    ['num_local_experts', { num_local_experts: 8 }],
    ['final_logit_softcapping', { final_logit_softcapping: 30 }],
    ['model_type', { model_type: 'gemma' }],
    ['hidden_size', { hidden_size: undefined }],
    ['rms_norm_eps', { rms_norm_eps: -1 }],
    ['num_key_value_heads', { num_key_value_heads: 3 }],
  ])('rejects %s with SAEGATE_ERR_MODEL_CONFIG naming the file and the field', (field, overrides) => {
    const message = field === 'num_key_value_heads' ? 'nKvHeads 3' : field;
    expectSaegateError(() => parseHfConfig({ ...baseConfig, ...overrides }, '/models/x/config.json'), 'SAEGATE_ERR_MODEL_CONFIG', '/models/x/config.json', message);
  });
});

describe('Hugging Face checkpoint loader on written checkpoints', () => {
  let root: string;
  const weights = syntheticWeights({ dim: 32, hiddenDim: 88, nLayers: 2, nHeads: 4, nKvHeads: 2, vocabSize: 300, maxSeqLen: 64, tiedEmbeddings: false, seed: 5 });
  const prompt = [1, 17, 250, 3, 99, 42, 42, 7];
  beforeAll(() => {
    root = makeTempDir();
  });
  afterAll(() => removeTempDir(root));

  it('loads rotate_half-permuted weights that compute the same logits as the interleaved original', () => {
    const dir = path.join(root, 'f32');
    writeHfCheckpoint(dir, weights);
    const loaded = loadHfWeights(dir);
    expect(loaded.config).toEqual({ ...weights.config, ropeStyle: 'half' });
    expect(loaded.tokenEmbedding).toEqual(weights.tokenEmbedding);
    expect(loaded.classifier).toEqual(weights.classifier);
    expect(loaded.layers[1].w2).toEqual(weights.layers[1].w2);
    // q rows really were permuted: the HF tensor differs from the interleaved one.
    expect(loaded.layers[0].wq).not.toEqual(weights.layers[0].wq);
    const { worst, sameArgmax } = compareLogits(weights, loaded, prompt);
    expect(worst).toBeLessThan(1e-9);
    expect(sameArgmax).toBe(true);
  });

  it('loads sharded checkpoints through model.safetensors.index.json bit for bit', () => {
    const single = loadHfWeights(path.join(root, 'f32'));
    const dir = path.join(root, 'sharded');
    writeHfCheckpoint(dir, weights, { shards: 3 });
    expect(fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors'))).toHaveLength(3);
    expect(loadHfWeights(dir)).toEqual(single);
  });

  it.each([
    ['F16', 2e-3],
    ['BF16', 2e-2],
  ] as const)('loads %s tensors into f32 close to the original', (dtype, tolerance) => {
    const dir = path.join(root, dtype);
    writeHfCheckpoint(dir, weights, { dtype });
    const st = SafetensorsFile.open(path.join(dir, 'model.safetensors'));
    expect(st.info('model.norm.weight').dtype).toBe(dtype);
    st.close();
    const loaded = loadHfWeights(dir);
    expect(maxAbsDiff(loaded.tokenEmbedding, weights.tokenEmbedding)).toBeLessThan(dtype === 'F16' ? 1e-4 : 1e-3);
    const { worst } = compareLogits(weights, loaded, prompt);
    expect(worst).toBeLessThan(tolerance);
  });

  it('ignores lm_head.weight in a tied checkpoint and stale rotary inv_freq buffers', () => {
    const tied = syntheticWeights({ ...weights.config, tiedEmbeddings: true, seed: 6 });
    const dir = path.join(root, 'tied');
    writeHfCheckpoint(dir, tied, {
      extraTensors: {
        'lm_head.weight': { dtype: 'F32', shape: [300, 32], data: tied.tokenEmbedding },
        'model.layers.0.self_attn.rotary_emb.inv_freq': { dtype: 'F32', shape: [4], data: new Float32Array(4) },
      },
    });
    const loaded = loadHfWeights(dir);
    expect(loaded.config.tiedEmbeddings).toBe(true);
    expect(loaded.classifier).toBeNull();
  });

  it('rejects a tensor whose shape disagrees with config.json, naming it with both shapes', () => {
    const dir = path.join(root, 'shape');
    writeHfCheckpoint(dir, weights, { configOverrides: { intermediate_size: 96 } });
    expectSaegateError(() => loadHfWeights(dir), 'SAEGATE_ERR_MODEL_FILE', 'model.safetensors', "'model.layers.0.mlp.gate_proj.weight'", 'shape [88, 32]', 'expected [96, 32]');
  });

  it('rejects a missing lm_head.weight in an untied checkpoint', () => {
    const dir = path.join(root, 'nohead');
    writeHfCheckpoint(dir, syntheticWeights({ ...weights.config, tiedEmbeddings: true, seed: 1 }), { configOverrides: { tie_word_embeddings: false } });
    expectSaegateError(() => loadHfWeights(dir), 'SAEGATE_ERR_MODEL_FILE', "'lm_head.weight' is missing");
  });

  it('rejects tensors a bias-free Llama does not have, and layers beyond num_hidden_layers', () => {
    const dir = path.join(root, 'bias');
    writeHfCheckpoint(dir, weights, { extraTensors: { 'model.layers.1.self_attn.q_proj.bias': { dtype: 'F32', shape: [32], data: new Float32Array(32) } } });
    expectSaegateError(() => loadHfWeights(dir), 'SAEGATE_ERR_MODEL_FILE', "unexpected tensor 'model.layers.1.self_attn.q_proj.bias'");
    const fewer = path.join(root, 'fewer');
    writeHfCheckpoint(fewer, weights, { configOverrides: { num_hidden_layers: 1 } });
    expectSaegateError(() => loadHfWeights(fewer), 'SAEGATE_ERR_MODEL_FILE', "unexpected tensor 'model.layers.1.");
  });

  it('rejects a non-finite weight naming the tensor', () => {
    const broken = syntheticWeights({ ...weights.config, seed: 5 });
    broken.layers[1].wv[3] = NaN;
    const dir = path.join(root, 'nan');
    writeHfCheckpoint(dir, broken);
    expectSaegateError(() => loadHfWeights(dir), 'SAEGATE_ERR_MODEL_FILE', "'model.layers.1.self_attn.v_proj.weight'", 'non-finite', 'element 3');
  });

  it('rejects a config.json with rope_scaling or attention_bias, naming the file and the field', () => {
    const scaled = path.join(root, 'scaled');
    writeHfCheckpoint(scaled, weights, { configOverrides: { rope_scaling: { rope_type: 'dynamic', factor: 2 } } });
    expectSaegateError(() => loadHfWeights(scaled), 'SAEGATE_ERR_MODEL_CONFIG', path.join(scaled, 'config.json'), "'rope_scaling'");
    const biased = path.join(root, 'biased');
    writeHfCheckpoint(biased, weights, { configOverrides: { attention_bias: true } });
    expectSaegateError(() => loadHfWeights(biased), 'SAEGATE_ERR_MODEL_CONFIG', path.join(biased, 'config.json'), "'attention_bias'");
  });

  it('rejects a directory without config.json or without safetensors, and a corrupt shard', () => {
    const empty = path.join(root, 'empty');
    fs.mkdirSync(empty);
    expectSaegateError(() => loadHfWeights(empty), 'SAEGATE_ERR_MODEL_CONFIG', path.join(empty, 'config.json'), 'does not exist');
    fs.writeFileSync(path.join(empty, 'config.json'), JSON.stringify(baseConfig));
    expectSaegateError(() => loadHfWeights(empty), 'SAEGATE_ERR_MODEL_FILE', empty, 'no model.safetensors');
    fs.writeFileSync(path.join(empty, 'model.safetensors'), Buffer.alloc(20, 0xff));
    expectSaegateError(() => loadHfWeights(empty), 'SAEGATE_ERR_SAFETENSORS', path.join(empty, 'model.safetensors'), 'header length');
  });
});

describe.skipIf(!hasSharedModels)(needsSharedModels('Hugging Face round trip of stories260K'), () => {
  let root: string;
  let original: ModelWeights;
  // BOS + "Once upon a time, there was a little girl named Lily." in stories260K's vocabulary.
  const prompt = [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426];
  beforeAll(() => {
    root = makeTempDir();
    original = loadLlama2cWeights(stories260K.model);
  });
  afterAll(() => removeTempDir(root));

  it('matches the llama2.c checkpoint logits to 1e-4 when stored as F32', () => {
    writeHfCheckpoint(path.join(root, 'f32'), original);
    const { worst, sameArgmax } = compareLogits(original, loadHfWeights(path.join(root, 'f32')), prompt);
    expect(worst).toBeLessThan(1e-4);
    expect(sameArgmax).toBe(true);
  });

  it.each([
    // Logits span about 33 units here; half precision moves them by < 0.2 %, bfloat16 by < 1 %.
    ['F16', 0.06],
    ['BF16', 0.3],
  ] as const)('stays close to the llama2.c logits when stored as %s', (dtype, tolerance) => {
    writeHfCheckpoint(path.join(root, dtype), original, { dtype });
    const { worst } = compareLogits(original, loadHfWeights(path.join(root, dtype)), prompt);
    expect(worst).toBeLessThan(tolerance);
  });
});
