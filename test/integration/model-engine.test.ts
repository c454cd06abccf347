/**
 * The runtime against the real stories260K checkpoint and a seeded synthetic GQA model: exact
 * greedy reproduction, taps equal to a slow reference forward pass, steering semantics, and
 * continuous batching giving the same tokens as sequential runs.
 */
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalEngine } from '../../src/model/engine.js';
import type { GenerateRequest } from '../../src/model/engine-types.js';
import { loadModel } from '../../src/model/load.js';
import type { ActivationBatch } from '../../src/model/runtime-protocol.js';
import { allHookPoints, type ModelWeights } from '../../src/model/types.js';
import { syntheticWeights } from '../../src/model/weights/synthetic.js';
import { hasSharedModels, stories260K } from '../helpers/fixtures.js';
import { referenceForward } from '../helpers/reference-forward.js';

function request(id: string, prompt: number[], maxTokens: number, extra: Partial<GenerateRequest> = {}): GenerateRequest {
  return { requestId: id, promptTokens: prompt, maxTokens, sampling: { temperature: 0, topP: 1, seed: null }, stopTokenIds: [], steering: [], ...extra };
}

/** Runs requests concurrently and collects tokens and tapped rows per request and hook. */
async function runAll(engine: LocalEngine, requests: GenerateRequest[]) {
  const rows = new Map<string, Map<string, Map<number, Float32Array>>>();
  const off = engine.onStep((step) => {
    for (const batch of step.activations as ActivationBatch[]) {
      const data = batch.data as Float32Array;
      batch.requestIds.forEach((id, r) => {
        const byHook = rows.get(id) ?? new Map<string, Map<number, Float32Array>>();
        rows.set(id, byHook);
        const byPos = byHook.get(batch.hook) ?? new Map<number, Float32Array>();
        byHook.set(batch.hook, byPos);
        byPos.set(batch.positions[r], data.slice(r * batch.dModel, (r + 1) * batch.dModel));
      });
    }
  });
  const tokens = await Promise.all(
    requests.map(async (req) => {
      const out: number[] = [];
      await engine.generate(req, (t) => out.push(t));
      return out;
    }),
  );
  off();
  return { tokens, rows };
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const models: { name: string; load: () => Promise<ModelWeights>; skip: boolean }[] = [
  { name: 'stories260K', load: async () => (await loadModel({ model: stories260K.model })).weights, skip: !hasSharedModels },
  {
    name: 'synthetic GQA (d=96, 3 layers, 6 heads, 2 kv heads)',
    load: async () => syntheticWeights({ dim: 96, hiddenDim: 256, nLayers: 3, nHeads: 6, nKvHeads: 2, vocabSize: 300, maxSeqLen: 128, seed: 7 }),
    skip: false,
  },
];

describe.each(models)('runtime on $name', ({ load, skip }) => {
  let weights: ModelWeights;
  let engine: LocalEngine;
  beforeAll(async () => {
    if (skip) return;
    weights = await load();
    engine = await LocalEngine.create({ weights, maxBatch: 8 });
  });
  afterAll(async () => {
    await engine?.close();
  });

  it.skipIf(skip)('taps every hook point equal to the reference forward pass to 1e-4, for prompt and generated positions', async () => {
    const hooks = allHookPoints(weights.config);
    engine.setTapSubscription({ hooks, dtype: 'f32', includePrompt: true });
    const prompt = [1, 20, 33, 45, 7];
    const { tokens, rows } = await runAll(engine, [request('tap-ref', prompt, 6)]);
    engine.setTapSubscription(null);
    const sequence = [...prompt, ...tokens[0]];
    // Every position that was fed through the model: the prompt and all generated tokens but the last.
    const fed = sequence.slice(0, sequence.length - 1);
    const ref = referenceForward(weights, fed);
    const tapped = rows.get('tap-ref')!;
    let worst = 0;
    for (const hook of hooks) {
      const byPos = tapped.get(hook)!;
      expect([...byPos.keys()].sort((a, b) => a - b)).toEqual(fed.map((_, i) => i));
      for (let p = 0; p < fed.length; p++) worst = Math.max(worst, maxAbsDiff(byPos.get(p)!, ref.hooks[hook][p]));
    }
    expect(worst).toBeLessThan(1e-4);
    // Greedy tokens agree with the reference logits too.
    for (let p = prompt.length - 1; p < fed.length; p++) {
      const logits = ref.logits[p];
      let best = 0;
      for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
      expect(sequence[p + 1]).toBe(best);
    }
  });

  it.skipIf(skip)('gives 8 concurrent greedy requests the same tokens as 8 sequential ones', async () => {
    const prompts = Array.from({ length: 8 }, (_, i) => [1, ...Array.from({ length: 1 + i * 3 }, (_, j) => 10 + ((i * 7 + j * 13) % 200))]);
    const sequential: number[][] = [];
    for (const [i, p] of prompts.entries()) sequential.push((await runAll(engine, [request(`seq-${i}`, p, 24)])).tokens[0]);
    // Staggered starts: later requests join a batch that is already decoding.
    const concurrent = await Promise.all(
      prompts.map(async (p, i) => {
        await new Promise((r) => setTimeout(r, i * 3));
        return (await runAll(engine, [request(`con-${i}`, p, 24)])).tokens[0];
      }),
    );
    expect(concurrent).toEqual(sequential);
    expect(new Set(sequential.map((t) => t.join(','))).size).toBeGreaterThan(1);
  });

  it.skipIf(skip)('adds exactly scale × vector at a steered hook, changes downstream outputs, and leaves an unsteered request in the same batch alone', async () => {
    const D = weights.config.dim;
    const hook = 'blocks.1.hook_resid_post';
    const downstream = `blocks.${weights.config.nLayers - 1}.hook_resid_post`;
    const vector = Float32Array.from({ length: D }, (_, i) => Math.sin(i + 1));
    const scale = 4;
    const prompt = [1, 50, 60, 70];
    engine.setTapSubscription({ hooks: ['blocks.1.hook_resid_pre', hook, downstream], dtype: 'f32', includePrompt: true });
    const baseline = await runAll(engine, [request('plain', prompt, 8)]);
    const steered = await runAll(engine, [
      request('steered', prompt, 8, { steering: [{ hook, vector, scale, fromPosition: 2, untilPosition: null }] }),
      request('bystander', prompt, 8),
    ]);
    engine.setTapSubscription(null);

    const base = baseline.rows.get('plain')!;
    const st = steered.rows.get('steered')!;
    // Before the steering range the steered request is identical to the baseline.
    for (const p of [0, 1]) expect(maxAbsDiff(st.get(hook)!.get(p)!, base.get(hook)!.get(p)!)).toBeLessThan(1e-5);
    // At position 2 the hook's input is unchanged (same prefix), so its value differs by exactly scale × vector.
    const delta = st.get(hook)!.get(2)!.map((v, i) => v - base.get(hook)!.get(2)![i]);
    expect(maxAbsDiff(delta, vector.map((v) => v * scale))).toBeLessThan(1e-4);
    expect(maxAbsDiff(st.get('blocks.1.hook_resid_pre')!.get(2)!, base.get('blocks.1.hook_resid_pre')!.get(2)!)).toBeLessThan(1e-5);
    // Downstream layers see the change.
    expect(maxAbsDiff(st.get(downstream)!.get(3)!, base.get(downstream)!.get(3)!)).toBeGreaterThan(1e-2);
    // The unsteered request sharing the batch matches the baseline everywhere.
    const by = steered.rows.get('bystander')!;
    for (const [h, byPos] of base) for (const [p, row] of byPos) expect(maxAbsDiff(by.get(h)!.get(p)!, row)).toBeLessThan(1e-4);
    expect(steered.tokens[1]).toEqual(baseline.tokens[0]);
  });
});

describe.skipIf(!hasSharedModels)('stories260K greedy decoding', () => {
  it('reproduces greedy-from-bos.json exactly', async () => {
    const expected = JSON.parse(fs.readFileSync(stories260K.greedy, 'utf8')) as { prompt_ids: number[]; steps: number; ids: number[]; text: string };
    const loaded = await loadModel({ model: stories260K.model });
    const engine = await LocalEngine.create({ weights: loaded.weights, maxBatch: 2 });
    try {
      const { tokens } = await runAll(engine, [request('bos', expected.prompt_ids, expected.steps)]);
      expect(tokens[0]).toEqual(expected.ids);
      expect(loaded.tokenizer!.decode([...expected.prompt_ids, ...tokens[0]])).toBe(expected.text);
    } finally {
      await engine.close();
    }
  });
});

describe('device selection', () => {
  // This machine's onnxruntime-node has no CUDA provider; with SAEGATE_ONNXRUNTIME pointing at a
  // CUDA build (the GPU machine), the same call succeeds instead.
  it.skipIf(Boolean(process.env.SAEGATE_ONNXRUNTIME))('fails with SAEGATE_ERR_DEVICE_UNAVAILABLE and install advice when the CUDA provider is missing', async () => {
    const weights = syntheticWeights({ dim: 32, hiddenDim: 64, nLayers: 1, nHeads: 4, nKvHeads: 2, vocabSize: 50, maxSeqLen: 16, seed: 1 });
    const error = await LocalEngine.create({ weights, device: 'cuda' }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'SAEGATE_ERR_DEVICE_UNAVAILABLE' });
    expect((error as Error).message).toMatch(/^device cuda is not available: .*ONNXRUNTIME_NODE_INSTALL=cuda12/);
  });
});

