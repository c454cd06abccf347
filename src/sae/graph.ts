/**
 * The SAE encoder as an ONNX graph, built in code from loaded weights (SAELens equations; see
 * `docs/sae-formats.md`, section "Encoding").
 *
 * One graph per SAE (and optional list cap). Per row of `x` (`[rows, dIn]`, float32, any number of
 * rows from 1: onnxruntime dies of SIGFPE on 0 rows, as it did with the former graph, and the pool
 * refuses them) it yields the row's active features (indices and values, ordered by value,
 * descending), L0 (the count of active features) and the exact reconstruction error.
 *
 * The list width is decided inside the graph, per batch: it is the batch's largest L0 (at least 1),
 * so every row's list is its full active set and rows with fewer active features are padded with
 * index −1 and value 0. TopK takes K as a tensor, and the L0 count comes before the TopK, so this
 * costs no second run and no state. The reconstruction uses every active feature, so the error is
 * exact. For a narrow list it is a *sparse* decode: the decoder rows of the listed features are
 * gathered and weighted, `O(rows · width · dIn)` instead of the dense `O(rows · dSae · dIn)`. The
 * gathered `[rows, width, dIn]` block grows with the largest L0, though, so a batch wider than
 * `sparseDecodeMaxWidth` is decoded densely (`f · W_dec`), chosen per run by an ONNX If: the
 * transient memory stays at most `rows · sparseDecodeMaxWidth · dIn` floats.
 *
 * An optional cap (`topK`) shortens the *listed* features to the strongest `topK` of each row after
 * the decode, for display; L0 and the errors stay exact.
 *
 * Errors are measured in the space the SAE works in, after input normalisation and before
 * `b_dec` is subtracted: `sq_error = ‖x_n − x̂‖²` and `fvu = sq_error / ‖x_n − mean(x_n)‖²`, with the
 * mean taken over the row's `dIn` entries (a per-row fraction of variance unexplained; SAELens'
 * evals instead centre on the batch mean of each dimension).
 *
 * The graph has exactly one input, `x`: every weight is an initializer and none is listed as an
 * input, because onnxruntime-node only passes feeds named in `session.inputNames`; the list width
 * is computed in the graph, not fed.
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
  /**
   * int64 `[rows, width]`: every active feature of the row by value, descending (the strongest
   * `topK` when capped); −1 pads unused slots. `width` is the batch's largest L0 (at least 1), or
   * the cap when that is smaller.
   */
  indices: 'feature_indices',
  /** float32 `[rows, width]`: feature activations matching `indices`; 0 pads unused slots. */
  values: 'feature_values',
  /** int64 `[rows]`: number of active (> 0) features, counted over all `dSae` latents. */
  l0: 'l0',
  /** float32 `[rows]`: squared error of the reconstruction from every active feature, in normalised space. */
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
   * Most features listed per row (the strongest ones), an integer ≥ 1; a display cap only: L0 and
   * the errors are computed from every active feature either way. Default: no cap, every active
   * feature is listed (what firing counts need).
   */
  topK?: number;
  /**
   * Storage and matmul precision of `W_enc` and `W_dec`. `f16` halves their memory and runs the
   * encoder product in half precision (what the CUDA provider's tensor cores want); everything
   * after it (TopK, activation, errors) stays float32. Default `f32`.
   */
  weights?: 'f32' | 'f16';
  /**
   * Widest list (the batch's largest L0) whose reconstruction is a sparse decode, gathering the
   * listed rows of `W_dec`; a wider batch of a standard, JumpReLU or gated SAE is decoded densely,
   * `f · W_dec` (TopK SAEs are always decoded sparsely: their lists are at most k wide). Both are
   * exact; the sparse decode is cheaper for narrow lists, while the dense one costs one more
   * encoder-sized product but needs no `[rows, width, dIn]` block, whose size would grow with the
   * largest L0. Default `ceil(dSae / 64)`, about where the two cost the same on this project's CPU
   * (`docs/sae-formats.md`, "Encoding").
   */
  sparseDecodeMaxWidth?: number;
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
export const LAYER_NORM_EPS = 1e-5;
/**
 * Floor under a row's L2 norm in `constant_norm_rescale`. SAELens divides by the raw norm, so an
 * all-zero row becomes NaN there; here it stays zero (the only case where the two differ).
 */
