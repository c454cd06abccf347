/**
 * The model runtime worker: owns the onnxruntime session, the KV cache and the scheduler.
 *
 * Continuous batching: every iteration first prefills newly arrived requests (up to the free slots
 * and a padded-token budget), then runs one decode step for every running sequence, then yields to
 * the event loop so cancellations, new requests, plan updates and tap changes land between steps.
 * A request that arrives mid-generation therefore joins the running batch at the next iteration.
 *
 * Running sequences occupy KV-cache slots 0..n-1 densely; a finished sequence's slot is refilled
 * by moving the last sequence's cache into it, so a decode step reads one contiguous slice.
 */
import type { InferenceSession, Tensor } from 'onnxruntime-node';
import { createSession, loadOrt, runSession, type Ort } from '../common/ort.js';
import { serveWorker } from '../common/worker-port.js';
import type { FinishReason, SamplingParams } from './engine-types.js';
import { GraphNames } from './graph.js';
import type { ActivationBatch, PromptLogprobs, RequestDone, RuntimeInit, RuntimeWorkerProtocol, SubmitRequest, TapSubscription, WorkerSteeringEntry } from './runtime-protocol.js';
import { SeededRandom, sampleToken } from './sampling.js';
import { ropeTables } from './rope.js';
import { allHookPoints, type ModelConfig } from './types.js';

const NEG = -1e9;

interface Sequence {
  requestId: string;
  prompt: number[];
  maxTokens: number;
  sampling: SamplingParams;
  stopTokenIds: Set<number>;
  bodySteering: WorkerSteeringEntry[];
  planSteering: WorkerSteeringEntry[];
  /** Alternatives per prompt position when the prompt's log-probabilities are wanted; null = off. */
  promptLogprobs: number | null;
  rng: SeededRandom;
  /** Tokens whose keys/values are in the cache. */
  length: number;
  /** Sampled token to feed at position `length` in the next decode step. */
  pending: number;
  generated: number;
  cancelled: boolean;
  finish: FinishReason | null;
  /** Answers the submit request. */
  resolve: (done: RequestDone) => void;
  reject: (error: unknown) => void;
}

let ort: Ort;
let session: InferenceSession;
let config: ModelConfig;
let maxSlots = 1;
let prefillTokenBudget = 2048;
let samplableVocab = 0;
let headDim = 0;
let cacheBlock = 0;
let kCaches: Float32Array[] = [];
let vCaches: Float32Array[] = [];
let ropeCos: Float32Array;
let ropeSin: Float32Array;
let logitScratch: Float32Array;
let tap: TapSubscription | null = null;
/** `[1, 1, dim]` zeros fed to every hook nobody in the batch steers (broadcast by the graph's Add). */
let zeroSteer: Tensor;
let hookNames: string[] = [];

const running: Sequence[] = [];
const waiting: Sequence[] = [];
const byId = new Map<string, Sequence>();
let looping = false;

function init(msg: RuntimeInit): Promise<void> {
  config = msg.config;
  maxSlots = msg.maxSlots;
  prefillTokenBudget = msg.prefillTokenBudget;
  samplableVocab = Math.min(msg.samplableVocab, msg.config.vocabSize);
  headDim = config.dim / config.nHeads;
  cacheBlock = config.nKvHeads * config.maxSeqLen * headDim;
  kCaches = Array.from({ length: config.nLayers }, () => new Float32Array(maxSlots * cacheBlock));
  vCaches = Array.from({ length: config.nLayers }, () => new Float32Array(maxSlots * cacheBlock));
  ({ cos: ropeCos, sin: ropeSin } = ropeTables(config));
  logitScratch = new Float32Array(config.vocabSize);
  hookNames = allHookPoints(config);
  return loadOrt().then(async (m) => {
    ort = m;
    zeroSteer = new ort.Tensor('float32', new Float32Array(config.dim), [1, 1, config.dim]);
    session = await createSession(msg.model, { device: msg.device, intraOpThreads: msg.intraOpThreads });
  });
}

function i64(values: ArrayLike<number>, dims: number[]): Tensor {
  const data = new BigInt64Array(values.length);
  for (let i = 0; i < values.length; i++) data[i] = BigInt(values[i]);
  return new ort.Tensor('int64', data, dims);
}

function f32(data: Float32Array, dims: number[]): Tensor {
  return new ort.Tensor('float32', data, dims);
}

