/**
 * The OpenAI-compatible routes: `GET /v1/models`, `GET /v1/models/:model`, `GET /healthz`,
 * `POST /v1/completions` and `POST /v1/chat/completions`. Each generation route resolves its body
 * into a GenerationInput (prompt tokens, limits, sampling, steering) and hands it to generate.ts.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { SaegateError } from '../../common/errors.js';
import type { Engine, SamplingParams } from '../engine-types.js';
import type { TapHealth } from '../tap-bridge.js';
import type { ModelConfig, Tokenizer } from '../types.js';
import { chatFormat, completionFormat, type ResponseFormat } from './format.js';
import { serveGeneration, type GenerationInput } from './generate.js';
import { planIdFrom, tapMaxDelayFrom } from './headers.js';
import type { InFlightLimiter } from './limiter.js';
import { ChatPrompter, completionPromptTokens } from './prompt.js';
import { chatBodySchema, completionBodySchema, parseBody, type ChatBody, type CompletionBody } from './schemas.js';
import { toSteeringEntries } from './steering.js';

/** What the routes need from the app. */
export interface ModelRoutesOptions {
  engine: Engine;
  tokenizer: Tokenizer;
  modelName: string;
  /** Seeded random weights, not trained: listed with `synthetic: true`. */
  synthetic: boolean;
  limiter: InFlightLimiter;
  /** Bytes; for the 413 message. */
  bodyLimit: number;
  /** Reported on /healthz; the wait itself is the engine's plan resolver's. */
  planWaitTimeoutMs: number | null;
  /** The tap's state for /healthz, or null without a tap. */
  tapHealth: () => TapHealth | null;
}

/** Fields both generation bodies share, resolved the same way. */
type SamplingBody = Pick<CompletionBody & ChatBody, 'model' | 'temperature' | 'top_p' | 'seed' | 'stop' | 'stream' | 'stream_options' | 'steering'>;

interface ResolveOptions {
  body: SamplingBody;
  promptTokens: number[];
  /** max_tokens, or max_completion_tokens for chat; null/undefined = the rest of the context. */
  maxTokens: number | null | undefined;
  /** The body field `maxTokens` came from, for `param`. */
  maxTokensParam: string;
  /** The body field the prompt came from, for `param`. */
  promptParam: string;
  requestId: string;
  planId: string | null;
  config: ModelConfig;
  /** `/v1/completions` only: echo the prompt, and its log-probabilities with this many alternatives. */
  echo?: { logprobs: number | null };
}

function checkModel(model: string, served: string): void {
  if (model !== served) throw new SaegateError('SAEGATE_ERR_MODEL_NOT_FOUND', [model, served], { param: 'model' });
}

/** Applies OpenAI's defaults and the context-length check; throws 400s before the engine is involved. */
function resolveInput(options: ResolveOptions): GenerationInput {
  const { body, promptTokens, config } = options;
  const promptLength = promptTokens.length;
  const limit = config.maxSeqLen;
  let maxTokens: number;
  if (options.maxTokens === null || options.maxTokens === undefined) {
    // OpenAI's default: whatever the context has left. A prompt that fills it leaves no room for
    // even one token, which is the same error as asking for one token too many.
    maxTokens = limit - promptLength;
    if (maxTokens < 1) {
      throw new SaegateError('SAEGATE_ERR_CONTEXT_LENGTH', [limit, promptLength + 1, promptLength, 1], { param: options.promptParam });
    }
  } else {
    maxTokens = options.maxTokens;
    if (promptLength + maxTokens > limit) {
      throw new SaegateError('SAEGATE_ERR_CONTEXT_LENGTH', [limit, promptLength + maxTokens, promptLength, maxTokens], { param: options.maxTokensParam });
    }
  }
  const sampling: SamplingParams = { temperature: body.temperature ?? 1, topP: body.top_p ?? 1, seed: body.seed ?? null };
  const stop = body.stop === null || body.stop === undefined ? [] : typeof body.stop === 'string' ? [body.stop] : body.stop;
  return {
    requestId: options.requestId,
    planId: options.planId,
    promptTokens,
    maxTokens,
    sampling,
    stop,
    steering: toSteeringEntries(body.steering ?? [], config, promptLength),
    stream: body.stream === true,
    includeUsage: body.stream === true && body.stream_options?.include_usage === true,
    echo: options.echo !== undefined,
    promptLogprobs: options.echo?.logprobs ?? null,
  };
}

/**
 * `echo`, `logprobs` and `max_tokens: 0` of `/v1/completions`. This server reports log-probabilities
 * of prompt tokens only (scoring a prompt: `echo: true, logprobs: N, max_tokens: 0`); combinations
 * that would need them for generated tokens are refused rather than answered without them.
 */
