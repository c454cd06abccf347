/**
 * SAE training end to end on small data: determinism under a seed, resuming from a checkpoint gives
 * the uninterrupted run's weights, the output loads in the SAE engine unchanged, training reduces
 * FVU and AuxK revives dead latents, and the CE-loss-recovered splice measures what it claims
 * (an exact SAE recovers everything, a zero SAE nothing).
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { SeededRandom } from '../../src/common/random.js';
import { loadModel } from '../../src/model/load.js';
import { loadSae } from '../../src/sae/load.js';
import type { TrainConfig } from '../../src/lab/train/protocol.js';
import { spliceEvaluation } from '../../src/lab/train/splice.js';
import { defaultTrainConfig, evaluateSae, toSaeWeights, trainTopKSae, writeSaeLensDirectory } from '../../src/lab/train/trainer.js';
import type { SaeWeights } from '../../src/sae/types.js';
import { expectSaegateRejection } from '../helpers/errors.js';
import { hasSharedModels, makeTempDir, needsSharedModels, stories260K } from '../helpers/fixtures.js';

const D_IN = 16;
const D_SAE = 64;

/**
 * Rows that a TopK SAE can explain: each is a sum of 3 of 40 fixed unit directions with positive
 * weights, plus a little noise and an offset (so b_dec has something to learn).
 */
function sparseRows(count: number, seed: number): Float32Array {
  const random = new SeededRandom(seed);
  const dirRandom = new SeededRandom(99); // the same directions for training and held-out rows
  const dirs = Array.from({ length: 40 }, () => {
    const v = Float32Array.from({ length: D_IN }, () => dirRandom.next() - 0.5);
    const n = Math.hypot(...v);
    return v.map((x) => x / n);
  });
  const rows = new Float32Array(count * D_IN);
  for (let r = 0; r < count; r++) {
    for (let a = 0; a < 3; a++) {
      const dir = dirs[Math.floor(random.next() * dirs.length)];
      const w = 0.5 + 2 * random.next();
      for (let i = 0; i < D_IN; i++) rows[r * D_IN + i] += w * dir[i];
    }
    for (let i = 0; i < D_IN; i++) rows[r * D_IN + i] += 0.3 + 0.02 * (random.next() - 0.5);
  }
  return rows;
}

const ROWS = sparseRows(6000, 11);
const HELD_OUT = sparseRows(1000, 12);

function config(overrides: Partial<TrainConfig> = {}): TrainConfig {
  return defaultTrainConfig({ dIn: D_IN, dSae: D_SAE, k: 4, batchRows: 256, steps: 120, lr: 1e-2, warmupSteps: 5, deadAfterRows: 1024, ...overrides });
}

const identity = { hookName: 'blocks.0.hook_resid_post', modelName: 'test', source: 'test' };

