/**
 * Runs one generation request against the engine and answers it, streamed (SSE) or not. Shared
 * by both OpenAI endpoints; what differs between them lives in the ResponseFormat strategy.
 *
 * Aborts flow both ways: a stop sequence or a client that goes away aborts the engine request
 * (the engine then resolves with finishReason 'abort'), and an engine failure reaches the client
 * as an error (a JSON error before the stream starts, an `event: error` frame after).
 */
import type { ServerResponse } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { SaegateError } from '../../common/errors.js';
import type { Engine, GenerateResult, SamplingParams, SteeringEntry } from '../engine-types.js';
import type { Tokenizer } from '../types.js';
import { StopSequenceDetokenizer } from './detokenizer.js';
import { toSaegateError } from './errors.js';
import { echoPrompt, promptLogprobsObject, type CompletionLogprobs } from './logprobs.js';
import { responseMeta, type OpenAIFinishReason, type ResponseFormat, type ResponseMeta, type Usage } from './format.js';
import { SseWriter } from './sse.js';

/** What the routes resolved from the body and headers. */
export interface GenerationInput {
  /** The engine request id: the client's x-request-id or a generated UUID. */
  requestId: string;
  /** x-saegate-plan-id, or null. */
  planId: string | null;
  /** x-saegate-tap-max-delay-ms: how long the tap may hold the request's data, ms; absent: the subscription's. */
  tapMaxDelayMs?: number | null;
  /** BOS included when the tokenizer has one and the prompt was text. */
  promptTokens: number[];
  /** Most tokens to generate; prompt + maxTokens fits the context (checked by the routes). */
  maxTokens: number;
  sampling: SamplingParams;
  /** Stop sequences (text), at most 4. */
  stop: readonly string[];
  /** From the body's `steering` field. */
  steering: SteeringEntry[];
  /** Answer as server-sent events. */
  stream: boolean;
  /** stream_options.include_usage: send a usage chunk before [DONE]. */
  includeUsage: boolean;
  /** `/v1/completions` echo: the prompt's text comes before the completion's. */
  echo: boolean;
  /** With echo: alternatives per position of the prompt's log-probabilities; null = none. */
  promptLogprobs: number | null;
}

/** The app-wide things a generation needs. */
export interface GenerationDeps {
  engine: Engine;
  /** Decodes generated ids; its eosIds end generation. */
  tokenizer: Tokenizer;
  /** Echoed in every response's `model`. */
  modelName: string;
  /** For translating errors (the 413 message). */
  bodyLimit: number;
}

/** Tracks whether the client went away before the response was complete, and aborts on it. */
class DisconnectWatch {
  private left = false;

  constructor(
    private readonly res: ServerResponse,
    private readonly controller: AbortController,
  ) {
    // A response's 'close' also fires after a normal finish; only a close before that means the
    // client left. A socket that died while the body was parsed is already destroyed here.
    if (res.destroyed) this.onClose();
    else res.on('close', this.onClose);
  }

  get gone(): boolean {
    return this.left;
  }

  dispose(): void {
    this.res.off('close', this.onClose);
  }

  private readonly onClose = (): void => {
    if (this.res.writableFinished) return;
    this.left = true;
    this.controller.abort();
  };
}

/** The finish reason to report, or null when the client is gone and nobody is listening. */
function finishReasonOf(result: GenerateResult, text: StopSequenceDetokenizer, clientGone: boolean): OpenAIFinishReason | null {
  if (text.stopped) return 'stop';
  if (result.finishReason === 'abort') {
    if (clientGone) return null;
    // Nobody here aborted it: the engine gave up on its own, which must not look like a clean finish.
    throw new SaegateError('SAEGATE_ERR_RUNTIME', ['the engine aborted the request']);
  }
  return result.finishReason;
}

function usageOf(result: GenerateResult, text: StopSequenceDetokenizer): Usage {
  // After a stop sequence the engine may run a step or two before it sees the abort; those tokens
  // were not part of the answer, so count up to the token that completed the stop sequence.
  const completion = text.tokensUntilStop ?? result.completionTokens;
  return { prompt_tokens: result.promptTokens, completion_tokens: completion, total_tokens: result.promptTokens + completion };
}

/** Where a generation's answer goes. */
export interface GenerationTarget {
  request: FastifyRequest;
  reply: FastifyReply;
}

/**
 * Runs the request and answers it. Returns the response body for fastify to send (non-streaming),
 * or undefined once the reply was hijacked and answered on the raw socket (streaming, or a client
 * that is gone). Throws before anything was sent, so fastify's error handler answers with JSON.
 */
export function serveGeneration(deps: GenerationDeps, format: ResponseFormat, input: GenerationInput, target: GenerationTarget): Promise<object | undefined> {
  return new GenerationRun(deps, format, input, target).run();
}

/** One request's generation: engine call, detokenizer, abort wiring and the answer. */
class GenerationRun {
  private readonly controller = new AbortController();
  private readonly text: StopSequenceDetokenizer;
  private readonly meta: ResponseMeta;
  private readonly watch: DisconnectWatch;
  private sse: SseWriter | null = null;
  /** The echoed prompt's logprobs object, once the prefill delivered them. */
  private echoLogprobs: CompletionLogprobs | null = null;

