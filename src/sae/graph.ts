/**
 * The SAE encoder as an ONNX graph, built in code from loaded weights (SAELens equations; see
 * `docs/sae-formats.md`, section "Encoding").
 *
 * One graph per SAE and top-k cap. Per row of `x` (`[rows, dIn]`, float32, any number of rows) it
 * yields the `topK` largest active features (indices and values, ordered by value, descending;
 * padded with index −1 and value 0 when fewer are active), L0 (the count of active features, all
 * of them, not only the top-K), and the reconstruction error of a *sparse* decode from the top-K
 * features only: the K decoder rows are gathered and weighted, so the decode costs
 * `O(rows · K · dIn)` instead of the dense `O(rows · dSae · dIn)`. When more than `topK` features
 * are active the error is therefore that of the truncated reconstruction, by design: it is what a
 * steering or monitoring decision based on those K features actually sees.
 *
 * Errors are measured in the space the SAE works in, after input normalisation and before
 * `b_dec` is subtracted: `sq_error = ‖x_n − x̂‖²` and `fvu = sq_error / ‖x_n − mean(x_n)‖²`, with the
 * mean taken over the row's `dIn` entries (a per-row fraction of variance unexplained; SAELens'
 * evals instead centre on the batch mean of each dimension).
 *
 * The graph has exactly one input, `x`: every weight is an initializer and none is listed as an
 * input, because onnxruntime-node only passes feeds named in `session.inputNames`.
 */
import { err } from '../common/errors.js';
import { DataType, GraphBuilder } from '../common/onnx/builder.js';
import { F16_MAX } from '../common/f16.js';
import { float32ToFloat16 } from '../common/safetensors.js';
import type { SaeWeights } from './types.js';

/** Tensor names of the encoder graph's input and outputs. */
export const SaeEncoderNames = {
  /** float32 `[rows, dIn]`: activations at the SAE's hook point, un-normalised. */
  input: 'x',
  /** int64 `[rows, topK]`: feature indices by value, descending; −1 pads unused slots. */
  indices: 'feature_indices',
  /** float32 `[rows, topK]`: feature activations matching `indices`; 0 pads unused slots. */
  values: 'feature_values',
  /** int64 `[rows]`: number of active (> 0) features, counted over all `dSae` latents. */
  l0: 'l0',
  /** float32 `[rows]`: squared error of the top-K reconstruction, in normalised space. */
  sqError: 'sq_error',
  /** float32 `[rows]`: `sq_error` over the row's own centred energy `‖x_n − mean(x_n)‖²`. */
  fvu: 'fvu',
} as const;

/** Output names in the order a caller typically fetches them. */
export const saeEncoderOutputNames: readonly string[] = [
  SaeEncoderNames.indices,
  SaeEncoderNames.values,
  SaeEncoderNames.l0,
  SaeEncoderNames.sqError,
  SaeEncoderNames.fvu,
];

export interface SaeEncoderGraphOptions {
  /**
   * Most active features reported per row, and the ones the reconstruction error is computed
   * from. An integer in `[1, dSae]`; it fixes the width of the `indices` / `values` outputs.
   */
  topK: number;
  /**
   * Storage and matmul precision of `W_enc` and `W_dec`. `f16` halves their memory and runs the
   * encoder product in half precision (what the CUDA provider's tensor cores want); everything
   * after it (TopK, activation, errors) stays float32. Default `f32`.
   */
  weights?: 'f32' | 'f16';
}

/**
 * Whether the SAE's encoder and decoder weights fit float16 without overflowing (|w| ≤ 65504);
 * an SAE whose weights do not is kept in float32 even where f16 is asked for.
 */
export function fitsFloat16(sae: SaeWeights): boolean {
  const ok = (a: Float32Array): boolean => {
    for (let i = 0; i < a.length; i++) if (!(Math.abs(a[i]) <= F16_MAX)) return false;
    return true;
  };
  return ok(sae.W_enc) && ok(sae.W_dec);
}

/** SAELens' `layer_norm` normalisation adds this to the (unbiased) standard deviation. */
const LAYER_NORM_EPS = 1e-5;
/**
 * Floor under a row's L2 norm in `constant_norm_rescale`. SAELens divides by the raw norm, so an
 * all-zero row becomes NaN there; here it stays zero (the only case where the two differ).
 */
const MIN_ROW_NORM = 1e-30;

