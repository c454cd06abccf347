/**
 * A slow, plain reference forward pass over ModelWeights, written to be obviously correct rather
 * than fast: float64 everywhere, one position at a time, full causal attention recomputed from
 * scratch (no KV cache), no fused anything. Tests compare the real runtime's taps, logits and
 * steering against it.
 *
 * Math (Llama 2):
 *   x₀ = embedding[token]
 *   block L: resid_pre = x (+ steering at blocks.L.hook_resid_pre)
 *            h = resid_pre + Wo · attn(RoPE(Wq · n), RoPE(Wk · n), Wv · n),  n = RMSNorm(resid_pre, attnNorm)
 *            resid_post = h + W2 · (silu(W1 · m) ⊙ W3 · m),  m = RMSNorm(h, ffnNorm)   (+ steering at hook_resid_post)
 *   logits = C · RMSNorm(x_last, finalNorm),  C = classifier or the embedding when tied
 *   RMSNorm(x, w) = x / sqrt(mean(x²) + eps) ⊙ w
 *   RoPE: pair i of a head (dims 2i, 2i+1 interleaved; i, i + d/2 for 'half') rotated by p · θ^(−2i/d)
 *   GQA: query head h reads kv head ⌊h / (nHeads / nKvHeads)⌋
 */
import { hookName, parseHookName, type ModelWeights } from '../../src/model/types.js';

/** One additive steering term, as in the runtime: positions in [fromPosition, untilPosition) get + scale × vector. */
export interface ReferenceSteering {
  hook: string;
  vector: ArrayLike<number>;
  scale: number;
  fromPosition: number;
  /** null = until the end. */
  untilPosition: number | null;
}

/** Options of `referenceForward`. */
export interface ReferenceForwardOptions {
  /** Additive steering terms; entries on the same hook and position add up. Default none. */
  steering?: readonly ReferenceSteering[];
}

/** Everything one reference pass computes, per position. */
export interface ReferenceForwardResult {
  /** logits[p]: next-token logits after position p. */
  logits: Float64Array[];
  /** hooks[hookName][p]: the residual stream at that hook for position p, after that hook's steering. */
  hooks: Record<string, Float64Array[]>;
}

/** y = W · x for W stored row-major [rows, cols]. */
function matvec(w: Float32Array, x: Float64Array, rows: number, cols: number): Float64Array {
  const y = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let sum = 0;
    const base = r * cols;
    for (let c = 0; c < cols; c++) sum += w[base + c] * x[c];
    y[r] = sum;
  }
  return y;
}

function rmsnorm(x: Float64Array, weight: Float32Array, eps: number): Float64Array {
  let sumSquares = 0;
  for (const v of x) sumSquares += v * v;
  const scale = 1 / Math.sqrt(sumSquares / x.length + eps);
  return x.map((v, i) => v * scale * weight[i]);
}

/** Rotates every head of `vec` (nHeads heads of headDim) in place for position `pos`. */
function rope(vec: Float64Array, nHeads: number, headDim: number, pos: number, theta: number, style: 'interleaved' | 'half'): void {
  const half = headDim / 2;
  for (let h = 0; h < nHeads; h++) {
    for (let i = 0; i < half; i++) {
      const angle = pos * theta ** ((-2 * i) / headDim);
      const cos = Math.cos(angle);
      const sin = Math.sin(angle);
      const a = h * headDim + (style === 'interleaved' ? 2 * i : i);
      const b = style === 'interleaved' ? a + 1 : a + half;
      const v0 = vec[a];
      const v1 = vec[b];
      vec[a] = v0 * cos - v1 * sin;
      vec[b] = v0 * sin + v1 * cos;
    }
  }
}

function silu(v: number): number {
  return v / (1 + Math.exp(-v));
}