  constructor(
    private readonly deps: GenerationDeps,
    private readonly format: ResponseFormat,
    private readonly input: GenerationInput,
    private readonly target: GenerationTarget,
  ) {
    this.text = new StopSequenceDetokenizer({
      tokenizer: deps.tokenizer,
      stop: input.stop,
      silentTokenIds: deps.tokenizer.eosIds,
      contextIds: input.promptTokens.slice(-1),
    });
    this.meta = responseMeta(format, deps.modelName);
    this.watch = new DisconnectWatch(target.reply.raw, this.controller);
  }

  async run(): Promise<object | undefined> {
    try {
      return this.input.stream ? await this.stream() : await this.complete();
    } finally {
      this.watch.dispose();
    }
  }

  private generate(onText: (delta: string) => void): Promise<GenerateResult> {
    const { input, deps, text, controller } = this;
    return deps.engine.generate(
      {
        requestId: input.requestId,
        promptTokens: input.promptTokens,
        maxTokens: input.maxTokens,
        sampling: input.sampling,
        stopTokenIds: deps.tokenizer.eosIds,
        steering: input.steering,
        planId: input.planId,
        tapMaxDelayMs: input.tapMaxDelayMs ?? null,
        signal: controller.signal,
        ...(input.promptLogprobs !== null && {
          promptLogprobs: {
            top: input.promptLogprobs,
            onResult: (result) => {
              this.echoLogprobs = promptLogprobsObject(deps.tokenizer, input.promptTokens, echoPrompt(deps.tokenizer, input.promptTokens), result);
            },
          },
        }),
      },
      (tokenId) => {
        // The engine may run a step after an abort before it sees it; those tokens go nowhere.
        if (text.stopped || this.watch.gone) return;
        const delta = text.push(tokenId);
        if (delta !== '') onText(delta);
        if (text.stopped) controller.abort();
      },
    );
  }

  /** The echoed prompt's text ('' without echo). */
  private echoText(): string {
    if (!this.input.echo) return '';
    return this.echoLogprobs ? this.echoLogprobs.tokens.join('') : echoPrompt(this.deps.tokenizer, this.input.promptTokens).text;
  }

  private async complete(): Promise<object | undefined> {
    const result = await this.generate(() => {});
    this.text.finish();
    const finishReason = finishReasonOf(result, this.text, this.watch.gone);
    if (finishReason === null) {
      // The client is gone: nothing to send, and fastify must not try.
      this.target.reply.hijack();
      return undefined;
    }
    return this.format.complete(this.meta, this.echoText() + this.text.text, finishReason, usageOf(result, this.text), this.echoLogprobs);
  }

  /**
   * Opens the event stream on first use. The stream opens at the first token, not before: until
   * then a failure (a steering plan that never arrived, a request the engine refuses) can still be
   * a plain JSON error with its own status.
   */
  private open(): SseWriter {
    if (this.sse) return this.sse;
    const { reply } = this.target;
    reply.hijack();
    this.sse = new SseWriter(reply.raw, reply.getHeaders());
    const opening = this.format.opening(this.meta, this.input.includeUsage);
    if (opening) this.sse.data(opening);
    // The echoed prompt is the first text; its log-probabilities arrived with the prefill, before
    // any generated token, so they are known whenever the stream opens.
    if (this.input.echo) this.sse.data(this.format.delta(this.meta, this.echoText(), this.input.includeUsage, this.echoLogprobs));
    return this.sse;
  }

  private async stream(): Promise<undefined> {
    const { format, meta, input, text } = this;
    let result: GenerateResult;
    try {
      result = await this.generate((delta) => this.open().data(format.delta(meta, delta, input.includeUsage)));
    } catch (error) {
      if (this.sse === null) throw error;
      return this.fail(this.sse, error);
    }
    if (this.watch.gone) {
      if (this.sse === null) this.target.reply.hijack();
      return undefined;
    }
    const sse = this.open();
    try {
      const tail = text.finish();
      if (tail !== '') sse.data(format.delta(meta, tail, input.includeUsage));
      const finishReason = finishReasonOf(result, text, false) ?? 'stop';
      sse.data(format.final(meta, finishReason, input.includeUsage));
      if (input.includeUsage) sse.data(format.usage(meta, usageOf(result, text)));
      sse.done();
    } catch (error) {
      return this.fail(sse, error);
    }
    await sse.end();
    return undefined;
  }

  /** Ends a started stream with an `event: error` frame and no `[DONE]`, so clients see a failure, not a short answer. */
  private async fail(sse: SseWriter, error: unknown): Promise<undefined> {
    const saegateError = toSaegateError(error, this.deps);
    this.target.request.log.error({ err: error }, 'generation failed after the stream started');
    sse.event('error', saegateError.toJSON());
    await sse.end();
    return undefined;
  }
}