export const MIN_ROW_NORM = 1e-30;

function validate(sae: SaeWeights, options: SaeEncoderGraphOptions): void {
  const { config } = sae;
  const { topK, sparseDecodeMaxWidth } = options;
  const where = `${config.source} (SAE encoder)`;
  if (topK !== undefined && (!Number.isInteger(topK) || topK < 1)) {
    throw err('SAEGATE_ERR_CONFIG', where, `topK (the list cap) must be a positive integer, got ${topK}`);
  }
  if (sparseDecodeMaxWidth !== undefined && !(sparseDecodeMaxWidth >= 0)) {
    throw err('SAEGATE_ERR_CONFIG', where, `sparseDecodeMaxWidth must be a number ≥ 0, got ${sparseDecodeMaxWidth}`);
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
 * Builds the ONNX bytes (opset 17) of the encoder for `sae`, listing every active feature of each
 * row (at most `options.topK` when given). Weight arrays are referenced, not copied, until
 * serialisation. Throws `SAEGATE_ERR_CONFIG` when `topK` is not a positive integer or the weights do
 * not match the config.
 */
export function buildSaeEncoderGraph(sae: SaeWeights, options: SaeEncoderGraphOptions = {}): Uint8Array {
  const { topK } = options;
  validate(sae, options);
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

  // --- Activation, then per row its features by value (descending), `width` of them: the batch's
  // largest L0, so every active feature of every row is among them.
  let values: string;
  let slotIndices: string;
  let l0Float: string;
  let widthFloat: string;
  /** The dense activations `[rows, dSae]`, for the architectures that compute them. */
  let denseActs: string | null = null;
  const countActive = (acts: string): string =>
    g.op('ReduceSum', [g.op('Cast', [g.op('Greater', [acts, zero])], { to: F }), g.constI64([-1])], { keepdims: 0 });
  // float32 [1]: max(1, largest L0). Counts ≤ dSae are exact in float32; at least 1 keeps every
  // shape non-empty when no feature fires anywhere in the batch. The 1 joins the counts before the
  // reduction, so a batch of 0 rows still gives a [1] tensor (TopK's K must be one).
  const batchWidth = (l0: string): string => g.op('ReduceMax', [g.op('Concat', [l0, g.constF32([1], [1])], { axis: 0 })], { keepdims: 1 });
  const asCount = (width: string): string => g.op('Cast', [width], { to: DataType.INT64 });

  if (cfg.architecture === 'topk') {
    // SAELens' activation: the k largest pre-activations, then ReLU. TopK sorts them, and ReLU keeps
    // the order, so the active ones come first and the first `width` columns hold every one.
    const k = cfg.k ?? 0;
    const pre = g.op('Add', [encode(xc), g.weightF32('b_enc', sae.b_enc, [dSae])]);
    const [preTop, preIdx] = g.opMulti('TopK', [pre, g.constI64([k])], 2, { axis: -1, largest: 1, sorted: 1 });
    const acts = g.op('Relu', [preTop]);
    l0Float = countActive(acts);
    widthFloat = batchWidth(l0Float);
    const width = asCount(widthFloat);
    values = g.op('Slice', [acts, g.constI64([0]), width, g.constI64([1])]);
    slotIndices = g.op('Slice', [preIdx, g.constI64([0]), width, g.constI64([1])]);
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
    // L0 is counted before the TopK, so the TopK's K can be the batch's largest L0.
    denseActs = dense;
    l0Float = countActive(dense);
    widthFloat = batchWidth(l0Float);
    [values, slotIndices] = g.opMulti('TopK', [dense, asCount(widthFloat)], 2, { axis: -1, largest: 1, sorted: 1 });
  }

  // --- Outputs. The listed features: all `width`, or the strongest `topK` when capped (the decode
  // below still uses all of them). Inactive slots are reported as −1; in the decode they keep their
  // (valid) TopK index, where their zero weight cancels them.
  let listedValues = values;
  let listedIndices = slotIndices;
  if (topK !== undefined) {
    const listed = asCount(g.op('Min', [widthFloat, g.constF32([topK], [1])]));
    listedValues = g.op('Slice', [values, g.constI64([0]), listed, g.constI64([1])]);
    listedIndices = g.op('Slice', [slotIndices, g.constI64([0]), listed, g.constI64([1])]);
  }
  const active = g.op('Greater', [listedValues, zero]);
  g.output(SaeEncoderNames.indices, g.op('Where', [active, listedIndices, g.constI64([-1], [])]), DataType.INT64, ['rows', 'width']);
  g.output(SaeEncoderNames.values, listedValues, F, ['rows', 'width']);
  g.output(SaeEncoderNames.l0, g.op('Cast', [l0Float], { to: DataType.INT64 }), DataType.INT64, ['rows']);

  // Reconstruction from every active feature. Sparse: [rows, 1, width] · [rows, width, dIn] →
  // [rows, 1, dIn], never touching the other rows of W_dec. Dense: f · W_dec, in half precision
  // with f16 weights like the encoder product. An If picks one per run by the list width.
  const wDec = half ? g.weightF16('W_dec', float32ToFloat16(sae.W_dec), [dSae, dIn]) : g.weightF32('W_dec', sae.W_dec, [dSae, dIn]);
  const sparseDecode = (b: GraphBuilder): string => {
    const gathered = b.op('Gather', [wDec, slotIndices], { axis: 0 });
    const decoderRows = half ? b.op('Cast', [gathered], { to: F }) : gathered;
    const weighted = b.op('MatMul', [b.op('Unsqueeze', [values, b.constI64([1])]), decoderRows]);
    return b.op('Add', [b.op('Squeeze', [weighted, b.constI64([1])]), bDec]);
  };
  let reconstruction: string;
  if (denseActs === null) {
    reconstruction = sparseDecode(g);
  } else {
    const dense = denseActs;
    const denseDecode = (b: GraphBuilder): string => {
      const product = half ? b.op('Cast', [b.op('MatMul', [b.op('Cast', [dense], { to: DataType.FLOAT16 }), wDec])], { to: F }) : b.op('MatMul', [dense, wDec]);
      return b.op('Add', [product, bDec]);
    };
    const maxSparse = options.sparseDecodeMaxWidth ?? Math.ceil(dSae / 64);
    const out = [{ dataType: F, shape: ['rows', dIn] }] as const;
    reconstruction = g.op('If', [g.op('Greater', [widthFloat, g.constF32([maxSparse], [1])])], {
      then_branch: g.subgraph('dense_decode', (b) => [{ value: denseDecode(b), ...out[0] }]),
      else_branch: g.subgraph('sparse_decode', (b) => [{ value: sparseDecode(b), ...out[0] }]),
    });
  }
  const sqError = g.op('ReduceSumSquare', [g.op('Sub', [xn, reconstruction])], { axes: [-1], keepdims: 0 });
  const rowEnergy = g.op('ReduceSumSquare', [g.op('Sub', [xn, g.op('ReduceMean', [xn], { axes: [-1], keepdims: 1 })])], { axes: [-1], keepdims: 0 });
  g.output(SaeEncoderNames.sqError, sqError, F, ['rows']);
  g.output(SaeEncoderNames.fvu, g.op('Div', [sqError, rowEnergy]), F, ['rows']);
  return g.build(17);
}
