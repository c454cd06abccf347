import { describe, expect, it } from 'vitest';
import { loadLlama2cTokenizer } from '../../../src/model/tokenizer/llama2c.js';
import { allHookPoints, type ModelWeights } from '../../../src/model/types.js';
import { loadLlama2cWeights } from '../../../src/model/weights/llama2c.js';
import { syntheticWeights } from '../../../src/model/weights/synthetic.js';
import { hasSharedModels, needsSharedModels, readGreedyReference, stories260K } from '../../helpers/fixtures.js';
import { argmax, referenceForward, referenceGreedy, type ReferenceSteering } from '../../helpers/reference-forward.js';

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe.skipIf(!hasSharedModels)(needsSharedModels('reference forward pass on stories260K'), () => {
  it('reproduces greedy-from-bos.json: every step of the 128-token greedy run is the argmax', () => {
    const reference = readGreedyReference();
    const weights = loadLlama2cWeights(stories260K.model);
    // With a causal model, "greedy decoding yields ids" is equivalent to "feeding prompt + ids, the
    // argmax after each position is the next id" — one forward pass instead of 128.
    const sequence = [...reference.prompt_ids, ...reference.ids];
    const { logits } = referenceForward(weights, sequence.slice(0, -1));
    const predicted = logits.slice(reference.prompt_ids.length - 1).map((row) => argmax(row));
    expect(predicted).toEqual(reference.ids);
    expect(reference.ids).toHaveLength(reference.steps);
    // referenceGreedy itself, on the first steps.
    expect(referenceGreedy(weights, reference.prompt_ids, 12)).toEqual(reference.ids.slice(0, 12));
  });

  it('decodes the greedy ids to the reference text with the model tokenizer', () => {
    const reference = readGreedyReference();
    const tokenizer = loadLlama2cTokenizer(stories260K.tokenizer);
    expect(tokenizer.decode([...reference.prompt_ids, ...reference.ids])).toBe(reference.text);
    expect(reference.text.startsWith('Once upon a time, there was a little girl named Lily.')).toBe(true);
  });
});