/** Runs the model over `tokens` (positions 0..n-1) and returns logits and every hook's value. */
export function referenceForward(weights: ModelWeights, tokens: readonly number[], options: ReferenceForwardOptions = {}): ReferenceForwardResult {
  const config = weights.config;
  const { dim, hiddenDim, nHeads, nKvHeads, vocabSize, normEps } = config;
  const headDim = dim / nHeads;
  const kvDim = nKvHeads * headDim;
  const group = nHeads / nKvHeads;
  const steering = options.steering ?? [];
  for (const s of steering) {
    const parsed = parseHookName(s.hook);
    if (!parsed || parsed.layer >= config.nLayers) throw new Error(`reference: unknown hook ${s.hook}`);
    if (s.vector.length !== dim) throw new Error(`reference: steering vector has ${s.vector.length} values, d_model is ${dim}`);
  }
  const steer = (hook: string, pos: number, x: Float64Array): void => {
    for (const s of steering) {
      if (s.hook !== hook || pos < s.fromPosition || (s.untilPosition !== null && pos >= s.untilPosition)) continue;
      for (let i = 0; i < dim; i++) x[i] += s.scale * s.vector[i];
    }
  };

  const n = tokens.length;
  let x: Float64Array[] = tokens.map((t) => {
    if (!Number.isInteger(t) || t < 0 || t >= vocabSize) throw new Error(`reference: token ${t} outside the vocabulary`);
    return Float64Array.from(weights.tokenEmbedding.subarray(t * dim, (t + 1) * dim));
  });
  const hooks: Record<string, Float64Array[]> = {};

  weights.layers.forEach((layer, l) => {
    const preName = hookName(l, 'hook_resid_pre');
    x.forEach((row, p) => steer(preName, p, row));
    hooks[preName] = x.map((row) => row.slice());

    // Attention: queries, keys and values of every position first, then each position attends to 0..p.
    const qs: Float64Array[] = [];
    const ks: Float64Array[] = [];
    const vs: Float64Array[] = [];
    for (let p = 0; p < n; p++) {
      const normed = rmsnorm(x[p], layer.attnNorm, normEps);
      const q = matvec(layer.wq, normed, dim, dim);
      const k = matvec(layer.wk, normed, kvDim, dim);
      rope(q, nHeads, headDim, p, config.ropeTheta, config.ropeStyle);
      rope(k, nKvHeads, headDim, p, config.ropeTheta, config.ropeStyle);
      qs.push(q);
      ks.push(k);
      vs.push(matvec(layer.wv, normed, kvDim, dim));
    }
    const afterAttention = x.map((row, p) => {
      const heads = new Float64Array(dim);
      for (let h = 0; h < nHeads; h++) {
        const kvHead = Math.floor(h / group);
        const scores = new Float64Array(p + 1);
        for (let t = 0; t <= p; t++) {
          let dot = 0;
          for (let i = 0; i < headDim; i++) dot += qs[p][h * headDim + i] * ks[t][kvHead * headDim + i];
          scores[t] = dot / Math.sqrt(headDim);
        }
        const max = Math.max(...scores);
        let total = 0;
        for (let t = 0; t <= p; t++) total += scores[t] = Math.exp(scores[t] - max);
        for (let t = 0; t <= p; t++) {
          const weight = scores[t] / total;
          for (let i = 0; i < headDim; i++) heads[h * headDim + i] += weight * vs[t][kvHead * headDim + i];
        }
      }
      const projected = matvec(layer.wo, heads, dim, dim);
      return row.map((v, i) => v + projected[i]);
    });

    const postName = hookName(l, 'hook_resid_post');
    x = afterAttention.map((row, p) => {
      const normed = rmsnorm(row, layer.ffnNorm, normEps);
      const gate = matvec(layer.w1, normed, hiddenDim, dim);
      const up = matvec(layer.w3, normed, hiddenDim, dim);
      const inner = gate.map((g, i) => silu(g) * up[i]);
      const down = matvec(layer.w2, inner, dim, hiddenDim);
      const out = row.map((v, i) => v + down[i]);
      steer(postName, p, out);
      return out;
    });
    hooks[postName] = x.map((row) => row.slice());
  });

  const classifier = weights.classifier ?? weights.tokenEmbedding;
  const logits = x.map((row) => matvec(classifier, rmsnorm(row, weights.finalNorm, normEps), vocabSize, dim));
  return { logits, hooks };
}

/** Index of the largest value; the first one on ties (like llama2.c's argmax). */
export function argmax(values: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

/**
 * Greedy decoding by recomputing the whole forward pass for every new token. Returns the `steps`
 * generated ids (the prompt excluded).
 */
export function referenceGreedy(weights: ModelWeights, prompt: readonly number[], steps: number, options: ReferenceForwardOptions = {}): number[] {
  const sequence = [...prompt];
  const generated: number[] = [];
  for (let s = 0; s < steps; s++) {
    const { logits } = referenceForward(weights, sequence, options);
    const next = argmax(logits[logits.length - 1]);
    generated.push(next);
    sequence.push(next);
  }
  return generated;
}