describe('TopK SAE training', () => {
  it('is deterministic under a seed and differs with another seed', async () => {
    const a = await trainTopKSae({ rows: ROWS, count: 6000, config: config({ steps: 40 }), run: { intraOpThreads: 1 } });
    const b = await trainTopKSae({ rows: ROWS, count: 6000, config: config({ steps: 40 }), run: { intraOpThreads: 1 } });
    const c = await trainTopKSae({ rows: ROWS, count: 6000, config: config({ steps: 40, seed: 1 }), run: { intraOpThreads: 1 } });
    expect(Buffer.from(a.params.w_dec.buffer).equals(Buffer.from(b.params.w_dec.buffer))).toBe(true);
    expect(Buffer.from(a.params.w_enc.buffer).equals(Buffer.from(b.params.w_enc.buffer))).toBe(true);
    expect(Buffer.from(a.params.b_dec.buffer).equals(Buffer.from(b.params.b_dec.buffer))).toBe(true);
    expect(a.history.map((p) => p.fvu)).toEqual(b.history.map((p) => p.fvu));
    expect(Buffer.from(a.params.w_dec.buffer).equals(Buffer.from(c.params.w_dec.buffer))).toBe(false);
  });

  it('resumes from a checkpoint to exactly the weights of an uninterrupted run', async () => {
    const dir = makeTempDir('sae-train-resume-');
    const checkpoint = path.join(dir, 'checkpoint.safetensors');
    const full = await trainTopKSae({ rows: ROWS, count: 6000, config: config({ steps: 60 }), run: { intraOpThreads: 1 } });
    // A run of 30 steps with the same config except `steps` would decay its learning rate
    // differently, so "interrupt" by checkpointing every 30 steps and resuming from step 30's file.
    const steps: number[] = [];
    await trainTopKSae({ rows: ROWS, count: 6000, config: config({ steps: 60 }), run: { intraOpThreads: 1, checkpointEvery: 30, checkpointPath: checkpoint }, onCheckpoint: (s) => {
      steps.push(s);
      if (s === 30) fs.copyFileSync(checkpoint, `${checkpoint}.30`);
    } });
    expect(steps).toEqual([30, 60]);
    const resumed = await trainTopKSae({ rows: ROWS, count: 6000, config: config({ steps: 60 }), run: { intraOpThreads: 1, resumeFrom: `${checkpoint}.30` } });
    expect(resumed.resumedAtStep).toBe(30);
    expect(Buffer.from(resumed.params.w_dec.buffer).equals(Buffer.from(full.params.w_dec.buffer))).toBe(true);
    expect(Buffer.from(resumed.params.b_enc.buffer).equals(Buffer.from(full.params.b_enc.buffer))).toBe(true);
  });

  it('refuses a checkpoint written for other settings, naming the setting', async () => {
    const dir = makeTempDir('sae-train-ckpt-');
    const checkpoint = path.join(dir, 'checkpoint.safetensors');
    await trainTopKSae({ rows: ROWS, count: 6000, config: config({ steps: 10 }), run: { checkpointEvery: 10, checkpointPath: checkpoint } });
    await expectSaegateRejection(() => trainTopKSae({ rows: ROWS, count: 6000, config: config({ steps: 10, k: 5 }), run: { resumeFrom: checkpoint } }), 'SAEGATE_ERR_TRAIN_CHECKPOINT', 'k: checkpoint 4, now 5');
    await expectSaegateRejection(() => trainTopKSae({ rows: ROWS, count: 5000, config: config({ steps: 10 }), run: { resumeFrom: checkpoint } }), 'SAEGATE_ERR_TRAIN_CHECKPOINT', 'written for 6000 training rows, now 5000');
    fs.writeFileSync(path.join(dir, 'junk.safetensors'), 'not a checkpoint');
    await expectSaegateRejection(() => trainTopKSae({ rows: ROWS, count: 6000, config: config({ steps: 10 }), run: { resumeFrom: path.join(dir, 'junk.safetensors') } }), 'SAEGATE_ERR_TRAIN_CHECKPOINT', 'junk.safetensors');
  });

  it('learns: held-out FVU falls well below the untrained SAE, and the SAELens output loads in the engine unchanged', async () => {
    const untrained = await trainTopKSae({ rows: ROWS, count: 6000, config: config({ steps: 1, lr: 1e-9, warmupSteps: 0 }) });
    const trained = await trainTopKSae({ rows: ROWS, count: 6000, config: config({ steps: 300 }) });
    const before = await evaluateSae(toSaeWeights(untrained.params, config(), identity), HELD_OUT, 1000);
    const sae = toSaeWeights(trained.params, config(), identity);
    const after = await evaluateSae(sae, HELD_OUT, 1000);
    expect(after.fvu).toBeLessThan(0.25);
    expect(after.fvu).toBeLessThan(before.fvu / 3);
    expect(after.l0).toBeGreaterThan(3);
    expect(after.l0).toBeLessThanOrEqual(4);
    // The trainer's last progress point agrees with the engine's view of the training rows.
    const onTrain = await evaluateSae(sae, ROWS, 6000);
    expect(Math.abs(onTrain.fvu - trained.history[trained.history.length - 1].fvu)).toBeLessThan(0.1);

    const dir = makeTempDir('sae-train-out-');
    writeSaeLensDirectory(dir, sae);
    const loaded = loadSae(dir);
    expect(loaded.config).toMatchObject({ architecture: 'topk', k: 4, dIn: D_IN, dSae: D_SAE, hookName: 'blocks.0.hook_resid_post', applyBDecToInput: true });
    const reloaded = await evaluateSae(loaded, HELD_OUT, 1000);
    expect(reloaded.fvu).toBeCloseTo(after.fvu, 6);
  });

  it('AuxK revives dead latents: fewer dead latents on held-out rows than without it', async () => {
    // A large learning rate and a short dead window kill latents fast.
    const harsh = { steps: 200, lr: 3e-2, deadAfterRows: 512 };
    const without = await trainTopKSae({ rows: ROWS, count: 6000, config: config({ ...harsh, kAux: 0 }) });
    const withAux = await trainTopKSae({ rows: ROWS, count: 6000, config: config({ ...harsh, kAux: 8, auxCoef: 1 }) });
    const deadWithout = (await evaluateSae(toSaeWeights(without.params, config(), identity), HELD_OUT, 1000)).deadFraction;
    const deadWith = (await evaluateSae(toSaeWeights(withAux.params, config(), identity), HELD_OUT, 1000)).deadFraction;
    expect(deadWithout).toBeGreaterThan(0);
    expect(deadWith).toBeLessThan(deadWithout);
  });

  it('rejects bad settings with the setting named', async () => {
    await expectSaegateRejection(() => trainTopKSae({ rows: ROWS, count: 6000, config: config({ k: 65 }) }), 'SAEGATE_ERR_CONFIG', 'k');
    await expectSaegateRejection(() => trainTopKSae({ rows: ROWS, count: 6000, config: config({ lr: 0 }) }), 'SAEGATE_ERR_CONFIG', 'lr');
    await expectSaegateRejection(() => trainTopKSae({ rows: ROWS, count: 1, config: config() }), 'SAEGATE_ERR_CONFIG', 'at least 2 rows');
  });
});