function checkEcho(body: CompletionBody): { logprobs: number | null } | undefined {
  const logprobs = body.logprobs ?? null;
  if (logprobs !== null && body.echo !== true) {
    throw new SaegateError('SAEGATE_ERR_BAD_REQUEST', ['logprobs: log-probabilities of generated tokens are not supported; send echo: true and max_tokens: 0 for the prompt\'s'], {
      param: 'logprobs',
    });
  }
  if (logprobs !== null && body.max_tokens !== 0) {
    throw new SaegateError('SAEGATE_ERR_BAD_REQUEST', [`max_tokens: with echo and logprobs it must be 0 (log-probabilities of generated tokens are not supported), got ${body.max_tokens ?? 'the default'}`], {
      param: 'max_tokens',
    });
  }
  if (body.max_tokens === 0 && logprobs === null) {
    throw new SaegateError('SAEGATE_ERR_BAD_REQUEST', ['max_tokens: 0 scores the prompt and needs echo: true with logprobs'], { param: 'max_tokens' });
  }
  return body.echo === true ? { logprobs } : undefined;
}

/** Registers the routes on `app`. */
export function registerModelRoutes(app: FastifyInstance, options: ModelRoutesOptions): void {
  const { engine, tokenizer, modelName, limiter } = options;
  const config = engine.config;
  const chatPrompter = new ChatPrompter(tokenizer);
  const createdAt = Math.floor(Date.now() / 1000);
  // OpenAI's model object plus `synthetic` (extra fields are allowed: vLLM adds its own), so a
  // client or a person reading the list can tell an untrained synthetic model from a real one.
  const modelObject = { id: modelName, object: 'model', created: createdAt, owned_by: 'saegate', synthetic: options.synthetic } as const;
  const deps = { engine, tokenizer, modelName, bodyLimit: options.bodyLimit };

  app.get('/healthz', async () => {
    const tapHealth = options.tapHealth();
    return {
      status: 'ok',
      model: modelName,
      in_flight: limiter.inFlight,
      max_concurrent_requests: limiter.max,
      plan_wait_timeout_ms: options.planWaitTimeoutMs,
      ...(engine.stats && {
        engine: { prefill_steps: engine.stats.prefillSteps, decode_steps: engine.stats.decodeSteps, generated_tokens: engine.stats.generatedTokens, onnxruntime_ms: Math.round(engine.stats.runMs) },
      }),
      ...(tapHealth !== null && { tap: tapHealth }),
    };
  });

  app.get('/v1/models', async () => ({ object: 'list', data: [modelObject] }));

  app.get<{ Params: { model: string } }>('/v1/models/:model', async (request) => {
    checkModel(request.params.model, modelName);
    return modelObject;
  });

  /** Wraps a generation handler in the in-flight limit. */
  const generation = (
    format: ResponseFormat,
    resolve: (request: FastifyRequest, planId: string | null) => GenerationInput,
  ): ((request: FastifyRequest, reply: FastifyReply) => Promise<object | undefined>) => {
    return async (request, reply) => {
      limiter.acquire();
      try {
        const input = { ...resolve(request, planIdFrom(request.headers)), tapMaxDelayMs: tapMaxDelayFrom(request.headers) };
        return await serveGeneration(deps, format, input, { request, reply });
      } finally {
        limiter.release();
      }
    };
  };

  app.post(
    '/v1/completions',
    generation(completionFormat, (request, planId) => {
      const body = parseBody(completionBodySchema, request.body);
      checkModel(body.model, modelName);
      return resolveInput({
        body,
        promptTokens: completionPromptTokens(body.prompt, tokenizer, config),
        maxTokens: body.max_tokens,
        maxTokensParam: 'max_tokens',
        promptParam: 'prompt',
        requestId: request.id,
        planId,
        config,
        echo: checkEcho(body),
      });
    }),
  );

  app.post(
    '/v1/chat/completions',
    generation(chatFormat, (request, planId) => {
      const body = parseBody(chatBodySchema, request.body);
      checkModel(body.model, modelName);
      const useCompletionTokens = body.max_completion_tokens !== null && body.max_completion_tokens !== undefined;
      return resolveInput({
        body,
        promptTokens: chatPrompter.encode(body.messages),
        maxTokens: useCompletionTokens ? body.max_completion_tokens : body.max_tokens,
        maxTokensParam: useCompletionTokens ? 'max_completion_tokens' : 'max_tokens',
        promptParam: 'messages',
        requestId: request.id,
        planId,
        config,
      });
    }),
  );
}
