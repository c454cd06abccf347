/**
 * The splice-evaluation worker: owns a one-sequence session of the decoder graph and, per document,
 * runs the model three times over the whole token sequence:
 *
 * 1. clean: logits, and the activations at the SAE's hook (the graph's `tap.<hook>` output);
 * 2. spliced: the hook's activations replaced by the SAE's reconstruction, through the hook's
 *    steering input: `steer = x̂ − x`, so the residual stream there becomes exactly x̂. Positions
 *    only see earlier positions and the hook's own value does not depend on its steering, so one
 *    clean pass gives every x the spliced pass needs;
 * 3. ablated: `steer = −x`, the hook zeroed (the baseline of "CE loss recovered").
 *
 * The SAE reconstruction is computed here in JavaScript from the TopK equations (64 × 1024 per row
 * is a few hundred thousand multiply-adds), which keeps the decoder graph untouched.
 */
import type { InferenceSession, Tensor } from 'onnxruntime-node';
import { createSession, loadOrt, runSession, type Ort } from '../../common/ort.js';
import { serveWorker, type WorkerReply } from '../../common/worker-port.js';
import { GraphNames } from '../../model/graph.js';
import { ropeTables } from '../../model/rope.js';
import type { ScoreRequest, SpliceInit, SpliceScores, SpliceWorkerProtocol } from './splice-protocol.js';

let ort: Ort;
let session: InferenceSession;
let init: SpliceInit;
let cos: Float32Array;
let sin: Float32Array;

async function start(msg: SpliceInit): Promise<void> {
  init = msg;
  ort = await loadOrt();
  session = await createSession(msg.model, { device: msg.device, intraOpThreads: msg.intraOpThreads });
  ({ cos, sin } = ropeTables(msg.config));
}

/** The TopK SAE's reconstruction of one row (`W_enc` `[dIn, dSae]`, SAELens orientation). */
function reconstruct(x: Float32Array, out: Float32Array, pre: Float64Array): void {
  const { W_enc, b_enc, W_dec, b_dec, dIn, dSae, k } = init.sae;
  pre.set(b_enc);
  for (let i = 0; i < dIn; i++) {
    const xi = x[i] - b_dec[i];
    const row = i * dSae;
    for (let j = 0; j < dSae; j++) pre[j] += xi * W_enc[row + j];
  }
  // Selection of the k largest, then ReLU, exactly as the TopK encoder graph.
  const chosen: number[] = [];
  for (let j = 0; j < dSae; j++) {
    if (chosen.length < k) {
      chosen.push(j);
      continue;
    }
    let minAt = 0;
    for (let c = 1; c < k; c++) if (pre[chosen[c]] < pre[chosen[minAt]]) minAt = c;
    if (pre[j] > pre[chosen[minAt]]) chosen[minAt] = j;
  }
  out.set(b_dec);
  for (const j of chosen) {
    const a = pre[j];
    if (a <= 0) continue;
    for (let i = 0; i < dIn; i++) out[i] += a * W_dec[j * dIn + i];
  }
}

/** Mean −log p(next token) over positions 0..T−2, from `[T, vocab]` logits. */
function crossEntropy(logits: Float32Array, tokens: readonly number[], vocab: number): number {
  let sum = 0;
  for (let t = 0; t + 1 < tokens.length; t++) {
    const row = logits.subarray(t * vocab, (t + 1) * vocab);
    let max = -Infinity;
    for (let v = 0; v < vocab; v++) if (row[v] > max) max = row[v];
    let z = 0;
    for (let v = 0; v < vocab; v++) z += Math.exp(row[v] - max);
    sum += Math.log(z) + max - row[tokens[t + 1]];
  }
  return sum / (tokens.length - 1);
}

async function score({ tokens }: ScoreRequest): Promise<WorkerReply<SpliceScores>> {
  const { config, hook } = init;
  const T = tokens.length;
  const D = config.dim;
  const headDim = config.dim / config.nHeads;
  const half = headDim / 2;
  const f32 = (data: Float32Array, dims: number[]): Tensor => new ort.Tensor('float32', data, dims);
  const i64 = (values: number[], dims: number[]): Tensor => new ort.Tensor('int64', BigInt64Array.from(values, (v) => BigInt(v)), dims);
  const bias = new Float32Array(T * T).fill(-1e9);
  for (let t = 0; t < T; t++) for (let j = 0; j <= t; j++) bias[t * T + j] = 0;
  const cacheDims = [1, config.nKvHeads, config.maxSeqLen, headDim];
  const emptyCache = f32(new Float32Array(config.nKvHeads * config.maxSeqLen * headDim), cacheDims);
  const zeroSteer = f32(new Float32Array(D), [1, 1, D]);
  const base: Record<string, Tensor> = {
    [GraphNames.inputIds]: i64(tokens, [1, T]),
    [GraphNames.ropeCos]: f32(cos.slice(0, T * half), [1, T, half]),
    [GraphNames.ropeSin]: f32(sin.slice(0, T * half), [1, T, half]),
    [GraphNames.attnBias]: f32(bias, [1, T, T]),
    [GraphNames.cacheStart]: i64([0, 0], [2]),
    [GraphNames.cacheEnd]: i64([1, 0], [2]),
    [GraphNames.logitRows]: i64(Array.from({ length: T }, (_, t) => t), [T]),
  };
  for (let l = 0; l < config.nLayers; l++) {
    base[GraphNames.cacheK(l)] = emptyCache;
    base[GraphNames.cacheV(l)] = emptyCache;
  }
  for (const h of init.hookPoints) base[GraphNames.steer(h)] = zeroSteer;
  const run = async (steer: Float32Array | null): Promise<{ logits: Float32Array; tap: Float32Array }> => {
    const feeds = steer ? { ...base, [GraphNames.steer(hook)]: f32(steer, [1, T, D]) } : base;
    const out = await runSession(session, feeds, [GraphNames.logits, GraphNames.tap(hook)]);
    return { logits: out[GraphNames.logits].data as Float32Array, tap: out[GraphNames.tap(hook)].data as Float32Array };
  };

  const clean = await run(null);
  const spliceSteer = new Float32Array(T * D);
  const ablateSteer = new Float32Array(T * D);
  const recon = new Float32Array(D);
  const pre = new Float64Array(init.sae.dSae);
  let sqError = 0;
  for (let t = 0; t < T; t++) {
    const x = clean.tap.subarray(t * D, (t + 1) * D);
    reconstruct(x, recon, pre);
    for (let i = 0; i < D; i++) {
      spliceSteer[t * D + i] = recon[i] - x[i];
      ablateSteer[t * D + i] = -x[i];
      sqError += (recon[i] - x[i]) ** 2;
    }
  }
  const spliced = await run(spliceSteer);
  const ablated = await run(ablateSteer);
  const vocab = config.vocabSize;
  const scores: SpliceScores = {
    targets: T - 1,
    clean: crossEntropy(clean.logits, tokens, vocab),
    spliced: crossEntropy(spliced.logits, tokens, vocab),
    ablated: crossEntropy(ablated.logits, tokens, vocab),
    sqError,
    activations: clean.tap.slice(),
  };
  return { body: scores, transfer: [scores.activations.buffer as ArrayBuffer] };
}

serveWorker<SpliceWorkerProtocol>({
  init: start,
  request: score,
  serial: true,
});