/** Steering input for one hook over a [B, T] block, or null when nobody in the batch steers there. */
function steeringFeed(hook: string, batch: Sequence[], T: number, startPositions: number[], validLengths: number[]): Float32Array | null {
  let out: Float32Array | null = null;
  const D = config.dim;
  batch.forEach((seq, b) => {
    for (const list of [seq.bodySteering, seq.planSteering]) {
      for (const entry of list) {
        if (entry.hook !== hook) continue;
        for (let t = 0; t < validLengths[b]; t++) {
          const pos = startPositions[b] + t;
          if (pos < entry.fromPosition || (entry.untilPosition !== null && pos >= entry.untilPosition)) continue;
          out ??= new Float32Array(batch.length * T * D);
          const base = (b * T + t) * D;
          for (let d = 0; d < D; d++) out[base + d] += entry.scale * entry.vector[d];
        }
      }
    }
  });
  return out;
}

interface ForwardResult {
  /**
   * `[N, vocab]`: first one row per sequence (its last valid position, for sampling), then, in a
   * prefill, rows 0..len−2 of every sequence that asked for prompt log-probabilities, in batch order.
   */
  logits: Float32Array;
  activations: ActivationBatch[];
  runMs: number;
}

/**
 * One forward pass over `batch` (slots firstSlot..firstSlot+B-1): T new tokens per sequence
 * (right-padded), P cached positions. Writes the new keys/values into the cache.
 */
