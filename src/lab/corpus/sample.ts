/**
 * Samples a corpus from a model: `documents` generations from one prompt, `concurrency` of them in
 * flight on the engine at once (the engine batches them), handed to the caller in document order.
 *
 * Reproducibility: document i samples with its own seed, {@link documentSeed}(seed, i), and the
 * engine's per-request generator makes a seeded request's tokens independent of what else shares
 * its batch. So the output depends on the seed and the flags, never on concurrency or on the order
 * in which generations happen to finish. The seed is hashed rather than `seed + i` so that the
 * corpora of seeds 0 and 1 do not share 1999 of 2000 documents shifted by one.
 *
 * A document ends at EOS or at BOS. llama2.c models (stories260K) were trained on stories
 * delimited by BOS, not EOS, and sample BOS where a story ends — llama2.c's run.c stops there too.
 * Without it a "document" would run on into the next, unrelated story.
 *
 * A corpus is read back as prompts (activation collection, feature reports), and tokenization is
 * not a round trip: decoded text can encode again to more tokens than were sampled (byte-fallback
 * pieces that decode to U+FFFD, a synthetic model's random ids). With `maxTextTokens`, a document
 * whose text would not fit is cut back to a prefix of its generated tokens that does, so every
 * document is one the model can take back.
 */
import { createHash } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { SaegateError } from '../../common/errors.js';
import type { Engine } from '../../model/engine-types.js';
import type { Tokenizer } from '../../model/types.js';

/** One sampled document. */
export interface SampledDocument {
  /** 0-based index in the corpus. */
  id: number;
  /** The prompt and the completion, decoded together (BOS and EOS decode to nothing). */
  text: string;
  /** Completion tokens as the engine counts them (the model server's usage): the EOS included when finishReason is 'stop'. */
  tokens: number;
  /** 'stop': the model sampled EOS (or BOS, a document boundary); 'length': it reached maxTokens (or the context), or was cut back to fit `maxTextTokens`. */
  finishReason: 'stop' | 'length';
}

/** Counters, reported as documents complete (in completion order) and at the end. */
export interface SampleProgress {
  /** Documents completed so far. */
  documents: number;
  /** Documents asked for. */
  total: number;
  /** Completion tokens of the completed documents. */
  tokens: number;
  /** Milliseconds since sampling started. */
  elapsedMs: number;
}

/** What {@link sampleCorpus} resolves with. */
export interface SampleSummary extends SampleProgress {
  /** Documents whose text is empty (the model sampled EOS first, and the prompt is empty). */
  empty: number;
  /** Documents that ended with EOS or BOS. */
  stopped: number;
  /** Documents cut at maxTokens or the context length, or cut back to fit `maxTextTokens`. */
  truncated: number;
  /** Of `truncated`, the documents cut back because their text encoded again to more than `maxTextTokens`. */
  shortened: number;
}

/** Options of {@link sampleCorpus}. */
export interface SampleCorpusOptions {
  engine: Engine;
  /** Decodes documents; its EOS ids and its BOS id end a document. */
  tokenizer: Tokenizer;
  /** Prompt token ids every document starts from, BOS included. Must not be empty. */
  promptTokens: readonly number[];
  /** Number of documents. */
  documents: number;
  /** Base seed: a non-negative safe integer. */
  seed: number;
  /** Most tokens generated per document; prompt + maxTokens must fit the model's context. */
  maxTokens: number;
  /**
   * Most tokens a document's text may take when the tokenizer encodes it again with BOS, as a model
   * server reading it as a prompt does; a longer document is cut back to the longest prefix of its
   * generated tokens found to fit (`tokens` then counts the kept ones). Default: no limit.
   */
  maxTextTokens?: number;
  /** Sampling temperature; 0 is greedy (every document the same). */
  temperature: number;
  /** Nucleus mass in (0, 1]; 1 is off. */
  topP: number;
  /** Documents in flight on the engine at once. */
  concurrency: number;
  /** Receives each document in id order; awaited before the next one is handed over. */
  onDocument: (document: SampledDocument) => void | Promise<void>;
  /** Called after every completed document (in completion order). */
  onProgress?: (progress: SampleProgress) => void;
  /** Aborting stops every generation; sampleCorpus then rejects with the signal's reason. */
  signal?: AbortSignal;
}

/**
 * The sampling seed of document `index`: the first 4 bytes, big-endian, of SHA-256 of the UTF-8
 * string `"<seed>:<index>"` (the engine's generator takes a uint32).
 */
export function documentSeed(seed: number, index: number): number {
  return createHash('sha256').update(`${seed}:${index}`, 'utf8').digest().readUInt32BE(0);
}

function checkOptions(options: SampleCorpusOptions): void {
  const positive = (name: string, value: number): void => {
    if (!Number.isSafeInteger(value) || value < 1) throw new SaegateError('SAEGATE_ERR_CONFIG', [name, `a positive integer, got ${value}`]);
  };
  if (!Number.isSafeInteger(options.documents) || options.documents < 0) {
    throw new SaegateError('SAEGATE_ERR_CONFIG', ['documents', `a non-negative integer, got ${options.documents}`]);
  }
  if (!Number.isSafeInteger(options.seed) || options.seed < 0) throw new SaegateError('SAEGATE_ERR_CONFIG', ['seed', `a non-negative integer, got ${options.seed}`]);
  positive('maxTokens', options.maxTokens);
  positive('concurrency', options.concurrency);
  if (options.maxTextTokens !== undefined) positive('maxTextTokens', options.maxTextTokens);
  if (options.promptTokens.length === 0) throw new SaegateError('SAEGATE_ERR_CONFIG', ['promptTokens', 'at least one token (BOS)']);
}

