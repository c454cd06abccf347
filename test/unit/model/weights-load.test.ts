import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel, parseSyntheticSpec } from '../../../src/model/load.js';
import { HfTokenizer } from '../../../src/model/tokenizer/hf.js';
import { Llama2cTokenizer } from '../../../src/model/tokenizer/llama2c.js';
import { SyntheticTokenizer } from '../../../src/model/tokenizer/synthetic.js';
import { syntheticWeights } from '../../../src/model/weights/synthetic.js';
import { expectSaegateRejection } from '../../helpers/errors.js';
import {
  hasSharedModels,
  needsSharedModels,
  llama2Tokenizer,
  makeTempDir,
  removeTempDir,
  stories260K,
  writeHfCheckpoint,
  writeHfTokenizer,
  writeLlama2cCheckpoint,
  writeLlama2cTokenizer,
} from '../../helpers/fixtures.js';

/** A llama2.c vocabulary of `size` tokens: specials, 256 byte tokens, then filler pieces. */
function vocabulary(size: number): { piece: string; score: number }[] {
  return Array.from({ length: size }, (_, id) => {
    if (id < 3) return { piece: ['<unk>', '\n<s>\n', '\n</s>\n'][id], score: 0 };
    if (id < 259) return { piece: `<0x${(id - 3).toString(16).toUpperCase().padStart(2, '0')}>`, score: 0 };
    return { piece: `w${id}`, score: -id };
  });
}

describe('loadModel with synthetic specs', () => {
  it('parses every key of a synthetic spec', () => {
    expect(parseSyntheticSpec('synthetic:dim=512,layers=8,heads=8,kv=4,hidden=1376,vocab=4096,ctx=512,seed=1,theta=500000,eps=1e-6,tied=false,rope=half,std=0.01')).toEqual({
      dim: 512,
      nLayers: 8,
      nHeads: 8,
      nKvHeads: 4,
      hiddenDim: 1376,
      vocabSize: 4096,
      maxSeqLen: 512,
      seed: 1,
      ropeTheta: 500000,
      normEps: 1e-6,
      tiedEmbeddings: false,
      ropeStyle: 'half',
      initStd: 0.01,
    });
    expect(parseSyntheticSpec('synthetic')).toEqual({ seed: 1 });
  });

  it('builds the weights and a matching byte-level tokenizer, named "synthetic"', async () => {
    const loaded = await loadModel({ model: 'synthetic:dim=64,layers=2,heads=4,kv=2,hidden=128,vocab=300,ctx=256,seed=3' });
    expect(loaded.name).toBe('synthetic');
    expect(loaded.source).toBe('synthetic:dim=64,layers=2,heads=4,kv=2,hidden=128,vocab=300,ctx=256,seed=3');
    expect(loaded.weights.config).toMatchObject({ dim: 64, nLayers: 2, nHeads: 4, nKvHeads: 2, hiddenDim: 128, vocabSize: 300, maxSeqLen: 256 });
    expect(loaded.weights).toEqual(syntheticWeights({ dim: 64, nLayers: 2, nHeads: 4, nKvHeads: 2, hiddenDim: 128, vocabSize: 300, maxSeqLen: 256, seed: 3 }));
    expect(loaded.tokenizer).toBeInstanceOf(SyntheticTokenizer);
    expect(loaded.tokenizer!.vocabSize).toBe(300);
    expect((await loadModel({ model: 'synthetic:vocab=300', name: 'tiny' })).name).toBe('tiny');
  });

  it.each([
    ['synthetic:size=3', "'size=3'"],
    ['synthetic:dim', "'dim'"],
    ['synthetic:dim=abc', 'dim=abc'],
    ['synthetic:tied=yes', 'tied=yes'],
    ['synthetic:dim=60,heads=7', 'not a multiple'],
    ['synthetic:vocab=100', 'vocab 100'],
  ])('rejects %s with SAEGATE_ERR_MODEL_CONFIG', async (spec, fragment) => {
    await expectSaegateRejection(() => loadModel({ model: spec }), 'SAEGATE_ERR_MODEL_CONFIG', fragment);
  });
});

