/**
 * `echo` on `/v1/completions`: the prompt's text, and with `logprobs` its tokens'
 * log-probabilities in OpenAI's legacy shape (`tokens`, `token_logprobs`, `top_logprobs`,
 * `text_offset`). The first token has no prediction, so its entries are null, as in OpenAI's API.
 *
 * Token strings are cut from the decoded prompt (prefix by prefix) rather than decoded one id at a
 * time, so that they join to exactly the echoed text and `text_offset` indexes into it: decoders
 * treat the start of a sequence and multi-byte characters specially (a piece after BOS loses its
 * leading space; one character may span several byte tokens, and then only the token that
 * completes it carries the character).
 */
import type { PromptLogprobs } from '../engine-types.js';
import type { Tokenizer } from '../types.js';

/** OpenAI's legacy `logprobs` object of a completion choice. */
export interface CompletionLogprobs {
  tokens: string[];
  /** null for the first token. */
  token_logprobs: Array<number | null>;
  /** null for the first token; otherwise the `logprobs` most likely tokens, best first. */
  top_logprobs: Array<Record<string, number> | null>;
  /** Character offset of each token in the choice's text. */
  text_offset: number[];
}

/** The prompt as the echo shows it, and each token's piece of it. */
export interface EchoedPrompt {
  text: string;
  /** Per prompt token, its text (possibly empty: BOS, or the first bytes of a split character). */
  pieces: string[];
  offsets: number[];
}

const REPLACEMENT_CHARACTER = '\uFFFD';

/** Splits the decoded prompt into one piece per token (see the file comment). */
export function echoPrompt(tokenizer: Tokenizer, promptTokens: readonly number[]): EchoedPrompt {
  const pieces: string[] = [];
  const offsets: number[] = [];
  let done = '';
  for (let i = 0; i < promptTokens.length; i++) {
    offsets.push(done.length);
    let prefix = tokenizer.decode(promptTokens.slice(0, i + 1));
    // An incomplete character at the end waits for the token that completes it.
    if (prefix.endsWith(REPLACEMENT_CHARACTER) && i + 1 < promptTokens.length) prefix = prefix.slice(0, -1);
    const piece = prefix.startsWith(done) ? prefix.slice(done.length) : tokenizer.decode([promptTokens[i]]);
    pieces.push(piece);
    done += piece;
  }
  return { text: done, pieces, offsets };
}

/**
 * An alternative's text as it would read in place: decoded after the token before it and cut off
 * that token's text, so the rule that drops a piece's leading space right after BOS applies to
 * the alternatives as it does to `tokens` (`Once`, not ` Once`, as the first word).
 */
function alternativeText(tokenizer: Tokenizer, previous: number, id: number): string {
  const before = tokenizer.decode([previous]);
  const both = tokenizer.decode([previous, id]);
  return both.startsWith(before) ? both.slice(before.length) : tokenizer.decode([id]);
}

/** OpenAI's logprobs object for an echoed prompt (the prompt's ids in `promptTokens`). */
export function promptLogprobsObject(tokenizer: Tokenizer, promptTokens: readonly number[], echoed: EchoedPrompt, result: PromptLogprobs): CompletionLogprobs {
  const n = echoed.pieces.length;
  const tokenLogprobs: Array<number | null> = [null];
  const topLogprobs: Array<Record<string, number> | null> = [null];
  for (let t = 0; t < n - 1; t++) {
    tokenLogprobs.push(result.tokenLogprobs[t]);
    const top: Record<string, number> = {};
    for (let k = 0; k < result.top; k++) {
      const name = alternativeText(tokenizer, promptTokens[t], result.topIds[t * result.top + k]);
      // Two ids may decode alike (a byte token and a piece); the likelier one, first, keeps the key.
      if (!(name in top)) top[name] = result.topLogprobs[t * result.top + k];
    }
    topLogprobs.push(top);
  }
  return { tokens: echoed.pieces, token_logprobs: tokenLogprobs, top_logprobs: topLogprobs, text_offset: echoed.offsets };
}
