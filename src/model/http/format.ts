/**
 * OpenAI response shapes, one strategy object per endpoint, so the generation loop in
 * generate.ts is shared and never asks which endpoint it serves.
 */
import { randomUUID } from 'node:crypto';
import type { CompletionLogprobs } from './logprobs.js';

/** OpenAI's finish reasons that this server produces. */
export type OpenAIFinishReason = 'stop' | 'length';

/** OpenAI's `usage` object: token counts of the prompt and the completion. */
export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** Fields every response and chunk of one request shares. */
export interface ResponseMeta {
  id: string;
  /** Unix seconds. */
  created: number;
  model: string;
}

/** A `/v1/completions` choice (and streamed chunk choice). */
export interface CompletionChoice {
  index: 0;
  text: string;
  /** With `echo` and `logprobs`: the prompt's log-probabilities (docs/model-server.md). */
  logprobs: CompletionLogprobs | null;
  finish_reason: OpenAIFinishReason | null;
}

/** A `/v1/completions` response or stream chunk (`object: 'text_completion'` for both, as in OpenAI). */
export interface CompletionObject extends ResponseMeta {
  object: 'text_completion';
  choices: CompletionChoice[];
  usage?: Usage | null;
}

/** A non-streamed chat choice. */
export interface ChatChoice {
  index: 0;
  message: { role: 'assistant'; content: string };
  logprobs: null;
  finish_reason: OpenAIFinishReason;
}

/** A non-streamed `/v1/chat/completions` response. */
export interface ChatCompletionObject extends ResponseMeta {
  object: 'chat.completion';
  choices: ChatChoice[];
  usage: Usage;
}

/** A streamed chat choice: `delta` carries the new content. */
export interface ChatChunkChoice {
  index: 0;
  delta: { role?: 'assistant'; content?: string };
  logprobs: null;
  finish_reason: OpenAIFinishReason | null;
}

/** One `chat.completion.chunk` of a chat stream. */
export interface ChatCompletionChunk extends ResponseMeta {
  object: 'chat.completion.chunk';
  choices: ChatChunkChoice[];
  usage?: Usage | null;
}

/** How one endpoint shapes its responses. `withUsage` adds `usage: null` to chunks, as OpenAI does with include_usage. */
export interface ResponseFormat {
  /** Prefix of response ids: `cmpl-` or `chatcmpl-`. */
  readonly idPrefix: string;
  /** The non-streaming response; `logprobs` only for completions (echo). */
  complete(meta: ResponseMeta, text: string, finishReason: OpenAIFinishReason, usage: Usage, logprobs?: CompletionLogprobs | null): CompletionObject | ChatCompletionObject;
  /** The chunk sent before any text, or null when the endpoint has none. */
  opening(meta: ResponseMeta, withUsage: boolean): ChatCompletionChunk | null;
  /** A chunk carrying new text; `logprobs` only for completions (the echoed prompt). */
  delta(meta: ResponseMeta, text: string, withUsage: boolean, logprobs?: CompletionLogprobs | null): CompletionObject | ChatCompletionChunk;
  /** The chunk that carries the finish reason. */
  final(meta: ResponseMeta, finishReason: OpenAIFinishReason, withUsage: boolean): CompletionObject | ChatCompletionChunk;
  /** The usage chunk (stream_options.include_usage): no choices. */
  usage(meta: ResponseMeta, usage: Usage): CompletionObject | ChatCompletionChunk;
}

function withUsageField<T extends object>(chunk: T, withUsage: boolean): T & { usage?: null } {
  return withUsage ? { ...chunk, usage: null } : chunk;
}

/** Shapes of `/v1/completions`. */
export const completionFormat: ResponseFormat = {
  idPrefix: 'cmpl-',
  complete: (meta, text, finishReason, usage, logprobs): CompletionObject => ({
    ...meta,
    object: 'text_completion',
    choices: [{ index: 0, text, logprobs: logprobs ?? null, finish_reason: finishReason }],
    usage,
  }),
  opening: () => null,
  delta: (meta, text, withUsage, logprobs): CompletionObject =>
    withUsageField({ ...meta, object: 'text_completion', choices: [{ index: 0, text, logprobs: logprobs ?? null, finish_reason: null }] }, withUsage),
  final: (meta, finishReason, withUsage): CompletionObject =>
    withUsageField({ ...meta, object: 'text_completion', choices: [{ index: 0, text: '', logprobs: null, finish_reason: finishReason }] }, withUsage),
  usage: (meta, usage): CompletionObject => ({ ...meta, object: 'text_completion', choices: [], usage }),
};

/** Shapes of `/v1/chat/completions`; streams open with a role-only chunk, as OpenAI's do. */
export const chatFormat: ResponseFormat = {
  idPrefix: 'chatcmpl-',
  complete: (meta, text, finishReason, usage): ChatCompletionObject => ({
    ...meta,
    object: 'chat.completion',
    choices: [{ index: 0, message: { role: 'assistant', content: text }, logprobs: null, finish_reason: finishReason }],
    usage,
  }),
  opening: (meta, withUsage): ChatCompletionChunk =>
    withUsageField(
      { ...meta, object: 'chat.completion.chunk', choices: [{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }] },
      withUsage,
    ),
  delta: (meta, text, withUsage): ChatCompletionChunk =>
    withUsageField({ ...meta, object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content: text }, logprobs: null, finish_reason: null }] }, withUsage),
  final: (meta, finishReason, withUsage): ChatCompletionChunk =>
    withUsageField({ ...meta, object: 'chat.completion.chunk', choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: finishReason }] }, withUsage),
  usage: (meta, usage): ChatCompletionChunk => ({ ...meta, object: 'chat.completion.chunk', choices: [], usage }),
};

/** A fresh response id with the format's prefix, e.g. `chatcmpl-3f0c…` (32 hex digits). */
export function responseMeta(format: ResponseFormat, model: string): ResponseMeta {
  return { id: `${format.idPrefix}${randomUUID().replaceAll('-', '')}`, created: Math.floor(Date.now() / 1000), model };
}