describe('loadModel with files', () => {
  let root: string;
  beforeAll(() => {
    root = makeTempDir();
  });
  afterAll(() => removeTempDir(root));

  it('rejects a path that does not exist', async () => {
    await expectSaegateRejection(() => loadModel({ model: path.join(root, 'nope.bin') }), 'SAEGATE_ERR_MODEL_FILE', 'nope.bin', 'does not exist');
  });

  it('finds tok{vocab}.bin beside a llama2.c checkpoint before tokenizer.bin, and names the model after the file', async () => {
    const dir = path.join(root, 'both');
    fs.mkdirSync(dir);
    writeLlama2cCheckpoint(path.join(dir, 'tiny-model.bin'), syntheticWeights({ vocabSize: 300, seed: 1 }));
    writeLlama2cTokenizer(path.join(dir, 'tok300.bin'), vocabulary(300));
    writeLlama2cTokenizer(path.join(dir, 'tokenizer.bin'), vocabulary(300).map((e, id) => (id === 299 ? { ...e, piece: 'other' } : e)));
    const loaded = await loadModel({ model: path.join(dir, 'tiny-model.bin') });
    expect(loaded.name).toBe('tiny-model');
    expect(loaded.source).toBe(path.resolve(dir, 'tiny-model.bin'));
    expect(loaded.tokenizer).toBeInstanceOf(Llama2cTokenizer);
    expect(loaded.tokenizer!.decode([299])).toBe('w299');
    fs.rmSync(path.join(dir, 'tok300.bin'));
    expect((await loadModel({ model: path.join(dir, 'tiny-model.bin') })).tokenizer!.decode([299])).toBe('other');
  });

  it('returns no tokenizer when none is beside the checkpoint', async () => {
    const dir = path.join(root, 'alone');
    fs.mkdirSync(dir);
    writeLlama2cCheckpoint(path.join(dir, 'm.bin'), syntheticWeights({ vocabSize: 300, seed: 1 }));
    expect((await loadModel({ model: path.join(dir, 'm.bin') })).tokenizer).toBeNull();
  });

  it('refuses a llama2.c tokenizer whose size differs from the vocab, naming both files and sizes', async () => {
    const dir = path.join(root, 'mismatch');
    fs.mkdirSync(dir);
    writeLlama2cCheckpoint(path.join(dir, 'm.bin'), syntheticWeights({ vocabSize: 300, seed: 1 }));
    writeLlama2cTokenizer(path.join(dir, 'tok.bin'), vocabulary(290));
    await expectSaegateRejection(() => loadModel({ model: path.join(dir, 'm.bin'), tokenizer: path.join(dir, 'tok.bin') }), 'SAEGATE_ERR_TOKENIZER_MISMATCH', path.join(dir, 'tok.bin'), path.resolve(dir, 'm.bin'), '290', '300');
  });

  it('loads a Hugging Face directory with its tokenizer.json, named after the directory', async () => {
    const dir = path.join(root, 'my-llama');
    // The embedding is padded past the tokenizer's 278 ids, as many checkpoints are.
    writeHfCheckpoint(dir, syntheticWeights({ vocabSize: 320, seed: 4 }));
    writeHfTokenizer(dir);
    const loaded = await loadModel({ model: dir });
    expect(loaded.name).toBe('my-llama');
    expect(loaded.source).toBe(path.resolve(dir));
    expect(loaded.weights.config.ropeStyle).toBe('half');
    expect(loaded.tokenizer).toBeInstanceOf(HfTokenizer);
    expect(loaded.tokenizer!.encode('hello world', { addBos: true })).toEqual([1, 271, 276]);
    // Pointing at a file inside the directory loads the same model.
    expect((await loadModel({ model: path.join(dir, 'config.json') })).name).toBe('my-llama');
    expect((await loadModel({ model: path.join(dir, 'model.safetensors') })).weights.config).toEqual(loaded.weights.config);
  });

  it('refuses a Hugging Face tokenizer larger than the embedding', async () => {
    const dir = path.join(root, 'small-vocab');
    writeHfCheckpoint(dir, syntheticWeights({ vocabSize: 270, seed: 4 }));
    writeHfTokenizer(dir);
    await expectSaegateRejection(() => loadModel({ model: dir }), 'SAEGATE_ERR_TOKENIZER_MISMATCH', path.join(dir, 'tokenizer.json'), '278', '270', 'at most');
  });
});

describe.skipIf(!hasSharedModels)(needsSharedModels('loadModel with the shared checkpoints'), () => {
  it('loads stories260K with tok512.bin found beside it', async () => {
    const loaded = await loadModel({ model: stories260K.model });
    expect(loaded.name).toBe('stories260K');
    expect(loaded.source).toBe(path.resolve(stories260K.model));
    expect(loaded.weights.config.vocabSize).toBe(512);
    expect(loaded.tokenizer).toBeInstanceOf(Llama2cTokenizer);
    expect(loaded.tokenizer!.encode('Once upon a time', { addBos: true })).toEqual([1, 403, 407, 261, 378]);
  });

  it('refuses the 32000-token Llama 2 tokenizer for the 512-token stories260K, naming both files and sizes', async () => {
    await expectSaegateRejection(
      () => loadModel({ model: stories260K.model, tokenizer: llama2Tokenizer }),
      'SAEGATE_ERR_TOKENIZER_MISMATCH',
      llama2Tokenizer,
      path.resolve(stories260K.model),
      '32000 tokens',
      'vocab_size is 512',
    );
  });
});