/**
 * Generates the corpus. Rejects with the first engine or `onDocument` error (the other
 * generations are aborted), or with the signal's reason when `signal` aborts.
 */
export async function sampleCorpus(options: SampleCorpusOptions): Promise<SampleSummary> {
  checkOptions(options);
  const { engine, tokenizer, promptTokens, documents: total } = options;
  const started = performance.now();
  const summary: SampleSummary = { documents: 0, total, tokens: 0, elapsedMs: 0, empty: 0, stopped: 0, truncated: 0, shortened: 0 };

  // One controller for every generation: an outside abort, an engine error or a failing
  // onDocument all stop the rest at their next step.
  const controller = new AbortController();
  // Every in-flight generation listens on this one signal.
  setMaxListeners(options.concurrency + 10, controller.signal);
  let failure: { error: unknown } | null = null;
  const fail = (error: unknown): void => {
    if (failure) return;
    failure = { error };
    controller.abort(error);
  };
  const onOuterAbort = (): void => fail(options.signal?.reason);
  if (options.signal?.aborted) onOuterAbort();
  options.signal?.addEventListener('abort', onOuterAbort, { once: true });

  // Completed documents wait here until every earlier one has been handed over.
  const done: (SampledDocument | undefined)[] = new Array<SampledDocument | undefined>(total);
  let nextToStart = 0;
  let nextToEmit = 0;
  let emitting: Promise<void> = Promise.resolve();
  const emitReady = async (): Promise<void> => {
    for (let document = done[nextToEmit]; document !== undefined && !controller.signal.aborted; document = done[nextToEmit]) {
      done[nextToEmit++] = undefined;
      await options.onDocument(document);
    }
  };

  const stopTokenIds = [...new Set([...tokenizer.eosIds, ...(tokenizer.bosId === null ? [] : [tokenizer.bosId])])];
  const sampleOne = async (index: number): Promise<SampledDocument | null> => {
    const generated: number[] = [];
    const result = await engine.generate(
      {
        requestId: `sample-${index}`,
        promptTokens: [...promptTokens],
        maxTokens: options.maxTokens,
        sampling: { temperature: options.temperature, topP: options.topP, seed: documentSeed(options.seed, index) },
        stopTokenIds,
        steering: [],
        signal: controller.signal,
      },
      (tokenId) => generated.push(tokenId),
    );
    if (result.finishReason === 'abort') {
      if (controller.signal.aborted) return null;
      throw new SaegateError('SAEGATE_ERR_RUNTIME', [`the engine aborted document ${index}`]);
    }
    const text = tokenizer.decode([...promptTokens, ...generated]);
    if (options.maxTextTokens === undefined) return { id: index, text, tokens: result.completionTokens, finishReason: result.finishReason };
    const encoded = tokenizer.encode(text, { addBos: true }).length;
    if (encoded <= options.maxTextTokens) return { id: index, text, tokens: result.completionTokens, finishReason: result.finishReason };
    return cutBack(index, generated, encoded, options.maxTextTokens);
  };

  /**
   * The longest prefix of `generated` found whose text fits `limit` tokens: shrink in proportion
   * to the overshoot (re-encoded length grows about linearly with the text), at least one token per
   * try, so a few encodes suffice. Throws when even the prompt alone does not fit.
   */
  const cutBack = (index: number, generated: readonly number[], encoded: number, limit: number): SampledDocument => {
    let kept = generated.length;
    let length = encoded;
    let text = '';
    while (length > limit) {
      if (kept === 0) {
        throw new SaegateError('SAEGATE_ERR_CONFIG', ['prompt', `the prompt alone encodes to ${length} tokens, more than the ${limit} a document may take`]);
      }
      kept = Math.max(0, Math.min(kept - 1, Math.floor((kept * limit) / length)));
      text = tokenizer.decode([...promptTokens, ...generated.slice(0, kept)]);
      length = tokenizer.encode(text, { addBos: true }).length;
    }
    summary.shortened++;
    return { id: index, text, tokens: kept, finishReason: 'length' };
  };

  // Each lane takes the next index as soon as its previous document is done, which keeps
  // `concurrency` generations in the engine's batch until the last ones.
  const lane = async (): Promise<void> => {
    while (!controller.signal.aborted && nextToStart < total) {
      const index = nextToStart++;
      const document = await sampleOne(index);
      if (document === null) return;
      done[index] = document;
      summary.documents++;
      summary.tokens += document.tokens;
      if (document.text === '') summary.empty++;
      if (document.finishReason === 'stop') summary.stopped++;
      else summary.truncated++;
      summary.elapsedMs = performance.now() - started;
      options.onProgress?.({ documents: summary.documents, total, tokens: summary.tokens, elapsedMs: summary.elapsedMs });
      emitting = emitting.then(emitReady).catch(fail);
    }
  };

  try {
    const lanes = Array.from({ length: Math.min(options.concurrency, total) }, () => lane().catch(fail));
    await Promise.all(lanes);
    await emitting;
  } finally {
    options.signal?.removeEventListener('abort', onOuterAbort);
  }
  // A closure assigns `failure`, which TypeScript's narrowing cannot see.
  const failed = failure as { error: unknown } | null;
  if (failed) throw failed.error;
  summary.elapsedMs = performance.now() - started;
  return summary;
}
