/**
 * The llama-family decoder as an ONNX graph, built in TypeScript from loaded weights.
 *
 * One graph serves prefill and decode, for a batch of sequences that occupy consecutive KV-cache
 * slots. The KV cache lives outside the graph, in buffers the runtime owns
 * (`[maxSlots, nKvHeads, maxSeqLen, headDim]` per layer); the graph reads the slice it needs and
 * returns only the new keys/values, which the runtime writes back. That keeps the graph stateless
 * and lets sequences join and leave the batch at any step (continuous batching).
 *
 * Hook points (TransformerLens names) are graph outputs `tap.<hook>` (float32) and
 * `tap16.<hook>` (float16). onnxruntime only copies out the outputs a run asks for, so untapped runs
 * pay nothing for them. Each hook also has an input `steer.<hook>` added to the residual stream
 * there: `[B, T, dim]` so each sequence and position of a batch can be steered differently, or a
 * broadcast `[1, 1, dim]` zero row when nobody is steered at that hook. (An initializer listed as
 * an input would make a neater optional input, but onnxruntime-node only passes feeds named in
 * `session.inputNames`, which excludes such initializers, so the override would be ignored.)
 *
 * Inputs:
 * - `input_ids` int64 `[B, T]` (T = 1 when decoding; padded prompt length when prefilling)
 * - `rope_cos`, `rope_sin` float `[B, T, headDim/2]` for each token's position
 * - `attn_bias` float `[B, T, S]`: 0 where query t may attend key s, -1e9 elsewhere; S = P + T
 * - `cache_start`, `cache_end` int64 `[2]`: `[firstSlot, 0]` and `[lastSlot+1, P]` select the
 *   cached keys of the batch (P = longest cached prefix in the batch)
 * - `cache_k.<l>`, `cache_v.<l>` float `[maxSlots, nKvHeads, maxSeqLen, headDim]`
 * - `logit_rows` int64 `[N]`: flat indices into the `B·T` positions whose logits are wanted
 * Outputs: `logits` `[N, vocab]`, `new_k.<l>`, `new_v.<l>` `[B, nKvHeads, T, headDim]`, taps.
 */
import { DataType, GraphBuilder } from '../common/onnx/builder.js';
import { headDim, hookName, type ModelWeights } from './types.js';

/** Transposes a row-major `[rows, cols]` matrix into a new `[cols, rows]` one. */
function transpose(m: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(m.length);
  // Blocked to stay cache-friendly on large matrices.
  const block = 64;
  for (let r0 = 0; r0 < rows; r0 += block) {
    for (let c0 = 0; c0 < cols; c0 += block) {
      const rEnd = Math.min(rows, r0 + block);
      const cEnd = Math.min(cols, c0 + block);
      for (let r = r0; r < rEnd; r++) {
        for (let c = c0; c < cEnd; c++) out[c * rows + r] = m[r * cols + c];
      }
    }
  }
  return out;
}

/** `[in, a+b+…]` matrix for one fused MatMul from several `[out_i, in]` weights. */
function fuseTransposed(mats: readonly Float32Array[], outs: readonly number[], inDim: number): Float32Array {
  const total = outs.reduce((a, b) => a + b, 0);
  const fused = new Float32Array(inDim * total);
  let colOffset = 0;
  mats.forEach((m, i) => {
    const rows = outs[i];
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < inDim; c++) fused[c * total + colOffset + r] = m[r * inDim + c];
    }
    colOffset += rows;
  });
  return fused;
}

export const GraphNames = {
  inputIds: 'input_ids',
  ropeCos: 'rope_cos',
  ropeSin: 'rope_sin',
  attnBias: 'attn_bias',
  cacheStart: 'cache_start',
  cacheEnd: 'cache_end',
  logitRows: 'logit_rows',
  logits: 'logits',
  cacheK: (l: number) => `cache_k.${l}`,
  cacheV: (l: number) => `cache_v.${l}`,
  newK: (l: number) => `new_k.${l}`,
  newV: (l: number) => `new_v.${l}`,
  tap: (hook: string) => `tap.${hook}`,
  tap16: (hook: string) => `tap16.${hook}`,
  steer: (hook: string) => `steer.${hook}`,
} as const;

export interface DecoderGraphOptions {
  /** KV-cache slots, i.e. the largest batch. */
  maxSlots: number;
}

