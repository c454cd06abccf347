/**
 * One TopK SAE training step as an ONNX graph: forward, the AuxK loss, hand-written gradients and
 * the Adam update, in a single `session.run`. Gradients are written out from the equations (there is
 * no autograd in onnxruntime-node); `test/unit/sae/train-graph.test.ts` checks them against finite
 * differences of a float64 loss.
 *
 * Model (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"):
 *
 *     x_c = x − b_dec
 *     pre = x_c · W_encᵀ + b_enc             (W_enc held as [dSae, dIn] rows)
 *     z   = ReLU(TopK_k(pre))                (values at the k largest pre-activations, 0 elsewhere)
 *     x̂   = z · W_dec + b_dec
 *     L   = ‖x − x̂‖² / V                     (V = Σ‖x − mean_batch(x)‖²: L is the batch's FVU)
 *
 *     AuxK: e = x − x̂ (held constant); ê = ReLU(TopK_kAux(pre over dead latents)) · W_dec
 *     L_aux = ‖e − ê‖² / V,  total = L + auxCoef · L_aux
 *
 * Everything that depends on the latents is computed sparsely. The decoder reads only the k (and
 * kAux) gathered rows of W_dec per input row, and the gradients of W_dec and W_enc are scatter-adds
 * of `rows · (k + kAux)` outer products. The only dense `O(rows · dIn · dSae)` work is the encoder
 * GEMM that TopK needs. That is why a step costs about one dense matmul, not three.
 *
 * After the gradients: the component of each W_dec row's gradient parallel to the row is removed
 * (the rows are kept at unit norm), Adam updates every parameter, and the W_dec rows are renormalised.
 *
 * Every tensor is a graph input, including the parameters and Adam moments, and the updated ones
 * are outputs. The caller feeds the outputs back the next step. The graph is stateless, so a
 * checkpoint is just these arrays.
 */
import { DataType, GraphBuilder } from '../../common/onnx/builder.js';

export interface TrainGraphOptions {
  dIn: number;
  dSae: number;
  /** Active latents per row. */
  k: number;
  /**
   * Most latents the AuxK loss may use per row (from the dead ones). 0 builds the graph without
   * AuxK, for steps where no latent is dead: the AuxK term's gathers and scatters would otherwise
   * cost 2–3× the rest of the step at 64 × 1024.
   */
  kAux: number;
  /** Adam β1. Default 0.9. */
  beta1?: number;
  /** Adam β2. Default 0.999. */
  beta2?: number;
  /** Adam ε. Default 1e-8. */
  epsilon?: number;
  /** Also output the raw gradients (`grad.*`), for tests. Default false. */
  gradients?: boolean;
}

/** The trainable parameters, in the orientation the graph uses. */
export const PARAM_NAMES = ['w_enc', 'b_enc', 'w_dec', 'b_dec'] as const;
export type ParamName = (typeof PARAM_NAMES)[number];

export const TrainNames = {
  /** float32 `[rows, dIn]`: the batch. */
  x: 'x',
  /** int64 `[dead]` (AuxK graphs only): the latents counted dead, which feed the AuxK loss. */
  deadIndices: 'dead_indices',
  /** int64 `[1]` (AuxK graphs only): latents per row the AuxK term uses, `min(kAux, dead)` ≥ 1. */
  auxK: 'aux_k',
  /** float32 `[1]`: Adam's bias-corrected step size, `lr · √(1 − β2ᵗ) / (1 − β1ᵗ)`. */
  stepSize: 'step_size',
  /** float32 `[1]` (AuxK graphs only): the AuxK loss coefficient. */
  auxCoef: 'aux_coef',
  param: (p: ParamName) => p,
  m: (p: ParamName) => `m.${p}`,
  v: (p: ParamName) => `v.${p}`,
  newParam: (p: ParamName) => `new.${p}`,
  newM: (p: ParamName) => `new_m.${p}`,
  newV: (p: ParamName) => `new_v.${p}`,
  grad: (p: ParamName) => `grad.${p}`,
  /** float32 scalar: Σ‖x − x̂‖² over the batch. */
  sqError: 'sq_error',
  /** float32 scalar: Σ‖x − mean(x)‖² over the batch (the FVU denominator). */
  variance: 'variance',
  /** float32 scalar: Σ‖e − ê‖² of the AuxK term. */
  auxSqError: 'aux_sq_error',
  /** int64 `[rows, k]`: the selected latents of each row. */
  indices: 'indices',
  /** float32 `[rows, k]`: their activations after ReLU (0 where a selected pre-activation was ≤ 0). */
  acts: 'acts',
} as const;

/** Shapes of the parameters for `dIn`, `dSae`. */
export function paramShape(name: ParamName, dIn: number, dSae: number): number[] {
  switch (name) {
    case 'w_enc':
    case 'w_dec':
      return [dSae, dIn];
    case 'b_enc':
      return [dSae];
    case 'b_dec':
      return [dIn];
  }
}

