import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { StopSequenceDetokenizer, TokenPieceDecoder } from '../../../src/model/http/detokenizer.js';
import type { Tokenizer } from '../../../src/model/types.js';
import { BOS_ID, BYTE_OFFSET, ByteTokenizer, EOS_ID, byteTokens } from '../../helpers/fake-engine.js';

const tokenizer = new ByteTokenizer();

/** Feeds `text` byte by byte and returns every released delta, then the finish() tail. */
function play(text: string, stop: string[]): { deltas: string[]; detok: StopSequenceDetokenizer } {
  const detok = new StopSequenceDetokenizer({ tokenizer, stop, silentTokenIds: [EOS_ID] });
  const deltas: string[] = [];
  for (const id of byteTokens(text)) {
    const d = detok.push(id);
    if (d !== '') deltas.push(d);
  }
  const tail = detok.finish();
  if (tail !== '') deltas.push(tail);
  return { deltas, detok };
}

describe('StopSequenceDetokenizer', () => {
  it('releases every character once and joins back to the decoded text without stop sequences', () => {
    const { deltas, detok } = play('Hello, world!', []);
    expect(deltas.join('')).toBe('Hello, world!');
    expect(deltas).toHaveLength(13);
    expect(detok.stopped).toBe(false);
  });

  it('cuts the text before a stop sequence that spans several tokens and reports the token that completed it', () => {
    const { deltas, detok } = play('Hello END world', ['END']);
    expect(detok.text).toBe('Hello ');
    expect(deltas.join('')).toBe('Hello ');
    expect(detok.stopped).toBe(true);
    // "Hello " is 6 tokens, "END" 3 more: the 9th token completed the stop sequence.
    expect(detok.tokensUntilStop).toBe(9);
  });

  it('never releases a character of a stop sequence, holding a possible prefix until it is decided', () => {
    const { deltas, detok } = play('ab ENTER x END y', ['END']);
    expect(detok.text).toBe('ab ENTER x ');
    // "E" and "EN" wait until "T" (or "R") proves they are not "END"; the final "END" never comes out.
    expect(deltas).toEqual(['a', 'b', ' ', 'ENT', 'ER', ' ', 'x', ' ']);
  });

  it('picks the earliest of several stop sequences', () => {
    const { detok } = play('one two three', ['three', 'two']);
    expect(detok.text).toBe('one ');
  });

  it('releases held-back text at the end when the stop sequence never completes', () => {
    const { deltas, detok } = play('the story ends with EN', ['END']);
    expect(deltas.at(-1)).toBe('EN');
    expect(detok.text).toBe('the story ends with EN');
    expect(detok.stopped).toBe(false);
  });

  it('waits for the last byte of a multi-byte character instead of releasing U+FFFD', () => {
    const { deltas } = play('héllo €', []);
    expect(deltas.join('')).toBe('héllo €');
    expect(deltas).toContain('é');
    expect(deltas).toContain('€');
    for (const d of deltas) expect(d).not.toContain('\uFFFD');
  });

  it('finds a stop sequence made of multi-byte characters', () => {
    const { detok } = play('abc→→def', ['→→']);
    expect(detok.text).toBe('abc');
    expect(detok.tokensUntilStop).toBe(3 + 6);
  });

  it('counts EOS without decoding it and ignores tokens after a stop', () => {
    const detok = new StopSequenceDetokenizer({ tokenizer, stop: ['!'], silentTokenIds: [EOS_ID] });
    const out = [...byteTokens('hi!'), ...byteTokens('more'), EOS_ID].map((id) => detok.push(id)).join('');
    expect(out).toBe('hi');
    expect(detok.tokensUntilStop).toBe(3);
    const silent = new StopSequenceDetokenizer({ tokenizer, stop: [], silentTokenIds: [EOS_ID] });
    expect(silent.push(EOS_ID)).toBe('');
    expect(silent.finish()).toBe('');
  });

  it('agrees with cutting the full text at the first stop sequence to be completed, for any text and stop strings', () => {
    const alphabet = fc.constantFrom('a', 'b', 'c', 'é', '→', ' ');
    fc.assert(
      fc.property(fc.array(alphabet, { maxLength: 40 }), fc.array(fc.array(alphabet, { minLength: 1, maxLength: 4 }), { maxLength: 4 }), (chars, stopChars) => {
        const text = chars.join('');
        const stop = stopChars.map((c) => c.join(''));
        const { deltas, detok } = play(text, stop);
        // Generation stops as soon as a stop string is complete, so the stop that ends first wins
        // (" cc→" and "c" in " cc→": "c" completes first); at equal ends the longer one starts first.
        const matches = stop.map((s) => ({ start: text.indexOf(s), end: text.indexOf(s) + s.length })).filter((m) => m.start !== -1);
        const firstEnd = Math.min(...matches.map((m) => m.end));
        const cuts = matches.filter((m) => m.end === firstEnd).map((m) => m.start);
        const expected = cuts.length === 0 ? text : text.slice(0, Math.min(...cuts));
        expect(deltas.join('')).toBe(expected);
        expect(detok.text).toBe(expected);
        expect(detok.stopped).toBe(cuts.length > 0);
      }),
      { numRuns: 2000 },
    );
  });
});

