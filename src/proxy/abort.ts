/**
 * What a client gets when a policy stops a generation (`abort`, docs/policies.md "Abort"): an
 * OpenAI-shaped ending with `finish_reason: "content_filter"`, OpenAI's documented value for output
 * that was cut by a filter.
 *
 * - A stream ends with one chunk per choice whose `finish_reason` is `content_filter` (an empty
 *   `delta` for chat, an empty `text` for completions), `data: [DONE]`, and saegate's usual last
 *   comment `: x-saegate-applied=…, abort=POLICY`. The chunks already forwarded stay as they were.
 * - A non-streaming request gets a complete response with empty text: the upstream sends a
 *   non-streaming body only once generation is over, so there is no partial text to return.
 *
 * The request's `model` and `n` come from its body; the completion id and `created` from the first
 * upstream chunk forwarded, when there was one (so a client grouping chunks by id sees one id).
 * All of this is computed only when an abort happens: the forwarding path never parses a body.
 */
import type { GenerationAbort } from './plan.js';

/** `finish_reason` of an aborted generation. */
export const ABORT_FINISH_REASON = 'content_filter';

/** Characters a policy name may carry into `x-saegate-applied`; anything else becomes `_`. */
const UNSAFE = /[^A-Za-z0-9._:@-]/g;

/** The `x-saegate-applied` value of an aborted request: the request's value plus `abort=POLICY`. */
export function abortedAppliedValue(applied: string, abort: GenerationAbort): string {
  const item = `abort=${abort.policy.slice(0, 200).replace(UNSAFE, '_') || '_'}`;
  return applied === 'none' ? item : `${applied}, ${item}`;
}

/** What the ending is built from. */
export interface AbortEndingInput {
  route: 'chat_completions' | 'completions';
  requestId: string;
  /** The request body as forwarded. */
  body: Buffer | null;
  /** The first upstream chunk forwarded to the client, if any (an id and `created` are read from it). */
  firstChunk: Buffer | null;
  /** Seconds since the epoch, for `created` when no upstream chunk carried one. */
  nowSeconds: number;
}

interface EndingFields {
  id: string;
  created: number;
  model: string;
  choices: number;
}

function readFields(input: AbortEndingInput): EndingFields {
  let model = '';
  let choices = 1;
  if (input.body !== null) {
    try {
      const parsed: unknown = JSON.parse(input.body.toString('utf8'));
      if (typeof parsed === 'object' && parsed !== null) {
        const { model: m, n } = parsed as { model?: unknown; n?: unknown };
        if (typeof m === 'string') model = m;
        if (typeof n === 'number' && Number.isInteger(n) && n >= 1 && n <= 128) choices = n;
      }
    } catch {
      // The upstream accepted the body, so this does not happen; the defaults stand.
    }
  }
  let id = `saegate-${input.requestId}`;
  let created = input.nowSeconds;
  if (input.firstChunk !== null) {
    const text = input.firstChunk.toString('utf8');
    const idMatch = /"id"\s*:\s*"([^"\\]{1,200})"/.exec(text);
    if (idMatch) id = idMatch[1];
    const createdMatch = /"created"\s*:\s*(\d{1,12})/.exec(text);
    if (createdMatch) created = Number(createdMatch[1]);
    const modelMatch = model === '' ? /"model"\s*:\s*"([^"\\]{1,200})"/.exec(text) : null;
    if (modelMatch) model = modelMatch[1];
  }
  return { id, created, model, choices };
}

/** The SSE bytes that end an aborted stream: final chunk(s), `[DONE]`, the applied comment. */
export function abortStreamEnding(input: AbortEndingInput, applied: string): string {
  const f = readFields(input);
  const choices = Array.from({ length: f.choices }, (_, index) =>
    input.route === 'chat_completions'
      ? { index, delta: {}, logprobs: null, finish_reason: ABORT_FINISH_REASON }
      : { index, text: '', logprobs: null, finish_reason: ABORT_FINISH_REASON },
  );
  const object = input.route === 'chat_completions' ? 'chat.completion.chunk' : 'text_completion';
  const chunk = JSON.stringify({ id: f.id, object, created: f.created, model: f.model, choices });
  return `data: ${chunk}\n\ndata: [DONE]\n\n: x-saegate-applied=${applied}\n\n`;
}

/** The JSON body of an aborted non-streaming request. */
export function abortResponseBody(input: AbortEndingInput): string {
  const f = readFields(input);
  const choices = Array.from({ length: f.choices }, (_, index) =>
    input.route === 'chat_completions'
      ? { index, message: { role: 'assistant', content: '' }, logprobs: null, finish_reason: ABORT_FINISH_REASON }
      : { index, text: '', logprobs: null, finish_reason: ABORT_FINISH_REASON },
  );
  const object = input.route === 'chat_completions' ? 'chat.completion' : 'text_completion';
  return JSON.stringify({ id: f.id, object, created: f.created, model: f.model, choices });
}

/*
 * Where SSE events end. The forwarder keeps the last four bytes of a stream as a number (`tail`,
 * shifted left a byte at a time) so that deciding whether it stands between events costs no copy.
 */

/** Rolling last bytes of a stream: true when they end an SSE event (a blank line, LF or CRLF). */
export function endsEvent(tail: number): boolean {
  return (tail & 0xffff) === 0x0a0a || tail === 0x0d0a0d0a;
}

/** Index just past the first blank line in `chunk` given the stream's `tail` before it, or -1. */
export function eventEnd(tail: number, chunk: Buffer): number {
  for (let i = 0; i < chunk.length; i++) {
    tail = ((tail << 8) | chunk[i]) >>> 0;
    if (endsEvent(tail)) return i + 1;
  }
  return -1;
}

/** `tail` with the last bytes of `chunk` shifted in. */
export function pushTail(tail: number, chunk: Buffer): number {
  const start = Math.max(0, chunk.length - 4);
  for (let i = start; i < chunk.length; i++) tail = ((tail << 8) | chunk[i]) >>> 0;
  return tail;
}