describe('engine robustness', () => {
  const weights = syntheticWeights({ dim: 32, hiddenDim: 64, nLayers: 2, nHeads: 4, nKvHeads: 2, vocabSize: 300, maxSeqLen: 64, seed: 11 });

  it('never samples ids past the tokenizer vocabulary when the embedding is padded', async () => {
    const engine = await LocalEngine.create({ weights, maxBatch: 4, samplableVocab: 40 });
    try {
      const sampled = { temperature: 1.5, topP: 1, seed: 3 };
      const { tokens } = await runAll(engine, [request('a', [1, 5], 40, { sampling: sampled }), request('b', [1, 7], 40)]);
      for (const t of tokens.flat()) expect(t).toBeLessThan(40);
      expect(tokens.flat().length).toBe(80);
    } finally {
      await engine.close();
    }
  });

  it('fails only the request whose token callback throws, and keeps serving the others', async () => {
    const engine = await LocalEngine.create({ weights, maxBatch: 4 });
    try {
      let calls = 0;
      const failing = engine.generate(request('boom', [1, 5], 20), () => {
        if (++calls === 3) throw new Error('callback broke');
      });
      const healthy: number[] = [];
      const ok = engine.generate(request('fine', [1, 6], 20), (t) => healthy.push(t));
      await expect(failing).rejects.toThrow('callback broke');
      expect(await ok).toMatchObject({ finishReason: 'length', completionTokens: 20 });
      expect(healthy).toHaveLength(20);
      expect(engine.isActive('boom')).toBe(false);
      // The engine still takes new work.
      expect((await runAll(engine, [request('after', [1, 9], 5)])).tokens[0]).toHaveLength(5);
    } finally {
      await engine.close();
    }
  });
});