export function buildTrainStepGraph(options: TrainGraphOptions): Uint8Array {
  const { dIn, dSae, k, kAux } = options;
  const beta1 = options.beta1 ?? 0.9;
  const beta2 = options.beta2 ?? 0.999;
  const epsilon = options.epsilon ?? 1e-8;
  const g = new GraphBuilder('saegate_topk_train_step');
  const F = DataType.FLOAT;

  const x = g.input(TrainNames.x, F, ['rows', dIn]);
  const params = {} as Record<ParamName, string>;
  const ms = {} as Record<ParamName, string>;
  const vs = {} as Record<ParamName, string>;
  for (const p of PARAM_NAMES) {
    params[p] = g.input(TrainNames.param(p), F, paramShape(p, dIn, dSae));
    ms[p] = g.input(TrainNames.m(p), F, paramShape(p, dIn, dSae));
    vs[p] = g.input(TrainNames.v(p), F, paramShape(p, dIn, dSae));
  }
  // With AuxK: the dead latents' indices and how many of them each row may use (≤ kAux, ≤ their count).
  const deadIndices = kAux > 0 ? g.input(TrainNames.deadIndices, DataType.INT64, ['dead']) : '';
  const auxK = kAux > 0 ? g.input(TrainNames.auxK, DataType.INT64, [1]) : '';
  const stepSize = g.input(TrainNames.stepSize, F, [1]);
  const auxCoef = kAux > 0 ? g.input(TrainNames.auxCoef, F, [1]) : '';

  const axis0 = g.constI64([0]);
  const axis1 = g.constI64([1]);
  const axisLast = g.constI64([-1]);
  const two = g.constF32([2]);

  // The two helpers below are elementwise Mul + ReduceSum rather than a batched MatMul of
  // [rows, 1, s] × [rows, s, dIn]: onnxruntime runs the latter as `rows` tiny GEMMs, which measured
  // 2.5–3× slower for the whole step at 64 × 1024, batch 4096.
  /** `[rows, s]` × `[rows, s, dIn]` → `[rows, dIn]`: Σ_j a[r, j] · rows[r, j, :]. */
  const weightedSum = (a: string, gathered: string): string =>
    g.op('ReduceSum', [g.op('Mul', [g.op('Unsqueeze', [a, axisLast]), gathered]), axis1], { keepdims: 0 });
  /** `[rows, s, dIn]` · `[rows, dIn]` → `[rows, s]`: each gathered row dotted with v[r]. */
  const dots = (gathered: string, v: string): string =>
    g.op('ReduceSum', [g.op('Mul', [gathered, g.op('Unsqueeze', [v, axis1])]), axisLast], { keepdims: 0 });
  /** `[rows, s]` ⊗ `[rows, dIn]` → `[rows, s, dIn]` outer products. */
  const outer = (a: string, v: string): string => g.op('Mul', [g.op('Unsqueeze', [a, axisLast]), g.op('Unsqueeze', [v, axis1])]);
  const relu1 = (t: string): string => g.op('Cast', [g.op('Greater', [t, g.constF32([0])])], { to: F });

  // Forward.
  const xc = g.op('Sub', [x, params.b_dec]);
  const pre = g.op('Gemm', [xc, params.w_enc, params.b_enc], { transB: 1 });
  const [topVals, topIdx] = g.opMulti('TopK', [pre, g.constI64([k])], 2, { axis: -1, largest: 1, sorted: 1 });
  const acts = g.op('Relu', [topVals]);
  const decRows = g.op('Gather', [params.w_dec, topIdx], { axis: 0 }); // [rows, k, dIn]
  const recon = g.op('Add', [weightedSum(acts, decRows), params.b_dec]);
  const e = g.op('Sub', [recon, x]);
  const sqError = g.op('ReduceSum', [g.op('Mul', [e, e])], { keepdims: 0 });
  const centred = g.op('Sub', [x, g.op('ReduceMean', [x], { axes: [0], keepdims: 1 })]);
  const variance = g.op('ReduceSum', [g.op('Mul', [centred, centred])], { keepdims: 0 });
  // dL/dx̂ = 2e / V (a floor on V keeps a constant batch from dividing by zero).
  const invV = g.op('Div', [two, g.op('Max', [variance, g.constF32([1e-12])])]);
  const gE = g.op('Mul', [e, invV]);

  // Main-loss gradients over the k selected latents.
  const dActs = g.op('Mul', [dots(decRows, gE), relu1(topVals)]); // dL/dpre at the selected latents
  const encRows = g.op('Gather', [params.w_enc, topIdx], { axis: 0 });
  let scatterIdx = topIdx;
  let decUpdates = outer(acts, gE);
  let encUpdates = outer(dActs, xc);
  let biasUpdates = dActs;
  let dXc = weightedSum(dActs, encRows);
  let auxSqError = g.constF32([0], []);

  if (kAux > 0) {
    // Only the dead latents' pre-activations take part: gathering them first keeps the AuxK TopK
    // and everything after it proportional to the number of dead latents, not to dSae.
    const [auxVals, auxLocal] = g.opMulti('TopK', [g.op('Gather', [pre, deadIndices], { axis: 1 }), auxK], 2, { axis: -1, largest: 1, sorted: 0 });
    const auxIdx = g.op('Gather', [deadIndices, auxLocal], { axis: 0 });
    const auxActs = g.op('Relu', [auxVals]);
    const auxDecRows = g.op('Gather', [params.w_dec, auxIdx], { axis: 0 });
    // e − ê with e = x − x̂ = −(x̂ − x): the residual the dead latents try to explain.
    const auxErr = g.op('Add', [weightedSum(auxActs, auxDecRows), e]);
    auxSqError = g.op('ReduceSum', [g.op('Mul', [auxErr, auxErr])], { keepdims: 0 });
    const gA = g.op('Mul', [auxErr, g.op('Mul', [invV, auxCoef])]);
    const dAux = g.op('Mul', [dots(auxDecRows, gA), relu1(auxVals)]);
    const auxEncRows = g.op('Gather', [params.w_enc, auxIdx], { axis: 0 });
    scatterIdx = g.op('Concat', [topIdx, auxIdx], { axis: 1 });
    decUpdates = g.op('Concat', [decUpdates, outer(auxActs, gA)], { axis: 1 });
    encUpdates = g.op('Concat', [encUpdates, outer(dAux, xc)], { axis: 1 });
    biasUpdates = g.op('Concat', [biasUpdates, dAux], { axis: 1 });
    dXc = g.op('Add', [dXc, weightedSum(dAux, auxEncRows)]);
  }

  // Row-major flattening keeps indices and updates aligned: entry r·s + j is latent j of row r.
  const flatIdx = g.op('Reshape', [scatterIdx, g.constI64([-1, 1])]);
  const flatRows = (t: string): string => g.op('Reshape', [t, g.constI64([-1, dIn])]);
  const zerosLike = (shape: number[]): string => g.op('ConstantOfShape', [g.constI64(shape)], { value: { dataType: F, dims: [1], raw: new Uint8Array(4) } });
  const grads: Record<ParamName, string> = {
    w_dec: g.op('ScatterND', [zerosLike([dSae, dIn]), flatIdx, flatRows(decUpdates)], { reduction: 'add' }),
    w_enc: g.op('ScatterND', [zerosLike([dSae, dIn]), flatIdx, flatRows(encUpdates)], { reduction: 'add' }),
    b_enc: g.op('ScatterND', [zerosLike([dSae]), flatIdx, g.op('Reshape', [biasUpdates, g.constI64([-1])])], { reduction: 'add' }),
    // b_dec enters x̂ directly and every pre-activation through x_c = x − b_dec.
    b_dec: g.op('Sub', [g.op('ReduceSum', [gE, axis0], { keepdims: 0 }), g.op('ReduceSum', [dXc, axis0], { keepdims: 0 })]),
  };

  if (options.gradients === true) {
    for (const p of PARAM_NAMES) g.output(TrainNames.grad(p), grads[p], F, paramShape(p, dIn, dSae));
  }

  // Keep W_dec rows on the unit sphere: drop the gradient's radial component before Adam.
  const radial = g.op('ReduceSum', [g.op('Mul', [grads.w_dec, params.w_dec]), axisLast], { keepdims: 1 });
  const decGrad = g.op('Sub', [grads.w_dec, g.op('Mul', [radial, params.w_dec])]);
  const updateGrads: Record<ParamName, string> = { ...grads, w_dec: decGrad };

  const b1 = g.constF32([beta1]);
  const b2 = g.constF32([beta2]);
  const oneMinusB1 = g.constF32([1 - beta1]);
  const oneMinusB2 = g.constF32([1 - beta2]);
  const eps = g.constF32([epsilon]);
  for (const p of PARAM_NAMES) {
    const grad = updateGrads[p];
    const m = g.op('Add', [g.op('Mul', [ms[p], b1]), g.op('Mul', [grad, oneMinusB1])]);
    const v = g.op('Add', [g.op('Mul', [vs[p], b2]), g.op('Mul', [g.op('Mul', [grad, grad]), oneMinusB2])]);
    const step = g.op('Div', [g.op('Mul', [m, stepSize]), g.op('Add', [g.op('Sqrt', [v]), eps])]);
    let next = g.op('Sub', [params[p], step]);
    if (p === 'w_dec') {
      const norm = g.op('Sqrt', [g.op('Max', [g.op('ReduceSum', [g.op('Mul', [next, next]), axisLast], { keepdims: 1 }), g.constF32([1e-24])])]);
      next = g.op('Div', [next, norm]);
    }
    g.output(TrainNames.newParam(p), next, F, paramShape(p, dIn, dSae));
    g.output(TrainNames.newM(p), m, F, paramShape(p, dIn, dSae));
    g.output(TrainNames.newV(p), v, F, paramShape(p, dIn, dSae));
  }

  g.output(TrainNames.sqError, sqError, F, []);
  g.output(TrainNames.variance, variance, F, []);
  g.output(TrainNames.auxSqError, auxSqError, F, []);
  g.output(TrainNames.indices, topIdx, DataType.INT64, ['rows', k]);
  g.output(TrainNames.acts, acts, F, ['rows', k]);
  return g.build(17);
}
