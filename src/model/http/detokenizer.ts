/**
 * Generated token ids → text that is safe to send, with OpenAI stop sequences.
 *
 * Stop sequences are text, but tokens are not characters: one stop string can span several
 * tokens, and one character can span several tokens (a multi-byte UTF-8 character split over
 * byte tokens). So the ids are decoded from the start on every token, new text is released only
 * when the decode does not end in U+FFFD (an incomplete UTF-8 sequence, per Tokenizer.decode), and
 * any tail that could still grow into a stop string is held back until the next tokens decide it.
 * That way a streamed response never contains any part of a stop string.
 */
import type { Tokenizer } from '../types.js';

/** Options of {@link StopSequenceDetokenizer}. */
export interface DetokenizerOptions {
  tokenizer: Tokenizer;
  /** Stop sequences; generation ends before the first occurrence of any. Empty strings are ignored. */
  stop: readonly string[];
  /** Token ids that carry no text (EOS): counted, never decoded. */
  silentTokenIds: readonly number[];
  /**
   * Token ids that precede the generated ones (the end of the prompt). They are decoded in front
   * of the generated ids and their text cut off again, because some decoders treat the start of a
   * sequence specially: Hugging Face's Metaspace decoder drops the leading space of the first
   * token, so decoding generated ids alone would lose the space between prompt and completion.
   */
  contextIds?: readonly number[];
}

const REPLACEMENT_CHARACTER = '\uFFFD';

/** Incremental decoder for one generated sequence. */
export class StopSequenceDetokenizer {
  private readonly tokenizer: Tokenizer;
  private readonly stop: readonly string[];
  private readonly longestStop: number;
  private readonly silent: ReadonlySet<number>;
  private readonly ids: number[];
  /** Text of `contextIds`, cut from the front of every decode. */
  private readonly contextText: string;
  private readonly contextLength: number;
  private decoded = '';
  private released = 0;
  private releasedText = '';
  private tokensSeen = 0;
  private stopToken: number | null = null;
  private finished = false;

  constructor(options: DetokenizerOptions) {
    this.tokenizer = options.tokenizer;
    this.stop = options.stop.filter((s) => s.length > 0);
    this.longestStop = this.stop.reduce((m, s) => Math.max(m, s.length), 0);
    this.silent = new Set(options.silentTokenIds);
    const context = options.contextIds ?? [];
    this.ids = [...context];
    this.contextLength = context.length;
    this.contextText = context.length > 0 ? this.tokenizer.decode(context) : '';
  }

  /** Decodes the generated ids, in the context of the prompt's last ids. */
  private decodeGenerated(): string {
    const full = this.tokenizer.decode(this.ids);
    if (full.startsWith(this.contextText)) return full.slice(this.contextText.length);
    // A decoder that rewrote the context's text: fall back to the generated ids alone.
    return this.tokenizer.decode(this.ids.slice(this.contextLength));
  }

  /** True once a stop sequence was found; later tokens are ignored. */
  get stopped(): boolean {
    return this.stopToken !== null;
  }

  /**
   * How many tokens it took to produce the stop sequence (the token that completed it included);
   * null when no stop sequence was found.
   */
  get tokensUntilStop(): number | null {
    return this.stopToken;
  }

  /** Everything released so far: the response text. */
  get text(): string {
    return this.releasedText;
  }

  /** Adds one generated token and returns the text it releases ('' when nothing is safe to send yet). */
  push(tokenId: number): string {
    if (this.stopped || this.finished) return '';
    this.tokensSeen++;
    if (this.silent.has(tokenId)) return '';
    this.ids.push(tokenId);
    const decoded = this.decodeGenerated();
    if (decoded.endsWith(REPLACEMENT_CHARACTER)) return '';
    return this.advance(decoded, false);
  }

  /**
   * End of generation: releases what was held back (it can no longer become a stop sequence) and
   * a trailing incomplete character as the tokenizer decodes it.
   */
  finish(): string {
    if (this.stopped || this.finished) return '';
    this.finished = true;
    return this.advance(this.decodeGenerated(), true);
  }

  private advance(decoded: string, final: boolean): string {
    this.decoded = decoded;
    // Text before `released` was checked when it was released; a stop sequence can only start in
    // the last (longestStop - 1) characters of it if a decode rewrote earlier text, so start there.
    const searchFrom = Math.max(0, this.released - this.longestStop + 1);
    let cut = -1;
    for (const s of this.stop) {
      const at = decoded.indexOf(s, searchFrom);
      if (at !== -1 && (cut === -1 || at < cut)) cut = at;
    }
    if (cut !== -1) {
      this.stopToken = this.tokensSeen;
      return this.release(Math.max(cut, this.released));
    }
    return this.release(decoded.length - (final ? 0 : this.heldBackLength(decoded)));
  }

