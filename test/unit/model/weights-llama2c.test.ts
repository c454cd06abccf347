import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { llama2cFileBytes, loadLlama2cWeights } from '../../../src/model/weights/llama2c.js';
import { syntheticWeights } from '../../../src/model/weights/synthetic.js';
import { expectSaegateError } from '../../helpers/errors.js';
import { hasSharedModels, needsSharedModels, makeTempDir, removeTempDir, stories260K, writeLlama2cCheckpoint } from '../../helpers/fixtures.js';

describe('llama2.c checkpoint loader on written checkpoints', () => {
  let dir: string;
  beforeAll(() => {
    dir = makeTempDir();
  });
  afterAll(() => removeTempDir(dir));

  it.each([
    { tied: true, kv: 2 },
    { tied: false, kv: 4 },
  ])('reads back every tensor bit for bit (tied $tied, $kv kv heads)', ({ tied, kv }) => {
    const weights = syntheticWeights({ dim: 32, hiddenDim: 80, nLayers: 3, nHeads: 4, nKvHeads: kv, vocabSize: 300, maxSeqLen: 40, tiedEmbeddings: tied, seed: 11 });
    const file = path.join(dir, `model-${tied}.bin`);
    writeLlama2cCheckpoint(file, weights);
    expect(fs.statSync(file).size).toBe(llama2cFileBytes({ dim: 32, hiddenDim: 80, nLayers: 3, nHeads: 4, nKvHeads: kv, vocabSize: tied ? 300 : -300, seqLen: 40 }));
    const loaded = loadLlama2cWeights(file);
    expect(loaded.config).toEqual({ ...weights.config, ropeStyle: 'interleaved', normEps: 1e-5, ropeTheta: 10000 });
    expect(loaded.tokenEmbedding).toEqual(weights.tokenEmbedding);
    expect(loaded.finalNorm).toEqual(weights.finalNorm);
    expect(loaded.classifier).toEqual(weights.classifier);
    expect(loaded.layers).toHaveLength(3);
    loaded.layers.forEach((layer, l) => expect(layer).toEqual(weights.layers[l]));
  });

  describe('corrupt files', () => {
    let good: Buffer;
    const base = syntheticWeights({ dim: 16, hiddenDim: 40, nLayers: 2, nHeads: 2, nKvHeads: 1, vocabSize: 260, maxSeqLen: 8, seed: 2 });
    beforeAll(() => {
      const file = path.join(dir, 'good.bin');
      writeLlama2cCheckpoint(file, base);
      good = fs.readFileSync(file);
    });
    const write = (name: string, bytes: Uint8Array): string => {
      const file = path.join(dir, name);
      fs.writeFileSync(file, bytes);
      return file;
    };
    const withHeader = (fields: number[]): Buffer => {
      const copy = Buffer.from(good);
      fields.forEach((v, i) => copy.writeInt32LE(v, i * 4));
      return copy;
    };

    it('rejects a truncated file, giving expected and actual sizes', () => {
      const file = write('truncated.bin', good.subarray(0, good.length - 4));
      expectSaegateError(() => loadLlama2cWeights(file), 'SAEGATE_ERR_MODEL_FILE', file, 'truncated', `${good.length} bytes`, `${good.length - 4}`);
    });

    it('rejects trailing bytes after the weights, giving expected and actual sizes', () => {
      const file = write('trailing.bin', Buffer.concat([good, Buffer.alloc(3)]));
      expectSaegateError(() => loadLlama2cWeights(file), 'SAEGATE_ERR_MODEL_FILE', file, 'trailing bytes', `${good.length} bytes`, `${good.length + 3}`);
    });

    it('rejects a file shorter than the header', () => {
      const file = write('short.bin', good.subarray(0, 10));
      expectSaegateError(() => loadLlama2cWeights(file), 'SAEGATE_ERR_MODEL_FILE', file, '10 bytes', 'header');
    });

    it.each([
      ['dim not a multiple of n_heads', [16, 40, 2, 3, 1, 260, 8], 'not a multiple of nHeads 3'],
      ['n_heads not a multiple of n_kv_heads', [16, 40, 2, 2, 3, 260, 8], 'not a multiple of nKvHeads 3'],
      ['zero layers', [16, 40, 0, 2, 1, 260, 8], 'nLayers 0'],
      ['a negative hidden_dim', [16, -40, 2, 2, 1, 260, 8], 'hiddenDim -40'],
      ['a zero vocab_size', [16, 40, 2, 2, 1, 0, 8], 'vocab_size 0'],
      ['an odd head size', [18, 40, 2, 2, 1, 260, 8], 'head size 9 is odd'],
    ])('rejects a header with %s', (_name, fields, fragment) => {
      const file = write('header.bin', withHeader(fields));
      expectSaegateError(() => loadLlama2cWeights(file), 'SAEGATE_ERR_MODEL_FILE', file, 'nonsensical header', fragment);
    });

    it('rejects a header whose sizes do not match the file (e.g. a flipped vocab sign)', () => {
      const file = write('sign.bin', withHeader([16, 40, 2, 2, 1, -260, 8]));
      expectSaegateError(() => loadLlama2cWeights(file), 'SAEGATE_ERR_MODEL_FILE', file, 'truncated');
    });

    it("recognises llama2.c's versioned export format and says which export to use", () => {
      const file = write('v1.bin', withHeader([0x616b3432, 1]));
      expectSaegateError(() => loadLlama2cWeights(file), 'SAEGATE_ERR_MODEL_FILE', file, 'version 1', 'legacy');
    });

    it.each([
      [NaN, 'wk', 1],
      [Infinity, 'w2', 0],
      [-Infinity, 'token_embedding', null],
    ])('rejects a %s weight naming the tensor (%s)', (value, tensor, layer) => {
      const copy = Buffer.from(good);
      const c = base.config;
      // Float offsets of the groups in file order (see the llama2c loader's layout).
      const kvDim = 8;
      const groupFloats: [string, number][] = [
        ['token_embedding', c.vocabSize * c.dim],
        ['rms_att', c.dim],
        ['wq', c.dim * c.dim],
        ['wk', kvDim * c.dim],
        ['wv', kvDim * c.dim],
        ['wo', c.dim * c.dim],
        ['rms_ffn', c.dim],
        ['w1', c.hiddenDim * c.dim],
        ['w2', c.dim * c.hiddenDim],
      ];
      let offset = 0;
      for (const [name, perLayer] of groupFloats) {
        if (name === tensor) break;
        offset += name === 'token_embedding' ? perLayer : perLayer * c.nLayers;
      }
      const perLayer = groupFloats.find(([name]) => name === tensor)![1];
      offset += (layer ?? 0) * perLayer + 5;
      copy.writeFloatLE(value, 28 + offset * 4);
      const file = write('nan.bin', copy);
      expectSaegateError(() => loadLlama2cWeights(file), 'SAEGATE_ERR_MODEL_FILE', file, layer === null ? `tensor ${tensor}` : `tensor layers.${layer}.${tensor}`, 'element 5');
    });

    it('rejects a missing file and a directory', () => {
      expectSaegateError(() => loadLlama2cWeights(path.join(dir, 'absent.bin')), 'SAEGATE_ERR_MODEL_FILE', 'absent.bin', 'cannot open');
      expectSaegateError(() => loadLlama2cWeights(dir), 'SAEGATE_ERR_MODEL_FILE', dir, 'not a regular file');
    });
  });
});

