import { describe, expect, it } from 'vitest';
import { SaegateError } from '../../../src/common/errors.js';
import { syntheticTokenizer } from '../../../src/model/tokenizer/synthetic.js';
import type { ModelWeights } from '../../../src/model/types.js';
import { syntheticDefaults, syntheticWeights } from '../../../src/model/weights/synthetic.js';
import { argmax, referenceForward, referenceGreedy } from '../../helpers/reference-forward.js';

/** Every tensor of a model in a fixed order, as raw bytes (fast to compare, unlike deep equality). */
function tensorBytes(w: ModelWeights): Buffer[] {
  const tensors = [w.tokenEmbedding, w.finalNorm, ...(w.classifier ? [w.classifier] : [])];
  for (const l of w.layers) tensors.push(l.attnNorm, l.wq, l.wk, l.wv, l.wo, l.ffnNorm, l.w1, l.w2, l.w3);
  return tensors.map((t) => Buffer.from(t.buffer, t.byteOffset, t.byteLength));
}

function stats(values: Float32Array): { mean: number; std: number } {
  let sum = 0;
  let squares = 0;
  for (const v of values) {
    sum += v;
    squares += v * v;
  }
  const mean = sum / values.length;
  return { mean, std: Math.sqrt(squares / values.length - mean * mean) };
}

describe('synthetic weights', () => {
  const config = { dim: 96, hiddenDim: 256, nLayers: 3, nHeads: 6, nKvHeads: 2, vocabSize: 300, maxSeqLen: 128 };

  it('gives identical weights for the same seed and different weights for another seed', () => {
    const a = syntheticWeights({ ...config, seed: 7 });
    const b = syntheticWeights({ ...config, seed: 7 });
    const c = syntheticWeights({ ...config, seed: 8 });
    expect(a.config).toEqual(b.config);
    const [bytesA, bytesB, bytesC] = [a, b, c].map(tensorBytes);
    expect(bytesA.every((t, i) => t.equals(bytesB[i]))).toBe(true);
    expect(bytesA.some((t, i) => t.equals(bytesC[i]))).toBe(false);
  });

  it('sizes every tensor from the config, with a classifier only when untied', () => {
    const w = syntheticWeights({ ...config, tiedEmbeddings: false, seed: 1 });
    expect(w.config).toEqual({ ...syntheticDefaults, ...config, tiedEmbeddings: false });
    expect(w.tokenEmbedding).toHaveLength(300 * 96);
    expect(w.classifier).toHaveLength(300 * 96);
    expect(w.layers).toHaveLength(3);
    const layer = w.layers[0];
    expect([layer.attnNorm, layer.wq, layer.wk, layer.wv, layer.wo, layer.ffnNorm, layer.w1, layer.w2, layer.w3].map((t) => t.length)).toEqual([
      96,
      96 * 96,
      32 * 96,
      32 * 96,
      96 * 96,
      96,
      256 * 96,
      96 * 256,
      256 * 96,
    ]);
    expect(syntheticWeights({ ...config, tiedEmbeddings: true, seed: 1 }).classifier).toBeNull();
  });

  it('defaults nKvHeads to nHeads and fills the rest from the defaults', () => {
    const w = syntheticWeights({ nHeads: 2, seed: 3 });
    expect(w.config).toEqual({ ...syntheticDefaults, nHeads: 2, nKvHeads: 2 });
  });

  it('initialises matrices as N(0, 0.02) and norm gains near 1', () => {
    const w = syntheticWeights({ dim: 256, hiddenDim: 512, nLayers: 1, nHeads: 4, vocabSize: 1000, seed: 9 });
    const matrix = stats(w.layers[0].w1);
    expect(Math.abs(matrix.mean)).toBeLessThan(1e-3);
    expect(matrix.std).toBeGreaterThan(0.0195);
    expect(matrix.std).toBeLessThan(0.0205);
    const norm = stats(w.layers[0].attnNorm);
    expect(Math.abs(norm.mean - 1)).toBeLessThan(0.02);
    expect(norm.std).toBeGreaterThan(0.03);
    expect(norm.std).toBeLessThan(0.07);
  });

  it('produces finite, spread-out logits that depend on the prompt', () => {
    const w = syntheticWeights({ ...config, seed: 7 });
    const prompts = Array.from({ length: 8 }, (_, i) => [1, ...Array.from({ length: 1 + i * 3 }, (_, j) => 10 + ((i * 7 + j * 13) % 200))]);
    const last = prompts.map((p) => referenceForward(w, p).logits[p.length - 1]);
    for (const logits of last) {
      expect(logits.every(Number.isFinite)).toBe(true);
      const sorted = [...logits].sort((a, b) => b - a);
      // Spread far beyond float32 rounding, so engines and the float64 reference rank tokens alike.
      expect(sorted[0] - sorted[sorted.length - 1]).toBeGreaterThan(0.5);
    }
    expect(new Set(last.map((l) => argmax(l))).size).toBeGreaterThan(1);
    const continuations = prompts.slice(0, 3).map((p) => referenceGreedy(w, p, 4).join(','));
    expect(new Set(continuations).size).toBeGreaterThan(1);
  });

  it('rejects inconsistent configs with SAEGATE_ERR_MODEL_CONFIG', () => {
    for (const bad of [{ dim: 60, nHeads: 7 }, { nHeads: 4, nKvHeads: 3 }, { nLayers: 0 }, { vocabSize: -1 }]) {
      expect(() => syntheticWeights({ ...bad, seed: 1 })).toThrow(SaegateError);
    }
    expect(() => syntheticWeights({ seed: 1.5 })).toThrow(/seed/);
  });
});

describe('synthetic tokenizer', () => {
  const tokenizer = syntheticTokenizer(300);

  it('encodes one byte token per UTF-8 byte and round-trips any text', () => {
    expect(tokenizer.encode('Hi')).toEqual([0x48 + 3, 0x69 + 3]);
    expect(tokenizer.encode('Hi', { addBos: true })).toEqual([1, 0x48 + 3, 0x69 + 3]);
    for (const text of ['', 'plain ASCII', 'déjà vu', '🦙🐍', '\ufeffBOM first']) expect(tokenizer.decode(tokenizer.encode(text, { addBos: true }))).toBe(text);
  });

  it('decodes specials to nothing, higher ids to fixed word pieces, and bad UTF-8 to U+FFFD', () => {
    expect(tokenizer.decode([0, 1, 2])).toBe('');
    expect(tokenizer.decode([259, 260, 265])).toBe(' the a.');
    expect(tokenizer.decode([0xe2 + 3])).toBe('\ufffd');
    expect(tokenizer).toMatchObject({ vocabSize: 300, bosId: 1, eosIds: [2], chatTemplate: null });
  });

  it('refuses vocabularies without room for the byte tokens, and ids outside the vocabulary', () => {
    expect(() => syntheticTokenizer(258)).toThrow(SaegateError);
    expect(() => tokenizer.decode([300])).toThrow(/outside the vocabulary/);
  });
});