describe('CE loss recovered (splice evaluation)', () => {
  /** An SAE that reconstructs exactly: latents ±e_i, k = d, so TopK picks the positive side of each coordinate. */
  function exactSae(dIn: number): SaeWeights {
    const dSae = 2 * dIn;
    const W_enc = new Float32Array(dIn * dSae);
    const W_dec = new Float32Array(dSae * dIn);
    for (let i = 0; i < dIn; i++) {
      W_enc[i * dSae + i] = 1;
      W_enc[i * dSae + dIn + i] = -1;
      W_dec[i * dIn + i] = 1;
      W_dec[(dIn + i) * dIn + i] = -1;
    }
    const sae = toSaeWeights({ w_enc: new Float32Array(dSae * dIn), b_enc: new Float32Array(dSae), w_dec: W_dec, b_dec: new Float32Array(dIn) }, { dIn, dSae, k: dIn }, { hookName: 'blocks.1.hook_resid_post', modelName: 'synthetic', source: 'exact' });
    sae.W_enc.set(W_enc); // already in the engine's [dIn, dSae] orientation
    return sae;
  }

  it('an exact reconstruction recovers all of the loss, a zero one none, and the clean CE matches the model', async () => {
    const model = await loadModel({ model: 'synthetic:dim=32,layers=3,heads=4,kv=2,hidden=64,vocab=300,ctx=64,seed=5' });
    const random = new SeededRandom(3);
    const documents = Array.from({ length: 4 }, () => Array.from({ length: 24 }, () => Math.floor(random.next() * 300)));
    const exact = await spliceEvaluation({ model: model.weights, sae: exactSae(32), documents });
    expect(exact.targets).toBe(4 * 23);
    expect(exact.fvu).toBeLessThan(1e-10);
    expect(Math.abs(exact.ceSpliced - exact.ceClean)).toBeLessThan(1e-5);

    const zero = exactSae(32);
    zero.W_dec.fill(0);
    const none = await spliceEvaluation({ model: model.weights, sae: zero, documents });
    expect(none.ceSpliced).toBeCloseTo(none.ceAblated, 5);
    expect(none.ceClean).toBeCloseTo(exact.ceClean, 10);
  });

  it.skipIf(!hasSharedModels)(needsSharedModels('on stories260K text: zero-ablating the hook costs nats, an exact SAE recovers 100% of them, a zero SAE 0%'), async () => {
    const model = await loadModel({ model: stories260K.model, tokenizer: stories260K.tokenizer });
    const documents = ['Once upon a time, there was a little girl named Lily. She loved to play in the park with her mom.', 'Tom was sad. He said, "I am sorry, Mom. I broke the cup." Mom gave him a hug.'].map((t) => model.tokenizer!.encode(t, { addBos: true }));
    const exact = exactSae(64);
    exact.config.hookName = 'blocks.2.hook_resid_post';
    const full = await spliceEvaluation({ model: model.weights, sae: exact, documents });
    expect(full.ceAblated - full.ceClean).toBeGreaterThan(0.5);
    expect(full.ceRecovered).toBeCloseTo(1, 3);
    exact.W_dec.fill(0);
    const none = await spliceEvaluation({ model: model.weights, sae: exact, documents });
    expect(none.ceRecovered).toBeCloseTo(0, 3);
  });

  it('refuses an SAE for a hook the model does not have', async () => {
    const model = await loadModel({ model: 'synthetic:dim=32,layers=2,heads=4,kv=2,hidden=64,vocab=300,ctx=64,seed=5' });
    const sae = exactSae(32);
    sae.config.hookName = 'blocks.7.hook_resid_post';
    await expectSaegateRejection(() => spliceEvaluation({ model: model.weights, sae, documents: [[1, 2, 3]] }), 'SAEGATE_ERR_SAE_FILE', 'blocks.7.hook_resid_post');
  });
});