/** Builds the ONNX bytes of the decoder. */
export function buildDecoderGraph(weights: ModelWeights, options: DecoderGraphOptions): Uint8Array {
  const cfg = weights.config;
  const D = cfg.dim;
  const H = cfg.nHeads;
  const KV = cfg.nKvHeads;
  const hd = headDim(cfg);
  const rep = H / KV;
  const g = new GraphBuilder('saegate-llama');
  const F = DataType.FLOAT;

  const inputIds = g.input(GraphNames.inputIds, DataType.INT64, ['batch', 'seq']);
  const ropeCos = g.input(GraphNames.ropeCos, F, ['batch', 'seq', hd / 2]);
  const ropeSin = g.input(GraphNames.ropeSin, F, ['batch', 'seq', hd / 2]);
  const attnBias = g.input(GraphNames.attnBias, F, ['batch', 'seq', 'total']);
  const cacheStart = g.input(GraphNames.cacheStart, DataType.INT64, [2]);
  const cacheEnd = g.input(GraphNames.cacheEnd, DataType.INT64, [2]);
  const logitRows = g.input(GraphNames.logitRows, DataType.INT64, ['rows']);

  const eps = g.constF32([cfg.normEps], []);
  const attnScale = g.constF32([1 / Math.sqrt(hd)], []);
  const cacheAxes = g.constI64([0, 2]);

  const rmsNorm = (x: string, weight: Float32Array, name: string): string => {
    const w = g.weightF32(name, weight, [D]);
    const sq = g.op('Mul', [x, x]);
    const mean = g.op('ReduceMean', [sq], { axes: [-1], keepdims: 1 });
    const inv = g.op('Reciprocal', [g.op('Sqrt', [g.op('Add', [mean, eps])])]);
    return g.op('Mul', [g.op('Mul', [x, inv]), w]);
  };

  // RoPE tables broadcast over heads; the interleaved layout rotates (2i, 2i+1) pairs, the half
  // layout (i, i + hd/2) pairs.
  const interleaved = cfg.ropeStyle === 'interleaved';
  const ropeAxes = g.constI64(interleaved ? [2, 4] : [2]);
  const cos = g.op('Unsqueeze', [ropeCos, ropeAxes]);
  const sin = g.op('Unsqueeze', [ropeSin, ropeAxes]);
  const rope = (x: string, heads: number): string => {
    if (interleaved) {
      const pairs = g.op('Reshape', [x, g.constI64([0, 0, heads, hd / 2, 2])]);
      const [x0, x1] = g.opMulti('Split', [pairs, g.constI64([1, 1])], 2, { axis: -1 });
      const r0 = g.op('Sub', [g.op('Mul', [x0, cos]), g.op('Mul', [x1, sin])]);
      const r1 = g.op('Add', [g.op('Mul', [x0, sin]), g.op('Mul', [x1, cos])]);
      return g.op('Reshape', [g.op('Concat', [r0, r1], { axis: -1 }), g.constI64([0, 0, heads, hd])]);
    }
    const [x0, x1] = g.opMulti('Split', [x, g.constI64([hd / 2, hd / 2])], 2, { axis: -1 });
    const r0 = g.op('Sub', [g.op('Mul', [x0, cos]), g.op('Mul', [x1, sin])]);
    const r1 = g.op('Add', [g.op('Mul', [x1, cos]), g.op('Mul', [x0, sin])]);
    return g.op('Concat', [r0, r1], { axis: -1 });
  };

  // [B, T, S] → [B, 1, 1, T, S] to broadcast over (kv head, group) in the grouped attention below.
  const bias = g.op('Unsqueeze', [attnBias, g.constI64([1, 2])]);

  const hook = (x: string, name: string): string => {
    const steer = g.input(GraphNames.steer(name), F, ['steer_batch', 'steer_seq', D]);
    const steered = g.op('Add', [x, steer]);
    g.output(GraphNames.tap(name), steered, F, ['batch', 'seq', D]);
    g.output(GraphNames.tap16(name), g.op('Cast', [steered], { to: DataType.FLOAT16 }), DataType.FLOAT16, ['batch', 'seq', D]);
    return steered;
  };

  let resid = g.op('Gather', [g.weightF32('tok_embeddings', weights.tokenEmbedding, [cfg.vocabSize, D]), inputIds], { axis: 0 });

  weights.layers.forEach((layer, l) => {
    const pre = hook(resid, hookName(l, 'hook_resid_pre'));

    // Attention: one fused QKV projection, RoPE, then grouped-query attention over cached + new keys.
    const h = rmsNorm(pre, layer.attnNorm, `layers.${l}.attention_norm`);
    const qkvW = g.weightF32(`layers.${l}.wqkv`, fuseTransposed([layer.wq, layer.wk, layer.wv], [H * hd, KV * hd, KV * hd], D), [D, (H + 2 * KV) * hd]);
    const qkv = g.op('MatMul', [h, qkvW]);
    const [q0, k0, v0] = g.opMulti('Split', [qkv, g.constI64([H * hd, KV * hd, KV * hd])], 3, { axis: -1 });
    const q = rope(g.op('Reshape', [q0, g.constI64([0, 0, H, hd])]), H);
    const k = rope(g.op('Reshape', [k0, g.constI64([0, 0, KV, hd])]), KV);
    const v = g.op('Reshape', [v0, g.constI64([0, 0, KV, hd])]);
    const kNew = g.op('Transpose', [k], { perm: [0, 2, 1, 3] }, GraphNames.newK(l));
    const vNew = g.op('Transpose', [v], { perm: [0, 2, 1, 3] }, GraphNames.newV(l));
    g.output(GraphNames.newK(l), kNew, F, ['batch', KV, 'seq', hd]);
    g.output(GraphNames.newV(l), vNew, F, ['batch', KV, 'seq', hd]);

    const cacheShape = [options.maxSlots, KV, cfg.maxSeqLen, hd];
    const cacheK = g.input(GraphNames.cacheK(l), F, cacheShape);
    const cacheV = g.input(GraphNames.cacheV(l), F, cacheShape);
    const pastK = g.op('Slice', [cacheK, cacheStart, cacheEnd, cacheAxes]);
    const pastV = g.op('Slice', [cacheV, cacheStart, cacheEnd, cacheAxes]);
    const keys = g.op('Unsqueeze', [g.op('Concat', [pastK, kNew], { axis: 2 }), g.constI64([2])]); // [B, KV, 1, S, hd]
    const values = g.op('Unsqueeze', [g.op('Concat', [pastV, vNew], { axis: 2 }), g.constI64([2])]);
    const qg = g.op('Reshape', [g.op('Transpose', [q], { perm: [0, 2, 1, 3] }), g.constI64([0, KV, rep, -1, hd])]); // [B, KV, rep, T, hd]
    const scores = g.op('Add', [g.op('Mul', [g.op('MatMul', [qg, g.op('Transpose', [keys], { perm: [0, 1, 2, 4, 3] })]), attnScale]), bias]);
    const probs = g.op('Softmax', [scores], { axis: -1 });
    const ctx = g.op('Reshape', [g.op('MatMul', [probs, values]), g.constI64([0, H, -1, hd])]); // [B, H, T, hd]
    const merged = g.op('Reshape', [g.op('Transpose', [ctx], { perm: [0, 2, 1, 3] }), g.constI64([0, 0, H * hd])]);
    const attnOut = g.op('MatMul', [merged, g.weightF32(`layers.${l}.wo_t`, transpose(layer.wo, D, H * hd), [H * hd, D])]);
    const mid = g.op('Add', [pre, attnOut]);

    // SwiGLU feed-forward with fused gate/up projection.
    const h2 = rmsNorm(mid, layer.ffnNorm, `layers.${l}.ffn_norm`);
    const guW = g.weightF32(`layers.${l}.w13`, fuseTransposed([layer.w1, layer.w3], [cfg.hiddenDim, cfg.hiddenDim], D), [D, 2 * cfg.hiddenDim]);
    const [gate, up] = g.opMulti('Split', [g.op('MatMul', [h2, guW]), g.constI64([cfg.hiddenDim, cfg.hiddenDim])], 2, { axis: -1 });
    const act = g.op('Mul', [g.op('Mul', [gate, g.op('Sigmoid', [gate])]), up]);
    const ffnOut = g.op('MatMul', [act, g.weightF32(`layers.${l}.w2_t`, transpose(layer.w2, D, cfg.hiddenDim), [cfg.hiddenDim, D])]);
    resid = hook(g.op('Add', [mid, ffnOut]), hookName(l, 'hook_resid_post'));
  });

  const final = rmsNorm(resid, weights.finalNorm, 'norm');
  const rows = g.op('Gather', [g.op('Reshape', [final, g.constI64([-1, D])]), logitRows], { axis: 0 });
  // Gemm with transB reads the [vocab, dim] classifier (or the tied embedding) without a transposed copy.
  const classifier = weights.classifier ? g.weightF32('output', weights.classifier, [cfg.vocabSize, D]) : 'tok_embeddings';
  const logits = g.op('Gemm', [rows, classifier], { transB: 1 });
  g.output(GraphNames.logits, logits, F, ['rows', cfg.vocabSize]);
  return g.build(17);
}