/**
 * Bytes like ByteTokenizer, but the decode drops one leading space, as Hugging Face's Metaspace /
 * Strip decoders do at the start of a sequence: a token's text depends on what precedes it.
 */
class LeadingSpaceTokenizer extends ByteTokenizer implements Tokenizer {
  override decode(ids: readonly number[]): string {
    const text = super.decode(ids);
    return text.startsWith(' ') ? text.slice(1) : text;
  }
}

/** The obviously right pieces: decode from the start on every token, release when no character is unfinished. */
function referencePieces(tok: Tokenizer, ids: readonly number[]): string[] {
  const pieces: string[] = [];
  let released = 0;
  for (let i = 0; i < ids.length; i++) {
    const text = tok.decode(ids.slice(0, i + 1));
    if (text.endsWith('\uFFFD')) {
      pieces.push('');
    } else {
      pieces.push(text.slice(released));
      released = text.length;
    }
  }
  return pieces;
}

describe('TokenPieceDecoder', () => {
  it('gives the token that completes a split character the whole character and the others nothing', () => {
    const decoder = new TokenPieceDecoder(tokenizer);
    expect(byteTokens('a€b').map((id) => decoder.push(id))).toEqual(['a', '', '', '€', 'b']);
  });

  it('keeps the leading space a decoder drops at the start of a sequence when the token has context', () => {
    const tok = new LeadingSpaceTokenizer();
    const ids = byteTokens(' world');
    // Alone, the first space is the sequence's start and disappears; after the prompt it is text.
    const alone = new TokenPieceDecoder(tok);
    expect(ids.map((id) => alone.push(id)).join('')).toBe('world');
    const afterPrompt = new TokenPieceDecoder(tok, byteTokens(' hello'));
    expect(ids.map((id) => afterPrompt.push(id)).join('')).toBe(' world');
  });

  it('gives a character the context left unfinished, whole, to the pushed token that completes it', () => {
    const [first, ...rest] = byteTokens('→x');
    const decoder = new TokenPieceDecoder(tokenizer, [BOS_ID, ...byteTokens('ab'), first]);
    expect(rest.map((id) => decoder.push(id))).toEqual(['', '→', 'x']);
  });

  it('agrees with decoding the whole sequence from the start on every token, for any bytes and context', () => {
    const tok = new LeadingSpaceTokenizer();
    const bytes = fc.oneof(fc.integer({ min: 0, max: 255 }), fc.constantFrom(0x20, 0x61, 0xc3, 0xa9, 0xe2, 0x82, 0xac, 0xf0, 0x9f));
    const ids = (maxLength: number) => fc.array(bytes.map((b) => b + BYTE_OFFSET), { maxLength });
    fc.assert(
      // Context up to the 8 tokens the decoder reads; pushed long enough to cross many rebasings.
      fc.property(ids(7), ids(60), fc.boolean(), (context, pushed, bos) => {
        const contextIds = bos ? [BOS_ID, ...context] : context;
        const decoder = new TokenPieceDecoder(tok, contextIds);
        expect(pushed.map((id) => decoder.push(id))).toEqual(referencePieces(tok, [...contextIds, ...pushed]).slice(contextIds.length));
      }),
      { numRuns: 1000 },
    );
  });
});
