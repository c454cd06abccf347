/**
 * Request bodies of the OpenAI-compatible routes, as zod schemas. Unknown fields are stripped, not
 * refused, because OpenAI clients send fields this server does not implement (`logit_bias`,
 * `presence_penalty`, …) and OpenAI-compatible servers ignore them. Wrong types and ranges of the
 * fields we do read are refused with a 400 whose `param` names the field, OpenAI's way.
 */
import { z } from 'zod';
import { SaegateError } from '../../common/errors.js';

/** Most stop sequences per request, as in OpenAI's API. */
export const MAX_STOP_SEQUENCES = 4;

const stopSchema = z.union([z.string().min(1), z.array(z.string().min(1)).max(MAX_STOP_SEQUENCES)], {
  error: `expected a non-empty string or an array of at most ${MAX_STOP_SEQUENCES} non-empty strings`,
});

/** Where a steering vector applies, in token positions (0 = the first prompt token, BOS included). */
const positionsSchema = z.union(
  [
    z.enum(['all', 'prompt', 'generated']),
    z.object({
      from: z.int().min(0),
      until: z.int().min(1).nullish(),
    }),
  ],
  { error: `expected "all", "prompt", "generated" or {"from": int, "until": int | null}` },
);

/** One entry of the request body's `steering` field; see docs/model-server.md. */
export const steeringEntrySchema = z.object({
  /** TransformerLens hook name, e.g. `blocks.2.hook_resid_post`. */
  hook: z.string().optional(),
  /** Shorthand for `blocks.<layer>.hook_resid_post`. */
  layer: z.int().min(0).optional(),
  // z.number() refuses Infinity (JSON's 1e999) and NaN, so every value reaching the engine is finite.
  vector: z.array(z.number()).min(1),
  scale: z.number().optional(),
  positions: positionsSchema.optional(),
});

/** A parsed `steering` entry, before it is checked against the model. */
export type SteeringField = z.infer<typeof steeringEntrySchema>;

/** Fields shared by `/v1/completions` and `/v1/chat/completions`. */
const samplingFields = {
  model: z.string(),
  max_tokens: z.int().min(1).nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  seed: z.int().nullish(),
  stop: stopSchema.nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().nullish() }).nullish(),
  n: z
    .int()
    .refine((n) => n === 1, { error: 'only n = 1 is supported' })
    .nullish(),
  user: z.string().nullish(),
  steering: z.array(steeringEntrySchema).nullish(),
};

/** `prompt` of `/v1/completions`: one text prompt or one token-id prompt. */
const promptSchema = z.union(
  [z.string(), z.array(z.string()).length(1), z.array(z.int().min(0)).min(1), z.array(z.array(z.int().min(0)).min(1)).length(1)],
  { error: 'expected a string, an array of one string, or an array of token ids (one prompt per request)' },
);

/** Most alternatives per position in `logprobs`, as in OpenAI's legacy completions API. */
export const MAX_LOGPROBS = 5;

/** Body of `POST /v1/completions`. */
export const completionBodySchema = z.object({
  ...samplingFields,
  // 0 scores the prompt without generating; routes.ts allows it only with echo and logprobs.
  max_tokens: z.int().min(0).nullish(),
  prompt: promptSchema,
  /** Prepend the prompt to the returned text. */
  echo: z.boolean().nullish(),
  /** With echo: the prompt tokens' log-probabilities and this many alternatives per position. */
  logprobs: z.int().min(0).max(MAX_LOGPROBS).nullish(),
});

/** A parsed `/v1/completions` body. */
export type CompletionBody = z.infer<typeof completionBodySchema>;

const textPartSchema = z.object({ type: z.literal('text'), text: z.string() });

const chatMessageSchema = z.object({
  // 'developer' is OpenAI's newer name for 'system'; clients built against it send it unasked.
  role: z.enum(['system', 'developer', 'user', 'assistant']),
  content: z.union([z.string(), z.array(textPartSchema), z.null()], {
    error: 'expected a string or an array of {"type": "text", "text": string} parts',
  }),
});

/** A parsed chat message. */
export type ChatMessageField = z.infer<typeof chatMessageSchema>;

/** Body of `POST /v1/chat/completions`. */
export const chatBodySchema = z.object({
  ...samplingFields,
  messages: z.array(chatMessageSchema).min(1),
  /** OpenAI's newer name for `max_tokens`; wins when both are given. */
  max_completion_tokens: z.int().min(1).nullish(),
});

/** A parsed `/v1/chat/completions` body. */
export type ChatBody = z.infer<typeof chatBodySchema>;

/** OpenAI writes parameter paths as `messages[0].content`. */
export function formatParamPath(path: readonly PropertyKey[]): string | null {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else out += out === '' ? String(key) : `.${String(key)}`;
  }
  return out === '' ? null : out;
}

/**
 * Parses a request body, throwing the first problem as a SaegateError with `param` set. Problems
 * inside `steering` carry SAEGATE_ERR_STEERING so clients can tell steering mistakes apart.
 */
export function parseBody<S extends z.ZodType>(schema: S, body: unknown): z.output<S> {
  if (body === undefined || body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new SaegateError('SAEGATE_ERR_BAD_REQUEST', ['the request body must be a JSON object']);
  }
  const result = schema.safeParse(body);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const param = formatParamPath(issue.path);
  const message = param === null ? issue.message : `${param}: ${issue.message}`;
  const code = issue.path[0] === 'steering' ? 'SAEGATE_ERR_STEERING' : 'SAEGATE_ERR_BAD_REQUEST';
  throw new SaegateError(code, [message], param === null ? {} : { param });
}
