/**
 * The training-step graph's hand-written gradients and Adam update, checked against an independent
 * float64 computation written here from the equations: the loss in float64, its gradient by central
 * finite differences, and Adam by the textbook formulas.
 */
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { seededUniform } from '../../../src/common/random.js';
import { buildTrainStepGraph, PARAM_NAMES, paramShape, TrainNames, type ParamName } from '../../../src/lab/train/graph.js';

const D_IN = 6;
const D_SAE = 20;
const K = 3;
const K_AUX = 4;
const ROWS = 9;
const AUX_COEF = 0.25;

type Params = Record<ParamName, Float64Array>;

function makeCase(seed: number): { x: Float64Array; params: Params; dead: Float64Array } {
  const next = seededUniform(seed);
  const u = (n: number, lo: number, hi: number): Float64Array => Float64Array.from({ length: n }, () => lo + (hi - lo) * next());
  const w_dec = u(D_SAE * D_IN, -1, 1);
  for (let j = 0; j < D_SAE; j++) {
    let norm = 0;
    for (let i = 0; i < D_IN; i++) norm += w_dec[j * D_IN + i] ** 2;
    for (let i = 0; i < D_IN; i++) w_dec[j * D_IN + i] /= Math.sqrt(norm);
  }
  const dead = Float64Array.from({ length: D_SAE }, (_, j) => (j % 3 === 0 ? 1 : 0));
  return { x: u(ROWS * D_IN, -2, 2), params: { w_enc: u(D_SAE * D_IN, -1, 1), b_enc: u(D_SAE, -0.3, 0.3), w_dec, b_dec: u(D_IN, -0.5, 0.5) }, dead };
}

/** Indices of the `k` largest entries of `values` among those allowed. */
function topK(values: Float64Array, k: number, allowed: (j: number) => boolean): number[] {
  return [...values.keys()].filter(allowed).sort((a, b) => values[b] - values[a]).slice(0, k);
}

/** The total loss L + auxCoef·L_aux in float64, with the AuxK residual held at its value at `frozen`. */
function loss(x: Float64Array, p: Params, dead: Float64Array, frozenResidual: Float64Array | null): { total: number; residual: Float64Array } {
  let sq = 0;
  let auxSq = 0;
  const mean = new Float64Array(D_IN);
  for (let r = 0; r < ROWS; r++) for (let i = 0; i < D_IN; i++) mean[i] += x[r * D_IN + i] / ROWS;
  let variance = 0;
  for (let r = 0; r < ROWS; r++) for (let i = 0; i < D_IN; i++) variance += (x[r * D_IN + i] - mean[i]) ** 2;
  const residual = new Float64Array(ROWS * D_IN);
  for (let r = 0; r < ROWS; r++) {
    const pre = new Float64Array(D_SAE);
    for (let j = 0; j < D_SAE; j++) {
      let s = p.b_enc[j];
      for (let i = 0; i < D_IN; i++) s += (x[r * D_IN + i] - p.b_dec[i]) * p.w_enc[j * D_IN + i];
      pre[j] = s;
    }
    const recon = Float64Array.from(p.b_dec);
    for (const j of topK(pre, K, () => true)) {
      const a = Math.max(0, pre[j]);
      for (let i = 0; i < D_IN; i++) recon[i] += a * p.w_dec[j * D_IN + i];
    }
    const ehat = new Float64Array(D_IN);
    for (const j of topK(pre, K_AUX, (jj) => dead[jj] === 1)) {
      const a = Math.max(0, pre[j]);
      for (let i = 0; i < D_IN; i++) ehat[i] += a * p.w_dec[j * D_IN + i];
    }
    for (let i = 0; i < D_IN; i++) {
      const e = x[r * D_IN + i] - recon[i];
      residual[r * D_IN + i] = e;
      sq += e * e;
      const resid = frozenResidual ? frozenResidual[r * D_IN + i] : e;
      auxSq += (resid - ehat[i]) ** 2;
    }
  }
  return { total: (sq + AUX_COEF * auxSq) / variance, residual };
}

function numericGradients(x: Float64Array, params: Params, dead: Float64Array): Params {
  const frozen = loss(x, params, dead, null).residual;
  const h = 1e-6;
  const out = {} as Params;
  for (const name of PARAM_NAMES) {
    const p = params[name];
    out[name] = new Float64Array(p.length);
    for (let i = 0; i < p.length; i++) {
      const keep = p[i];
      p[i] = keep + h;
      const up = loss(x, params, dead, frozen).total;
      p[i] = keep - h;
      const down = loss(x, params, dead, frozen).total;
      p[i] = keep;
      out[name][i] = (up - down) / (2 * h);
    }
  }
  return out;
}

