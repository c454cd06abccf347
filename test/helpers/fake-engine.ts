/**
 * A deterministic in-process Engine and a byte-level Tokenizer for testing the HTTP layer without
 * a model. The engine plays a scripted reply per request, behaves like LocalEngine where the HTTP
 * layer can tell (EOS is counted but not passed to onToken, maxTokens gives 'length', an abort
 * gives 'abort' at the next step), yields to the event loop between tokens (setImmediate) so aborts
 * and socket events interleave as they do with the real worker, and records what it was asked.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import { SaegateError } from '../../src/common/errors.js';
import type { Engine, GenerateRequest, GenerateResult, TokenCallback } from '../../src/model/engine-types.js';
import type { ModelConfig, Tokenizer } from '../../src/model/types.js';

export const BOS_ID = 1;
export const EOS_ID = 2;
/** Token id of byte b is b + BYTE_OFFSET. */
export const BYTE_OFFSET = 3;

/** Options of {@link ByteTokenizer}. */
export interface ByteTokenizerOptions {
  /** Jinja chat template; default none (the server's default template applies). */
  chatTemplate?: string | null;
  /** Decode BOS/EOS as `<s>` / `</s>` instead of '' (like tokenizers that keep special tokens). */
  specialTokenText?: boolean;
}

/** Ids 3..258 are the bytes 0..255 of UTF-8 text; 1 is BOS, 2 is EOS, 0 is unused. */
export class ByteTokenizer implements Tokenizer {
  readonly vocabSize = 256 + BYTE_OFFSET;
  readonly bosId = BOS_ID;
  readonly eosIds: readonly number[] = [EOS_ID];
  readonly chatTemplate: string | null;
  private readonly specialTokenText: boolean;
  private readonly encoder = new TextEncoder();
  // Not fatal, not streaming: an incomplete sequence at the end decodes to U+FFFD, as Tokenizer.decode promises.
  private readonly decoder = new TextDecoder('utf-8');

  constructor(options: ByteTokenizerOptions = {}) {
    this.chatTemplate = options.chatTemplate ?? null;
    this.specialTokenText = options.specialTokenText ?? false;
  }

  encode(text: string, options: { addBos?: boolean } = {}): number[] {
    const ids = Array.from(this.encoder.encode(text), (b) => b + BYTE_OFFSET);
    return options.addBos ? [BOS_ID, ...ids] : ids;
  }

  decode(ids: readonly number[]): string {
    let text = '';
    let bytes: number[] = [];
    const flush = (): void => {
      if (bytes.length > 0) text += this.decoder.decode(Uint8Array.from(bytes));
      bytes = [];
    };
    for (const id of ids) {
      if (id >= BYTE_OFFSET) {
        bytes.push(id - BYTE_OFFSET);
      } else if (this.specialTokenText && (id === BOS_ID || id === EOS_ID)) {
        flush();
        text += id === BOS_ID ? '<s>' : '</s>';
      }
    }
    flush();
    return text;
  }
}

/** Token ids of `text` for the byte tokenizer, without BOS. */
export function byteTokens(text: string): number[] {
  return Array.from(new TextEncoder().encode(text), (b) => b + BYTE_OFFSET);
}

/** What the fake engine does for one request. */
export interface FakeReply {
  /** Token ids to emit in order; when they run out the engine samples EOS (finish 'stop'). */
  tokens: readonly number[];
  /** Reject with `error` once `afterTokens` tokens were emitted. */
  fail?: { afterTokens: number; error: Error };
  /** Stop after emitting this many tokens until the request is aborted or resume() is called. */
  pauseAfter?: number;
}

/** Options of {@link FakeEngine}. */
export interface FakeEngineOptions {
  /** Overrides of the default config (dim 8, 2 layers, vocab 259, context 128). */
  config?: Partial<ModelConfig>;
  /** The reply to a request; default: the text "Hello, world!" then EOS. */
  respond?: (request: GenerateRequest) => FakeReply;
  /** Reject generate() with this before any token (e.g. a plan timeout). */
  rejectWith?: Error;
}

export const DEFAULT_FAKE_CONFIG: ModelConfig = {
  dim: 8,
  hiddenDim: 16,
  nLayers: 2,
  nHeads: 2,
  nKvHeads: 2,
  vocabSize: 256 + BYTE_OFFSET,
  maxSeqLen: 128,
  normEps: 1e-5,
  ropeTheta: 10000,
  ropeStyle: 'interleaved',
  tiedEmbeddings: true,
};

interface Outcome {
  promise: Promise<GenerateResult | Error>;
  resolve: (value: GenerateResult | Error) => void;
}