describe('reference forward pass semantics', () => {
  const weights = syntheticWeights({ dim: 48, hiddenDim: 128, nLayers: 3, nHeads: 6, nKvHeads: 2, vocabSize: 300, maxSeqLen: 64, seed: 21 });
  const tokens = [1, 40, 41, 200, 7, 7, 123];
  const base = referenceForward(weights, tokens);
  const vector = Float64Array.from({ length: 48 }, (_, i) => Math.cos(i * 0.7));

  it('taps every hook point at every position, chaining resid_post into the next resid_pre', () => {
    expect(Object.keys(base.hooks)).toEqual(allHookPoints(weights.config));
    expect(base.logits).toHaveLength(tokens.length);
    expect(base.logits[0]).toHaveLength(300);
    tokens.forEach((t, p) => {
      expect([...base.hooks['blocks.0.hook_resid_pre'][p]]).toEqual([...weights.tokenEmbedding.subarray(t * 48, (t + 1) * 48)]);
      expect(base.hooks['blocks.1.hook_resid_pre'][p]).toEqual(base.hooks['blocks.0.hook_resid_post'][p]);
    });
  });

  it('is causal: later tokens do not change earlier positions', () => {
    const changed = referenceForward(weights, [...tokens.slice(0, 4), 99, 98, 97]);
    for (let p = 0; p < 4; p++) expect(maxAbsDiff(changed.logits[p], base.logits[p])).toBe(0);
    expect(maxAbsDiff(changed.logits[5], base.logits[5])).toBeGreaterThan(1e-6);
  });

  it('adds exactly scale × vector at a steered resid_post, only inside [fromPosition, untilPosition)', () => {
    const hook = 'blocks.1.hook_resid_post';
    const steering: ReferenceSteering[] = [{ hook, vector, scale: 3, fromPosition: 2, untilPosition: 4 }];
    const steered = referenceForward(weights, tokens, { steering });
    for (let p = 0; p < tokens.length; p++) {
      const delta = steered.hooks[hook][p].map((v, i) => v - base.hooks[hook][p][i]);
      const expected = p >= 2 && p < 4 ? vector.map((v) => 3 * v) : new Float64Array(48);
      expect(maxAbsDiff(delta, expected)).toBeLessThan(1e-12);
      // The same block's input is upstream of the steering and does not move.
      expect(steered.hooks['blocks.1.hook_resid_pre'][p]).toEqual(base.hooks['blocks.1.hook_resid_pre'][p]);
      // The next block's input is the steered value.
      expect(steered.hooks['blocks.2.hook_resid_pre'][p]).toEqual(steered.hooks[hook][p]);
    }
    // Downstream: positions before 2 are untouched, steered and later positions change.
    for (const p of [0, 1]) expect(maxAbsDiff(steered.logits[p], base.logits[p])).toBe(0);
    for (const p of [2, 3, 4, 6]) expect(maxAbsDiff(steered.hooks['blocks.2.hook_resid_post'][p], base.hooks['blocks.2.hook_resid_post'][p])).toBeGreaterThan(1e-4);
  });

  it('steers resid_pre on top of the (already steered) previous resid_post, and sums entries on one hook', () => {
    const steering: ReferenceSteering[] = [
      { hook: 'blocks.0.hook_resid_post', vector, scale: 1, fromPosition: 0, untilPosition: null },
      { hook: 'blocks.1.hook_resid_pre', vector, scale: 2, fromPosition: 0, untilPosition: null },
      { hook: 'blocks.1.hook_resid_pre', vector, scale: -0.5, fromPosition: 5, untilPosition: null },
    ];
    const steered = referenceForward(weights, tokens, { steering });
    for (let p = 0; p < tokens.length; p++) {
      const post = steered.hooks['blocks.0.hook_resid_post'][p];
      const scale = p >= 5 ? 1.5 : 2;
      expect(maxAbsDiff(steered.hooks['blocks.1.hook_resid_pre'][p], post.map((v, i) => v + scale * vector[i]))).toBeLessThan(1e-12);
    }
  });

  it('steers the embedding at blocks.0.hook_resid_pre', () => {
    const steered = referenceForward(weights, tokens, { steering: [{ hook: 'blocks.0.hook_resid_pre', vector, scale: 0.5, fromPosition: 0, untilPosition: 1 }] });
    expect(maxAbsDiff(steered.hooks['blocks.0.hook_resid_pre'][0].map((v, i) => v - base.hooks['blocks.0.hook_resid_pre'][0][i]), vector.map((v) => 0.5 * v))).toBeLessThan(1e-12);
    expect(steered.hooks['blocks.0.hook_resid_pre'][1]).toEqual(base.hooks['blocks.0.hook_resid_pre'][1]);
    expect(maxAbsDiff(steered.logits[1], base.logits[1])).toBeGreaterThan(1e-6);
  });

  it('rejects steering on unknown hooks or with a wrong-sized vector', () => {
    expect(() => referenceForward(weights, tokens, { steering: [{ hook: 'blocks.3.hook_resid_post', vector, scale: 1, fromPosition: 0, untilPosition: null }] })).toThrow(/unknown hook/);
    expect(() => referenceForward(weights, tokens, { steering: [{ hook: 'blocks.0.hook_resid_post', vector: [1, 2], scale: 1, fromPosition: 0, untilPosition: null }] })).toThrow(/d_model/);
  });

  it('maps query head h to kv head ⌊h / group⌋: a GQA model equals the MHA model with repeated kv heads', () => {
    const headDim = 8;
    const group = 3;
    const expand = (w: Float32Array): Float32Array => {
      const out = new Float32Array(6 * headDim * 48);
      for (let h = 0; h < 6; h++) out.set(w.subarray(Math.floor(h / group) * headDim * 48, (Math.floor(h / group) + 1) * headDim * 48), h * headDim * 48);
      return out;
    };
    const mha: ModelWeights = {
      ...weights,
      config: { ...weights.config, nKvHeads: 6 },
      layers: weights.layers.map((layer) => ({ ...layer, wk: expand(layer.wk), wv: expand(layer.wv) })),
    };
    const expanded = referenceForward(mha, tokens);
    base.logits.forEach((row, p) => expect(maxAbsDiff(row, expanded.logits[p])).toBeLessThan(1e-12));
  });

  it('uses the untied classifier when there is one', () => {
    const untied: ModelWeights = { ...weights, config: { ...weights.config, tiedEmbeddings: false }, classifier: weights.tokenEmbedding.map((v) => -v) };
    const flipped = referenceForward(untied, tokens);
    expect(maxAbsDiff(flipped.logits[3], base.logits[3].map((v) => -v))).toBeLessThan(1e-12);
  });
});