function validate(sae: SaeWeights, topK: number): void {
  const { config } = sae;
  const where = `${config.source} (SAE encoder)`;
  if (!Number.isInteger(topK) || topK < 1 || topK > config.dSae) {
    throw err('SAEGATE_ERR_CONFIG', where, `topK must be an integer in [1, ${config.dSae}], got ${topK}`);
  }
  const expect = (name: string, actual: number, wanted: number): void => {
    if (actual !== wanted) throw err('SAEGATE_ERR_CONFIG', where, `${name} has ${actual} elements, expected ${wanted}`);
  };
  expect('W_enc', sae.W_enc.length, config.dIn * config.dSae);
  expect('W_dec', sae.W_dec.length, config.dSae * config.dIn);
  expect('b_dec', sae.b_dec.length, config.dIn);
  if (config.architecture === 'gated') {
    if (!sae.gated) throw err('SAEGATE_ERR_CONFIG', where, 'gated architecture without b_gate/r_mag/b_mag');
    expect('b_gate', sae.gated.b_gate.length, config.dSae);
    expect('r_mag', sae.gated.r_mag.length, config.dSae);
    expect('b_mag', sae.gated.b_mag.length, config.dSae);
  } else {
    expect('b_enc', sae.b_enc.length, config.dSae);
  }
  if (config.architecture === 'jumprelu') {
    if (!sae.threshold) throw err('SAEGATE_ERR_CONFIG', where, 'jumprelu architecture without threshold');
    expect('threshold', sae.threshold.length, config.dSae);
  }
  if (config.architecture === 'topk' && (config.k === null || !Number.isInteger(config.k) || config.k < 1 || config.k > config.dSae)) {
    throw err('SAEGATE_ERR_CONFIG', where, `topk architecture needs k in [1, ${config.dSae}], got ${String(config.k)}`);
  }
}

/**
 * Builds the ONNX bytes (opset 17) of the encoder for `sae`, reporting at most `options.topK`
 * features per row. Weight arrays are referenced, not copied, until serialisation. Throws
 * `SAEGATE_ERR_CONFIG` when `topK` is out of range or the weights do not match the config.
 */