describe.skipIf(!hasSharedModels)(needsSharedModels('llama2.c checkpoint loader on stories260K'), () => {
  it('reads the header and places tensors where run.c does', () => {
    const weights = loadLlama2cWeights(stories260K.model);
    expect(weights.config).toEqual({
      dim: 64,
      hiddenDim: 172,
      nLayers: 5,
      nHeads: 8,
      nKvHeads: 4,
      vocabSize: 512,
      maxSeqLen: 512,
      normEps: 1e-5,
      ropeTheta: 10000,
      ropeStyle: 'interleaved',
      tiedEmbeddings: true,
    });
    const raw = fs.readFileSync(stories260K.model);
    const floatAt = (index: number) => raw.readFloatLE(28 + index * 4);
    expect(weights.tokenEmbedding[0]).toBe(floatAt(0));
    const afterEmbedding = 512 * 64;
    expect(weights.layers[0].attnNorm[0]).toBe(floatAt(afterEmbedding));
    expect(weights.layers[4].attnNorm[63]).toBe(floatAt(afterEmbedding + 5 * 64 - 1));
    const wqStart = afterEmbedding + 5 * 64;
    expect(weights.layers[1].wq[0]).toBe(floatAt(wqStart + 64 * 64));
    // The final norm sits right before the two RoPE tables (512 × 4 floats each) at the end of the file.
    expect(weights.finalNorm[63]).toBe(raw.readFloatLE(raw.length - 4 * (2 * 512 * 4) - 4));
    expect(weights.classifier).toBeNull();
    expect(weights.layers[3].wk).toHaveLength(32 * 64);
    expect(weights.layers[3].w2).toHaveLength(64 * 172);
  });
});