async function forward(batch: Sequence[], firstSlot: number, tokens: number[][], phase: 'prefill' | 'decode'): Promise<ForwardResult> {
  const B = batch.length;
  const T = Math.max(...tokens.map((t) => t.length));
  const starts = batch.map((s) => s.length);
  const P = phase === 'prefill' ? 0 : Math.max(...starts);
  const S = P + T;
  const half = headDim / 2;
  const ids = new Array<number>(B * T).fill(0);
  const cos = new Float32Array(B * T * half);
  const sin = new Float32Array(B * T * half);
  const bias = new Float32Array(B * T * S).fill(NEG);
  const lengths = tokens.map((t) => t.length);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const valid = t < lengths[b];
      ids[b * T + t] = valid ? tokens[b][t] : 0;
      const pos = Math.min(starts[b] + (valid ? t : 0), config.maxSeqLen - 1);
      cos.set(ropeCos.subarray(pos * half, pos * half + half), (b * T + t) * half);
      sin.set(ropeSin.subarray(pos * half, pos * half + half), (b * T + t) * half);
      const row = (b * T + t) * S;
      // Cached keys of this sequence, then the new keys up to and including this token. Padded
      // query rows still see key 0 so their softmax stays finite; their outputs are discarded.
      for (let j = 0; j < starts[b] && phase === 'decode'; j++) bias[row + j] = 0;
      for (let j = 0; j <= t; j++) bias[row + P + j] = 0;
    }
  }
  const logitRows = logitRowsOf(batch, lengths, T, phase);
  const feeds: Record<string, Tensor> = {
    [GraphNames.inputIds]: i64(ids, [B, T]),
    [GraphNames.ropeCos]: f32(cos, [B, T, half]),
    [GraphNames.ropeSin]: f32(sin, [B, T, half]),
    [GraphNames.attnBias]: f32(bias, [B, T, S]),
    [GraphNames.cacheStart]: i64([firstSlot, 0], [2]),
    [GraphNames.cacheEnd]: i64([firstSlot + B, P], [2]),
    [GraphNames.logitRows]: i64(logitRows, [logitRows.length]),
  };
  const cacheDims = [maxSlots, config.nKvHeads, config.maxSeqLen, headDim];
  for (let l = 0; l < config.nLayers; l++) {
    feeds[GraphNames.cacheK(l)] = f32(kCaches[l], cacheDims);
    feeds[GraphNames.cacheV(l)] = f32(vCaches[l], cacheDims);
  }
  const steeredHooks = new Set<string>();
  for (const seq of batch) for (const e of [...seq.bodySteering, ...seq.planSteering]) steeredHooks.add(e.hook);
  for (const hook of hookNames) {
    const feed = steeredHooks.has(hook) ? steeringFeed(hook, batch, T, starts, lengths) : null;
    feeds[GraphNames.steer(hook)] = feed ? f32(feed, [B, T, config.dim]) : zeroSteer;
  }
  const fetches: string[] = [GraphNames.logits];
  for (let l = 0; l < config.nLayers; l++) fetches.push(GraphNames.newK(l), GraphNames.newV(l));
  const tapping = tap !== null && tap.hooks.length > 0 && (phase === 'decode' || tap.includePrompt) ? tap : null;
  if (tapping) for (const h of tapping.hooks) fetches.push(tapping.dtype === 'f16' ? GraphNames.tap16(h) : GraphNames.tap(h));

  const t0 = performance.now();
  const out = await runSession(session, feeds, fetches);
  const runMs = performance.now() - t0;

  // Write new keys/values: output [B, KV, T, hd] → cache [slot, KV, maxSeqLen, hd] at each sequence's position.
  const KV = config.nKvHeads;
  for (let l = 0; l < config.nLayers; l++) {
    const newK = out[GraphNames.newK(l)].data as Float32Array;
    const newV = out[GraphNames.newV(l)].data as Float32Array;
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < KV; h++) {
        const src = ((b * KV + h) * T) * headDim;
        const dst = (((firstSlot + b) * KV + h) * config.maxSeqLen + starts[b]) * headDim;
        const n = lengths[b] * headDim;
        kCaches[l].set(newK.subarray(src, src + n), dst);
        vCaches[l].set(newV.subarray(src, src + n), dst);
      }
    }
  }

  const activations: ActivationBatch[] = [];
  if (tapping) {
    const rows = lengths.reduce((a, b) => a + b, 0);
    const requestIds: string[] = [];
    const positions = new Int32Array(rows);
    let r = 0;
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < lengths[b]; t++) {
        requestIds.push(batch[b].requestId);
        positions[r++] = starts[b] + t;
      }
    }
    const D = config.dim;
    // One buffer for every hook of the step, so the step message transfers a single ArrayBuffer;
    // requestIds and positions are shared by all hooks (structured clone copies them once).
    const total = tapping.hooks.length * rows * D;
    const block = tapping.dtype === 'f16' ? new Uint16Array(total) : new Float32Array(total);
    for (const [k, h] of tapping.hooks.entries()) {
      const src = out[tapping.dtype === 'f16' ? GraphNames.tap16(h) : GraphNames.tap(h)].data as Float32Array | Uint16Array;
      const data = block.subarray(k * rows * D, (k + 1) * rows * D);
      let row = 0;
      for (let b = 0; b < B; b++) {
        // Valid rows of one sequence are contiguous in [B, T, D]; padding rows are skipped.
        data.set(src.subarray(b * T * D, (b * T + lengths[b]) * D), row * D);
        row += lengths[b];
      }
      activations.push({ hook: h, dtype: tapping.dtype, dModel: D, requestIds, positions, data });
    }
  }
  return { logits: out[GraphNames.logits].data as Float32Array, activations, runMs };
}

/**
 * Flat `[B·T]` indices whose logits a pass needs: each sequence's last valid position, then, in a
 * prefill, every position but the last of the sequences that want prompt log-probabilities (the
 * logits after position t predict token t + 1).
 */
function logitRowsOf(batch: Sequence[], lengths: number[], T: number, phase: 'prefill' | 'decode'): number[] {
  const rows = lengths.map((len, b) => b * T + len - 1);
  if (phase === 'prefill') {
    batch.forEach((seq, b) => {
      if (seq.promptLogprobs === null) return;
      for (let t = 0; t < lengths[b] - 1; t++) rows.push(b * T + t);
    });
  }
  return rows;
}

/**
 * Log-softmax over the samplable vocabulary of the extra prefill rows (see logitRowsOf): each
 * prompt token's log-probability and the `top` best alternatives per position. float64 sums, so
 * the values match a float64 reference to float32 precision.
 */