async function runStep(x: Float64Array, params: Params, dead: Float64Array, stepSize: number): Promise<ort.InferenceSession.OnnxValueMapType> {
  const session = await ort.InferenceSession.create(buildTrainStepGraph({ dIn: D_IN, dSae: D_SAE, k: K, kAux: K_AUX, gradients: true }), { intraOpNumThreads: 1 });
  const deadList = [...dead.keys()].filter((j) => dead[j] === 1);
  const feeds: Record<string, ort.Tensor> = {
    [TrainNames.x]: new ort.Tensor('float32', Float32Array.from(x), [ROWS, D_IN]),
    [TrainNames.deadIndices]: new ort.Tensor('int64', BigInt64Array.from(deadList.map(BigInt)), [deadList.length]),
    [TrainNames.auxK]: new ort.Tensor('int64', BigInt64Array.of(BigInt(Math.min(K_AUX, deadList.length))), [1]),
    [TrainNames.stepSize]: new ort.Tensor('float32', Float32Array.of(stepSize), [1]),
    [TrainNames.auxCoef]: new ort.Tensor('float32', Float32Array.of(AUX_COEF), [1]),
  };
  for (const name of PARAM_NAMES) {
    const shape = paramShape(name, D_IN, D_SAE);
    feeds[TrainNames.param(name)] = new ort.Tensor('float32', Float32Array.from(params[name]), shape);
    feeds[TrainNames.m(name)] = new ort.Tensor('float32', new Float32Array(params[name].length), shape);
    feeds[TrainNames.v(name)] = new ort.Tensor('float32', new Float32Array(params[name].length), shape);
  }
  const out = await session.run(feeds);
  await session.release();
  return out;
}

function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance: number): void {
  expect(actual.length).toBe(expected.length);
  let scale = 0;
  for (let i = 0; i < expected.length; i++) scale = Math.max(scale, Math.abs(expected[i]));
  for (let i = 0; i < expected.length; i++) {
    if (Math.abs(actual[i] - expected[i]) > tolerance * Math.max(scale, 1e-6)) {
      expect.fail(`element ${i}: ${actual[i]} vs ${expected[i]} (scale ${scale})`);
    }
  }
}

describe('TopK SAE training step graph', () => {
  it.each([1, 2, 3])('computes the gradients of FVU + auxCoef·AuxK that finite differences give (case %i)', async (seed) => {
    const { x, params, dead } = makeCase(seed);
    const expected = numericGradients(x, params, dead);
    const out = await runStep(x, params, dead, 0);
    for (const name of PARAM_NAMES) expectClose(out[TrainNames.grad(name)].data as Float32Array, expected[name], 1e-3);
    // The AuxK term really contributes: without it the dead latents' encoder rows get no gradient.
    const deadRowGrad = (out[TrainNames.grad('w_enc')].data as Float32Array).filter((_, i) => dead[Math.floor(i / D_IN)] === 1);
    expect(deadRowGrad.some((v) => Math.abs(v) > 1e-6)).toBe(true);
  });

  it('reports the batch squared error and variance, and the selected latents with their activations', async () => {
    const { x, params, dead } = makeCase(4);
    const out = await runStep(x, params, dead, 0);
    const { residual } = loss(x, params, dead, null);
    const sq = residual.reduce((s, e) => s + e * e, 0);
    expect(out[TrainNames.sqError].data[0]).toBeCloseTo(sq, 4);
    const indices = out[TrainNames.indices].data as BigInt64Array;
    expect(indices.length).toBe(ROWS * K);
    const acts = out[TrainNames.acts].data as Float32Array;
    expect([...acts].every((a) => a >= 0)).toBe(true);
  });

  it('applies one Adam step, then removes the radial gradient of W_dec and keeps its rows at unit norm', async () => {
    const { x, params, dead } = makeCase(5);
    const stepSize = 0.01;
    const out = await runStep(x, params, dead, stepSize);
    const grads = {} as Record<ParamName, Float32Array>;
    for (const name of PARAM_NAMES) grads[name] = out[TrainNames.grad(name)].data as Float32Array;
    for (const name of PARAM_NAMES) {
      const g = Float64Array.from(grads[name]);
      if (name === 'w_dec') {
        for (let j = 0; j < D_SAE; j++) {
          let radial = 0;
          for (let i = 0; i < D_IN; i++) radial += g[j * D_IN + i] * params.w_dec[j * D_IN + i];
          for (let i = 0; i < D_IN; i++) g[j * D_IN + i] -= radial * params.w_dec[j * D_IN + i];
        }
      }
      // From zero moments: m = 0.1 g, v = 0.001 g², step = stepSize · m / (√v + ε).
      const m = g.map((gi) => 0.1 * gi);
      const v = g.map((gi) => 0.001 * gi * gi);
      const next = params[name].map((p, i) => p - (stepSize * m[i]) / (Math.sqrt(v[i]) + 1e-8));
      if (name === 'w_dec') {
        for (let j = 0; j < D_SAE; j++) {
          let norm = 0;
          for (let i = 0; i < D_IN; i++) norm += next[j * D_IN + i] ** 2;
          for (let i = 0; i < D_IN; i++) next[j * D_IN + i] /= Math.sqrt(norm);
        }
      }
      expectClose(out[TrainNames.newM(name)].data as Float32Array, m, 1e-5);
      expectClose(out[TrainNames.newV(name)].data as Float32Array, v, 1e-5);
      expectClose(out[TrainNames.newParam(name)].data as Float32Array, next, 1e-4);
    }
  });
});