/** The scripted engine. Public fields are for assertions. */
export class FakeEngine implements Engine {
  readonly config: ModelConfig;
  /** Every request generate() received, in order. */
  readonly requests: GenerateRequest[] = [];
  /** Ids of requests that ended because their signal was aborted. */
  readonly aborted: string[] = [];
  /** Tokens passed to onToken per request id. */
  readonly emitted = new Map<string, number[]>();
  /** Requests inside generate() now. */
  running = 0;
  respond: (request: GenerateRequest) => FakeReply;
  rejectWith: Error | null;
  private readonly outcomes = new Map<string, Outcome>();
  private resumeWaiters: Array<() => void> = [];
  private runningWaiters: Array<{ count: number; wake: () => void }> = [];

  constructor(options: FakeEngineOptions = {}) {
    this.config = { ...DEFAULT_FAKE_CONFIG, ...options.config };
    this.respond = options.respond ?? (() => ({ tokens: byteTokens('Hello, world!') }));
    this.rejectWith = options.rejectWith ?? null;
  }

  /** The result (or the error) of the request with this id, once it ends. */
  outcome(requestId: string): Promise<GenerateResult | Error> {
    return this.outcomeEntry(requestId).promise;
  }

  /** Resolves once `count` requests are inside generate() at the same time. */
  whenRunning(count: number): Promise<void> {
    if (this.running >= count) return Promise.resolve();
    return new Promise((wake) => this.runningWaiters.push({ count, wake }));
  }

  /** Lets paused requests (FakeReply.pauseAfter) continue. */
  resume(): void {
    for (const wake of this.resumeWaiters.splice(0)) wake();
  }

  async generate(request: GenerateRequest, onToken: TokenCallback): Promise<GenerateResult> {
    this.requests.push(request);
    const outcome = this.outcomeEntry(request.requestId);
    this.running++;
    for (const waiter of this.runningWaiters.filter((w) => this.running >= w.count)) {
      this.runningWaiters.splice(this.runningWaiters.indexOf(waiter), 1);
      waiter.wake();
    }
    try {
      const result = await this.play(request, onToken);
      outcome.resolve(result);
      return result;
    } catch (error) {
      outcome.resolve(error as Error);
      throw error;
    } finally {
      this.running--;
    }
  }

  async close(): Promise<void> {
    this.resume();
  }

  private async play(request: GenerateRequest, onToken: TokenCallback): Promise<GenerateResult> {
    if (this.rejectWith) throw this.rejectWith;
    if (request.promptTokens.length === 0) throw new SaegateError('SAEGATE_ERR_BAD_REQUEST', ['the prompt is empty'], { param: 'prompt' });
    const reply = this.respond(request);
    const emitted: number[] = [];
    this.emitted.set(request.requestId, emitted);
    const promptTokens = request.promptTokens.length;
    let generated = 0;
    const end = (finishReason: GenerateResult['finishReason']): GenerateResult => ({ finishReason, promptTokens, completionTokens: generated });
    for (let step = 0; ; step++) {
      if (reply.pauseAfter !== undefined && emitted.length === reply.pauseAfter) await this.pauseUntilResumedOrAborted(request.signal);
      // The real engine checks for cancellation between steps; so does this one.
      await nextTurn();
      if (request.signal?.aborted) {
        this.aborted.push(request.requestId);
        return end('abort');
      }
      if (reply.fail && emitted.length === reply.fail.afterTokens) throw reply.fail.error;
      const token = step < reply.tokens.length ? reply.tokens[step] : EOS_ID;
      generated++;
      if (request.stopTokenIds.includes(token)) return end('stop');
      emitted.push(token);
      onToken(token, promptTokens + step);
      if (generated >= request.maxTokens) return end('length');
    }
  }

  private pauseUntilResumedOrAborted(signal: AbortSignal | undefined): Promise<void> {
    return new Promise((resolve) => {
      if (signal?.aborted) return resolve();
      const wake = (): void => {
        signal?.removeEventListener('abort', wake);
        resolve();
      };
      signal?.addEventListener('abort', wake, { once: true });
      this.resumeWaiters.push(wake);
    });
  }

  private outcomeEntry(requestId: string): Outcome {
    let entry = this.outcomes.get(requestId);
    if (!entry) {
      let resolve!: (value: GenerateResult | Error) => void;
      const promise = new Promise<GenerateResult | Error>((r) => (resolve = r));
      entry = { promise, resolve };
      this.outcomes.set(requestId, entry);
    }
    return entry;
  }
}