function promptLogprobsOf(batch: Sequence[], logits: Float32Array): PromptLogprobs[] {
  const V = config.vocabSize;
  const out: PromptLogprobs[] = [];
  let row = batch.length;
  for (const seq of batch) {
    const top = seq.promptLogprobs;
    if (top === null) continue;
    const n = seq.prompt.length - 1;
    const result: PromptLogprobs = {
      requestId: seq.requestId,
      top,
      tokenLogprobs: new Float32Array(n),
      topIds: new Int32Array(n * top),
      topLogprobs: new Float32Array(n * top),
    };
    for (let t = 0; t < n; t++, row++) {
      const base = row * V;
      let max = -Infinity;
      for (let v = 0; v < samplableVocab; v++) max = Math.max(max, logits[base + v]);
      let sum = 0;
      for (let v = 0; v < samplableVocab; v++) sum += Math.exp(logits[base + v] - max);
      const logZ = max + Math.log(sum);
      const next = seq.prompt[t + 1];
      result.tokenLogprobs[t] = next < samplableVocab ? logits[base + next] - logZ : -Infinity;
      // Insertion into a sorted list of `top` entries: top is small (≤ 5 through the API).
      const ids = result.topIds.subarray(t * top, (t + 1) * top);
      const values = result.topLogprobs.subarray(t * top, (t + 1) * top);
      let filled = 0;
      for (let v = 0; v < samplableVocab && top > 0; v++) {
        const x = logits[base + v];
        if (filled === top && x <= logits[base + ids[top - 1]]) continue;
        let i = Math.min(filled, top - 1);
        while (i > 0 && logits[base + ids[i - 1]] < x) {
          ids[i] = ids[i - 1];
          i--;
        }
        ids[i] = v;
        if (filled < top) filled++;
      }
      for (let i = 0; i < top; i++) values[i] = logits[base + ids[i]] - logZ;
    }
    out.push(result);
  }
  return out;
}

/** Samples each sequence's next token from its logits row; returns the tokens emitted this step. */
function advance(batch: Sequence[], logits: Float32Array, emitted: { ids: string[]; positions: number[]; tokens: number[] }): void {
  const V = config.vocabSize;
  batch.forEach((seq, b) => {
    if (seq.finish) return;
    // max_tokens 0 (scoring a prompt): the prefill was the whole request.
    if (seq.maxTokens === 0) {
      seq.finish = 'length';
      return;
    }
    // Rows are V wide; ids past the tokenizer's vocabulary (padded embeddings) are never sampled.
    const token = sampleToken(logits, b * V, samplableVocab, seq.sampling, seq.rng, logitScratch);
    const position = seq.length;
    if (seq.stopTokenIds.has(token)) {
      seq.generated++;
      seq.finish = 'stop';
      return;
    }
    seq.pending = token;
    seq.generated++;
    emitted.ids.push(seq.requestId);
    emitted.positions.push(position);
    emitted.tokens.push(token);
    // The sampled token still needs a cache row to be fed back; without one the sequence is full.
    if (seq.generated >= seq.maxTokens || seq.length + 1 > config.maxSeqLen - 1) seq.finish = 'length';
  });
}

function finishSequence(seq: Sequence, reason: FinishReason): void {
  byId.delete(seq.requestId);
  seq.resolve({ finishReason: reason, promptTokens: seq.prompt.length, completionTokens: seq.generated });
}

/** Removes finished or cancelled sequences, keeping running slots dense. */
function compact(): void {
  for (let slot = running.length - 1; slot >= 0; slot--) {
    const seq = running[slot];
    const reason: FinishReason | null = seq.cancelled ? 'abort' : seq.finish;
    if (!reason) continue;
    const last = running.length - 1;
    if (slot !== last) {
      for (let l = 0; l < config.nLayers; l++) {
        kCaches[l].copyWithin(slot * cacheBlock, last * cacheBlock, (last + 1) * cacheBlock);
        vCaches[l].copyWithin(slot * cacheBlock, last * cacheBlock, (last + 1) * cacheBlock);
      }
      running[slot] = running[last];
    }
    running.pop();
    finishSequence(seq, reason);
  }
}

function postStep(
  phase: 'prefill' | 'decode',
  batchSize: number,
  emitted: { ids: string[]; positions: number[]; tokens: number[] },
  result: ForwardResult,
  promptLogprobs: PromptLogprobs[] = [],
): void {
  const transfer: ArrayBuffer[] = [];
  const seen = new Set<ArrayBufferLike>();
  const buffers = result.activations.flatMap((a) => [a.data.buffer, a.positions.buffer]);
  for (const p of promptLogprobs) buffers.push(p.tokenLogprobs.buffer, p.topIds.buffer, p.topLogprobs.buffer);
  for (const buf of buffers) {
    if (!seen.has(buf)) {
      seen.add(buf);
      transfer.push(buf as ArrayBuffer);
    }
  }
  worker.emit(
    {
      phase,
      batchSize,
      runMs: result.runMs,
      tokens: { requestIds: emitted.ids, positions: Int32Array.from(emitted.positions), tokenIds: Int32Array.from(emitted.tokens) },
      activations: result.activations,
      ...(promptLogprobs.length > 0 && { promptLogprobs }),
    },
    transfer,
  );
}