  /** Length of the longest unreleased tail of `decoded` that is a proper prefix of a stop sequence. */
  private heldBackLength(decoded: string): number {
    const limit = Math.min(this.longestStop - 1, decoded.length - this.released);
    for (let k = limit; k > 0; k--) {
      const tail = decoded.slice(decoded.length - k);
      if (this.stop.some((s) => s.startsWith(tail))) return k;
    }
    return 0;
  }

  private release(end: number): string {
    if (end <= this.released) return '';
    const delta = this.decoded.slice(this.released, end);
    this.released = end;
    this.releasedText += delta;
    return delta;
  }
}

/** Tokens of context a {@link TokenPieceDecoder} keeps in front of the next token. */
const PIECE_CONTEXT_TOKENS = 4;
/** Context tokens a {@link TokenPieceDecoder} reads from `contextIds`: room for an unfinished character. */
const PIECE_CONTEXT_READ = 8;
/** Token ids below this are memoised in pairs (key: previous id × limit + id, exact in a double). */
const MEMO_ID_LIMIT = 1 << 21;
/** Pairs memoised per tokenizer before the memo starts over (a few MiB at most). */
const MEMO_MAX_ENTRIES = 1 << 16;
/** Per tokenizer: the piece of a token right after a complete token, by pair (see TokenPieceDecoder.push). */
const pieceMemos = new WeakMap<Tokenizer, Map<number, string>>();

/**
 * Token ids → one text piece per token, for the tap's `tokens` messages: the text a token
 * completes, given everything before it. A character split over several tokens (byte fallback)
 * travels with the token that completes it; the earlier ones get ''. Pieces joined give the
 * decoded text (minus bytes that never complete a character).
 *
 * Unlike StopSequenceDetokenizer this never decodes from the start: it keeps a few tokens of
 * context plus the tokens of an unfinished character, and cuts the context's text off the decode.
 * Context is enough for the decoders in use (a leading space dropped after BOS or at the start of
 * a sequence depends on the token before, never further back), and it keeps the cost per token
 * constant, which matters once whole prompts (thousands of tokens) go through it. For the same
 * reason a token's piece after a complete token depends on that pair alone, so pieces are
 * memoised per tokenizer by (previous token, token): a model server's tap sends one piece per
 * generated token, and the two decodes per token were most of what the tap cost its event loop.
 */
export class TokenPieceDecoder {
  private readonly tokenizer: Tokenizer;
  /** Context tokens, then the tokens of a character not yet complete. */
  private window: number[] = [];
  private contextLength = 0;
  /** Text of the context tokens; null until a decode needs it. */
  private contextText: string | null = '';
  private readonly memo: Map<number, string>;

  /**
   * `contextIds`: tokens that precede the first pushed one (the prompt, when only generated
   * tokens are pushed). They are read as if pushed, pieces discarded, so a character the context
   * leaves unfinished goes, whole, with the pushed token that completes it. Only the last 8 count.
   */
  constructor(tokenizer: Tokenizer, contextIds: readonly number[] = []) {
    this.tokenizer = tokenizer;
    let memo = pieceMemos.get(tokenizer);
    if (!memo) {
      memo = new Map();
      pieceMemos.set(tokenizer, memo);
    }
    this.memo = memo;
    for (const id of contextIds.slice(-PIECE_CONTEXT_READ)) this.push(id);
  }

  /** The text `tokenId` completes: '' while it ends an unfinished character (or carries no text). */
  push(tokenId: number): string {
    // With nothing pending, the piece depends on the token before only (see the class comment), so
    // a pair seen before costs a Map lookup instead of two decodes (the tap sends a piece per token).
    const clean = this.contextLength > 0 && this.window.length === this.contextLength && tokenId >= 0 && tokenId < MEMO_ID_LIMIT;
    const key = clean ? this.window[this.contextLength - 1] * MEMO_ID_LIMIT + tokenId : -1;
    if (clean) {
      const known = this.memo.get(key);
      if (known !== undefined) {
        this.keepContext(tokenId);
        return known;
      }
    }
    const contextText = (this.contextText ??= this.tokenizer.decode(this.window.slice(0, this.contextLength)));
    this.window.push(tokenId);
    const full = this.tokenizer.decode(this.window);
    if (full.endsWith(REPLACEMENT_CHARACTER)) return '';
    const piece = full.startsWith(contextText) ? full.slice(contextText.length) : this.tokenizer.decode(this.window.slice(this.contextLength));
    if (clean && !piece.includes(REPLACEMENT_CHARACTER)) {
      if (this.memo.size >= MEMO_MAX_ENTRIES) this.memo.clear();
      this.memo.set(key, piece);
    }
    // Everything is released: the last few tokens become the context of the next one.
    this.window.pop();
    this.keepContext(tokenId);
    return piece;
  }

  /** Appends a released token and keeps the last few tokens as the context of the next one. */
  private keepContext(tokenId: number): void {
    this.window.push(tokenId);
    if (this.window.length > PIECE_CONTEXT_TOKENS) this.window = this.window.slice(-PIECE_CONTEXT_TOKENS);
    this.contextLength = this.window.length;
    this.contextText = null;
  }
}