export function buildSaeEncoderGraph(sae: SaeWeights, options: SaeEncoderGraphOptions): Uint8Array {
  const { topK } = options;
  validate(sae, topK);
  const cfg = sae.config;
  const { dIn, dSae } = cfg;
  const F = DataType.FLOAT;
  const g = new GraphBuilder(`saegate-sae-${cfg.architecture}`);
  const x = g.input(SaeEncoderNames.input, F, ['rows', dIn]);
  const zero = g.constF32([0], []);

  // --- Input normalisation: x_n is the space the SAE was trained in and where errors are measured.
  let xn = x;
  switch (cfg.normalizeActivations) {
    case 'none':
      break;
    case 'constant_norm_rescale': {
      const norm = g.op('Sqrt', [g.op('ReduceSumSquare', [x], { axes: [-1], keepdims: 1 })]);
      const coeff = g.op('Div', [g.constF32([Math.sqrt(dIn)], []), g.op('Max', [norm, g.constF32([MIN_ROW_NORM], [])])]);
      xn = g.op('Mul', [x, coeff]);
      break;
    }
    case 'layer_norm': {
      // torch's `x.std()` is the unbiased (n − 1) estimator, and SAELens adds eps to the std, not
      // to the variance; both matter at 1e-5 agreement.
      const centred = g.op('Sub', [x, g.op('ReduceMean', [x], { axes: [-1], keepdims: 1 })]);
      const variance = g.op('Div', [g.op('ReduceSumSquare', [centred], { axes: [-1], keepdims: 1 }), g.constF32([dIn - 1], [])]);
      xn = g.op('Div', [centred, g.op('Add', [g.op('Sqrt', [variance]), g.constF32([LAYER_NORM_EPS], [])])]);
      break;
    }
    case 'expected_average_only_in':
      // SAELens folds this factor into the weights at load time; scaling the input instead keeps
      // the published weights (and thresholds) untouched and yields identical features.
      if (cfg.scalingFactor !== null) xn = g.op('Mul', [x, g.constF32([cfg.scalingFactor], [])]);
      break;
  }

  const bDec = g.weightF32('b_dec', sae.b_dec, [dIn]);
  const xc = cfg.applyBDecToInput ? g.op('Sub', [xn, bDec]) : xn;
  const half = options.weights === 'f16';
  // x_c · W_enc, always float32 out: in f16 mode the product runs in half precision and is cast
  // back at once, so the activation and TopK see float32 like in f32 mode.
  const wEnc = half ? g.weightF16('W_enc', float32ToFloat16(sae.W_enc), [dIn, dSae]) : g.weightF32('W_enc', sae.W_enc, [dIn, dSae]);
  const encode = (input: string): string =>
    half ? g.op('Cast', [g.op('MatMul', [g.op('Cast', [input], { to: DataType.FLOAT16 }), wEnc])], { to: F }) : g.op('MatMul', [input, wEnc]);

  // --- Activation: `acts` holds, per row, candidates sorted by value with inactive ones at 0.
  let values: string;
  let slotIndices: string;
  let l0Float: string;
  const countActive = (acts: string): string =>
    g.op('ReduceSum', [g.op('Cast', [g.op('Greater', [acts, zero])], { to: F }), g.constI64([-1])], { keepdims: 0 });

  if (cfg.architecture === 'topk') {
    // One TopK on the pre-activations serves both SAELens' activation (top k, then ReLU) and our
    // report of topK features: take max(k, topK) candidates and zero the ones past k.
    const k = cfg.k ?? 0;
    const candidates = Math.max(k, topK);
    const pre = g.op('Add', [encode(xc), g.weightF32('b_enc', sae.b_enc, [dSae])]);
    const [preTop, preIdx] = g.opMulti('TopK', [pre, g.constI64([candidates])], 2, { axis: -1, largest: 1, sorted: 1 });
    let acts = g.op('Relu', [preTop]);
    if (candidates > k) {
      const keep = new Float32Array(candidates);
      keep.fill(1, 0, k);
      acts = g.op('Mul', [acts, g.constF32(keep, [candidates])]);
    }
    l0Float = countActive(acts);
    // Sorted input and a monotone activation: the first topK columns are the topK largest.
    values = candidates > topK ? g.op('Slice', [acts, g.constI64([0]), g.constI64([topK]), g.constI64([1])]) : acts;
    slotIndices = candidates > topK ? g.op('Slice', [preIdx, g.constI64([0]), g.constI64([topK]), g.constI64([1])]) : preIdx;
  } else {
    let dense: string;
    if (cfg.architecture === 'gated' && sae.gated) {
      // W_enc ⊙ exp(r_mag) scales column j by exp(r_mag[j]), so the magnitude path is the gate
      // path's product scaled per latent: one MatMul serves both.
      const h = encode(xc);
      const gate = g.op('Greater', [g.op('Add', [h, g.weightF32('b_gate', sae.gated.b_gate, [dSae])]), zero]);
      const magScale = Float32Array.from(sae.gated.r_mag, (r) => Math.exp(r));
      const magnitude = g.op('Relu', [g.op('Add', [g.op('Mul', [h, g.weightF32('exp_r_mag', magScale, [dSae])]), g.weightF32('b_mag', sae.gated.b_mag, [dSae])])]);
      dense = g.op('Mul', [magnitude, g.op('Cast', [gate], { to: F })]);
    } else {
      const pre = g.op('Add', [encode(xc), g.weightF32('b_enc', sae.b_enc, [dSae])]);
      dense = g.op('Relu', [pre]);
      if (cfg.architecture === 'jumprelu' && sae.threshold) {
        const open = g.op('Greater', [pre, g.weightF32('threshold', sae.threshold, [dSae])]);
        dense = g.op('Mul', [dense, g.op('Cast', [open], { to: F })]);
      }
    }
    l0Float = countActive(dense);
    [values, slotIndices] = g.opMulti('TopK', [dense, g.constI64([topK])], 2, { axis: -1, largest: 1, sorted: 1 });
  }

  // --- Outputs. Inactive slots keep their (valid) TopK index for the gather below, where their
  // zero weight cancels them, but are reported as −1.
  const active = g.op('Greater', [values, zero]);
  g.output(SaeEncoderNames.indices, g.op('Where', [active, slotIndices, g.constI64([-1], [])]), DataType.INT64, ['rows', topK]);
  g.output(SaeEncoderNames.values, values, F, ['rows', topK]);
  g.output(SaeEncoderNames.l0, g.op('Cast', [l0Float], { to: DataType.INT64 }), DataType.INT64, ['rows']);

  // Sparse decode: [rows, 1, K] · [rows, K, dIn] → [rows, 1, dIn], never touching the other rows of W_dec.
  const wDec = half ? g.weightF16('W_dec', float32ToFloat16(sae.W_dec), [dSae, dIn]) : g.weightF32('W_dec', sae.W_dec, [dSae, dIn]);
  const gathered = g.op('Gather', [wDec, slotIndices], { axis: 0 });
  const decoderRows = half ? g.op('Cast', [gathered], { to: F }) : gathered;
  const weighted = g.op('MatMul', [g.op('Unsqueeze', [values, g.constI64([1])]), decoderRows]);
  const reconstruction = g.op('Add', [g.op('Squeeze', [weighted, g.constI64([1])]), bDec]);
  const sqError = g.op('ReduceSumSquare', [g.op('Sub', [xn, reconstruction])], { axes: [-1], keepdims: 0 });
  const rowEnergy = g.op('ReduceSumSquare', [g.op('Sub', [xn, g.op('ReduceMean', [xn], { axes: [-1], keepdims: 1 })])], { axes: [-1], keepdims: 0 });
  g.output(SaeEncoderNames.sqError, sqError, F, ['rows']);
  g.output(SaeEncoderNames.fvu, g.op('Div', [sqError, rowEnergy]), F, ['rows']);
  return g.build(17);
}