async function iterate(): Promise<void> {
  // Drop cancelled requests that never started.
  for (let i = waiting.length - 1; i >= 0; i--) {
    if (waiting[i].cancelled) finishSequence(waiting.splice(i, 1)[0], 'abort');
  }
  compact();

  // Prefill newcomers into the free slots, bounded by the padded-token budget so one iteration
  // never stalls the running sequences for too long.
  const admitted: Sequence[] = [];
  let maxLen = 0;
  while (waiting.length > 0 && running.length + admitted.length < maxSlots) {
    const next = waiting[0];
    const padded = Math.max(maxLen, next.prompt.length) * (admitted.length + 1);
    if (admitted.length > 0 && padded > prefillTokenBudget) break;
    admitted.push(waiting.shift()!);
    maxLen = Math.max(maxLen, next.prompt.length);
  }
  if (admitted.length > 0) {
    const firstSlot = running.length;
    const result = await forward(admitted, firstSlot, admitted.map((s) => s.prompt), 'prefill');
    for (const seq of admitted) seq.length = seq.prompt.length;
    const emitted = { ids: [] as string[], positions: [] as number[], tokens: [] as number[] };
    const promptLogprobs = admitted.some((s) => s.promptLogprobs !== null) ? promptLogprobsOf(admitted, result.logits) : [];
    advance(admitted, result.logits, emitted);
    running.push(...admitted);
    postStep('prefill', admitted.length, emitted, result, promptLogprobs);
    compact();
  }

  if (running.length > 0) {
    const result = await forward(running, 0, running.map((s) => [s.pending]), 'decode');
    for (const seq of running) seq.length++;
    const emitted = { ids: [] as string[], positions: [] as number[], tokens: [] as number[] };
    advance(running, result.logits, emitted);
    postStep('decode', running.length, emitted, result);
    compact();
  }
}

function failAll(error: unknown): void {
  for (const seq of [...running, ...waiting]) {
    byId.delete(seq.requestId);
    seq.reject(error);
  }
  running.length = 0;
  waiting.length = 0;
}

async function loop(): Promise<void> {
  if (looping) return;
  looping = true;
  try {
    while (running.length > 0 || waiting.length > 0) {
      try {
        await iterate();
      } catch (error) {
        failAll(error);
      }
      // Let queued messages (cancel, submit, plan, tap) run before the next step.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  } finally {
    looping = false;
  }
}

function submit(msg: SubmitRequest): Promise<{ body: RequestDone }> {
  return new Promise<RequestDone>((resolve, reject) => {
    const seq: Sequence = {
      requestId: msg.requestId,
      prompt: msg.promptTokens,
      maxTokens: msg.maxTokens,
      sampling: msg.sampling,
      stopTokenIds: new Set(msg.stopTokenIds),
      bodySteering: msg.steering,
      planSteering: msg.planSteering,
      promptLogprobs: msg.promptLogprobs,
      rng: new SeededRandom(msg.sampling.seed ?? Math.floor(Math.random() * 2 ** 32)),
      length: 0,
      pending: 0,
      generated: 0,
      cancelled: false,
      finish: null,
      resolve,
      reject,
    };
    byId.set(seq.requestId, seq);
    waiting.push(seq);
    void loop();
  }).then((body) => ({ body }));
}

// Requests overlap: every submit joins the continuous batch, and is answered when it finishes.
const worker = serveWorker<RuntimeWorkerProtocol>({
  init,
  request: submit,
  notice(msg) {
    switch (msg.type) {
      case 'cancel': {
        const seq = byId.get(msg.requestId);
        if (seq) seq.cancelled = true;
        break;
      }
      case 'plan': {
        const seq = byId.get(msg.requestId);
        if (seq) seq.planSteering = msg.entries;
        break;
      }
      case 'tap':
        tap = msg.subscription;
        break;
    }
  },
});
