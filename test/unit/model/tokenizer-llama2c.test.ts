import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadLlama2cTokenizer, parseLlama2cTokenizer, type Llama2cTokenizer } from '../../../src/model/tokenizer/llama2c.js';
import { expectSaegateError } from '../../helpers/errors.js';
import { hasSharedModels, needsSharedModels, llama2Tokenizer, makeTempDir, readGreedyReference, removeTempDir, stories260K, writeLlama2cTokenizer } from '../../helpers/fixtures.js';

/**
 * run.c's encode() transcribed literally (O(n²) rescans), as the oracle for the heap-based merge.
 * The dummy prefix goes through the codepoint loop like any other byte, which is what run.c does
 * whenever " " is in the vocabulary.
 */
function runCEncode(tokenizer: Llama2cTokenizer, text: string): number[] {
  if (text === '') return [];
  const lookup = new Map<string, number>();
  tokenizer.pieces.forEach((p, id) => lookup.has(p) || lookup.set(p, id));
  const bytes = Buffer.from(` ${text}`, 'utf8');
  const tokens: number[] = [];
  let buffer: number[] = [];
  for (let i = 0; i < bytes.length; i++) {
    if ((bytes[i] & 0xc0) !== 0x80) buffer = [];
    buffer.push(bytes[i]);
    if (i + 1 < bytes.length && (bytes[i + 1] & 0xc0) === 0x80 && buffer.length < 4) continue;
    const id = lookup.get(Buffer.from(buffer).toString('latin1'));
    if (id !== undefined) tokens.push(id);
    else tokens.push(...buffer.map((b) => b + 3));
    buffer = [];
  }
  for (;;) {
    let bestScore = -1e10;
    let bestId = -1;
    let bestIndex = -1;
    for (let i = 0; i < tokens.length - 1; i++) {
      const id = lookup.get(tokenizer.pieces[tokens[i]] + tokenizer.pieces[tokens[i + 1]]);
      if (id !== undefined && tokenizer.scores[id] > bestScore) {
        bestScore = tokenizer.scores[id];
        bestId = id;
        bestIndex = i;
      }
    }
    if (bestIndex === -1) break;
    tokens.splice(bestIndex, 2, bestId);
  }
  return tokens;
}

/** A small vocabulary: <unk>, <s>, </s>, 256 byte tokens, then a few merges with scores. */
function smallVocabulary(extra: [string, number][]): { piece: string | Uint8Array; score: number }[] {
  const entries: { piece: string | Uint8Array; score: number }[] = [
    { piece: '<unk>', score: 0 },
    { piece: '\n<s>\n', score: 0 },
    { piece: '\n</s>\n', score: 0 },
  ];
  for (let b = 0; b < 256; b++) entries.push({ piece: `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`, score: 0 });
  for (const [piece, score] of extra) entries.push({ piece, score });
  return entries;
}

describe('llama2.c tokenizer on a written vocabulary', () => {
  let dir: string;
  let tokenizer: Llama2cTokenizer;
  beforeAll(() => {
    dir = makeTempDir();
    // ids 259..264: " ", "a", "b", " a", "ab", "ba"; " a" and "ab" tie on score.
    writeLlama2cTokenizer(
      path.join(dir, 'tok.bin'),
      smallVocabulary([
        [' ', -1],
        ['a', -2],
        ['b', -3],
        [' a', -4],
        ['ab', -4],
        ['ba', -5],
      ]),
    );
    tokenizer = loadLlama2cTokenizer(path.join(dir, 'tok.bin'));
  });
  afterAll(() => removeTempDir(dir));

  it('reads ids, pieces, scores and the special ids', () => {
    expect(tokenizer.vocabSize).toBe(265);
    expect(tokenizer.bosId).toBe(1);
    expect(tokenizer.eosIds).toEqual([2]);
    expect(tokenizer.chatTemplate).toBeNull();
    expect(tokenizer.pieceId('ab')).toBe(263);
    expect(tokenizer.pieceId('abc')).toBeUndefined();
    expect(tokenizer.scores[262]).toBe(-4);
  });

  it('merges the highest-scoring pair first and the leftmost pair on equal scores', () => {
    // " bab" → " ","b","a","b": "ab" (-4) beats "ba" (-5) although "ba" is further left; nothing merges after.
    expect(tokenizer.encode('bab')).toEqual([259, 261, 263]);
    // " ab" → " ","a","b": " a" and "ab" tie at -4 and overlap; the leftmost pair wins.
    expect(tokenizer.encode('ab')).toEqual([262, 261]);
    expect(tokenizer.encode('ab')).toEqual(runCEncode(tokenizer, 'ab'));
  });

  it('falls back to byte tokens for codepoints that are not pieces', () => {
    expect(tokenizer.encode('é')).toEqual([259, 0xc3 + 3, 0xa9 + 3]);
    expect(tokenizer.decode([1, ...tokenizer.encode('é€😀')])).toBe('é€😀');
  });

  it('encodes the empty string to nothing and decodes nothing to the empty string', () => {
    expect(tokenizer.encode('')).toEqual([]);
    expect(tokenizer.encode('', { addBos: true })).toEqual([1]);
    expect(tokenizer.decode([])).toBe('');
  });

  it('decodes incomplete UTF-8 to U+FFFD and keeps a leading byte-order mark', () => {
    expect(tokenizer.decode([0xe2 + 3, 0x82 + 3])).toBe('\ufffd');
    expect(tokenizer.decode([0xef + 3, 0xbb + 3, 0xbf + 3, 0x61 + 3])).toBe('\ufeffa');
  });

  it('refuses to decode an id outside the vocabulary', () => {
    expect(() => tokenizer.decode([265])).toThrow(/outside the vocabulary/);
  });

  it('matches a literal transcription of run.c on random text', () => {
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom('a', 'b', ' ', 'é', '😀'), maxLength: 40 }), (text) => {
        expect(tokenizer.encode(text)).toEqual(runCEncode(tokenizer, text));
        expect(tokenizer.decode([1, ...tokenizer.encode(text)])).toBe(text);
      }),
      { numRuns: 500 },
    );
  });

  describe('malformed files', () => {
    let good: Buffer;
    beforeAll(() => {
      good = fs.readFileSync(path.join(dir, 'tok.bin'));
    });

    it('rejects a file truncated inside an entry, naming the token', () => {
      const file = path.join(dir, 'truncated.bin');
      fs.writeFileSync(file, good.subarray(0, good.length - 2));
      expectSaegateError(() => loadLlama2cTokenizer(file), 'SAEGATE_ERR_TOKENIZER_FILE', file, 'truncated', 'token 264');
    });

    it('rejects a file truncated inside the score and length of an entry', () => {
      expectSaegateError(() => parseLlama2cTokenizer(good.subarray(0, 4 + 6), 'x.bin'), 'SAEGATE_ERR_TOKENIZER_FILE', 'x.bin', 'truncated', 'token 0');
    });

    it('rejects a file shorter than the header, a bad max_token_length, a bad length and a missing file', () => {
      expectSaegateError(() => parseLlama2cTokenizer(new Uint8Array(3), 'tiny.bin'), 'SAEGATE_ERR_TOKENIZER_FILE', 'tiny.bin', '4-byte header');
      const zeroMax = Buffer.from(good);
      zeroMax.writeInt32LE(0, 0);
      expectSaegateError(() => parseLlama2cTokenizer(zeroMax, 'zero.bin'), 'SAEGATE_ERR_TOKENIZER_FILE', 'zero.bin', 'max_token_length 0');
      const negative = Buffer.from(good);
      negative.writeInt32LE(-5, 8);
      expectSaegateError(() => parseLlama2cTokenizer(negative, 'neg.bin'), 'SAEGATE_ERR_TOKENIZER_FILE', 'neg.bin', 'token 0 has length -5');
      expectSaegateError(() => loadLlama2cTokenizer(path.join(dir, 'absent.bin')), 'SAEGATE_ERR_TOKENIZER_FILE', 'absent.bin', 'cannot read');
    });

    it('rejects a vocabulary without room for the byte-fallback tokens', () => {
      const file = path.join(dir, 'few.bin');
      writeLlama2cTokenizer(file, smallVocabulary([]).slice(0, 100));
      expectSaegateError(() => loadLlama2cTokenizer(file), 'SAEGATE_ERR_TOKENIZER_FILE', file, '100 tokens');
    });

    it('rejects a NaN score', () => {
      const nan = Buffer.from(good);
      nan.writeFloatLE(NaN, 4);
      expectSaegateError(() => parseLlama2cTokenizer(nan, 'nan.bin'), 'SAEGATE_ERR_TOKENIZER_FILE', 'nan.bin', 'NaN score');
    });
  });
});

describe.skipIf(!hasSharedModels)(needsSharedModels('llama2.c tokenizer on the shared vocabularies'), () => {
  let tok512: Llama2cTokenizer;
  let tok32k: Llama2cTokenizer;
  beforeAll(() => {
    tok512 = loadLlama2cTokenizer(stories260K.tokenizer);
    tok32k = loadLlama2cTokenizer(llama2Tokenizer);
  });

  it('encodes "Once upon a time" to the ids that start the greedy reference', () => {
    const reference = readGreedyReference();
    const ids = tok512.encode('Once upon a time', { addBos: true });
    expect(ids).toEqual([1, 403, 407, 261, 378]);
    expect(ids.slice(1)).toEqual(reference.ids.slice(0, 4));
  });

  it('decodes the greedy reference to its text, dropping BOS and the space after it', () => {
    const reference = readGreedyReference();
    expect(tok512.decode([...reference.prompt_ids, ...reference.ids])).toBe(reference.text);
    // Without the BOS in front, the first piece keeps its leading space.
    expect(tok512.decode(reference.ids.slice(0, 4))).toBe(' Once upon a time');
  });

  it('encodes with the Llama 2 vocabulary as sentencepiece does', () => {
    // sentencepiece ids of the Llama 2 tokenizer: ▁Hello = 15043, ▁world = 3186.
    expect(tok32k.encode('Hello world', { addBos: true })).toEqual([1, 15043, 3186]);
    expect(tok32k.vocabSize).toBe(32000);
  });

  it.each([
    ['ASCII', 'The quick brown fox jumps over the lazy dog. 12345 !?'],
    ['accented Latin', 'Déjà vu, naïve façade, smörgåsbord'],
    ['CJK', '你好，世界。こんにちは'],
    ['emoji via byte fallback', 'I love 🦙 and 🐍! 👩‍👩‍👧'],
    ['leading and repeated spaces', '  two  spaces\nnew line\ttab'],
  ])('round-trips %s text with both vocabularies', (_name, text) => {
    for (const tokenizer of [tok512, tok32k]) {
      const ids = tokenizer.encode(text, { addBos: true });
      expect(tokenizer.decode(ids)).toBe(text);
      expect(ids.slice(1)).toEqual(runCEncode(tokenizer, text));
    }
  });

  it('uses byte tokens for an emoji missing from the 512-token vocabulary', () => {
    const ids = tok512.encode('🦙');
    const emojiBytes = [...Buffer.from('🦙', 'utf8')];
    expect(ids.slice(-4)).toEqual(emojiBytes.map((b) => b + 3));
  });

  it('matches run.c on random mixed text with both vocabularies', () => {
    const unit = fc.constantFrom('a', 'e', 't', 'h', 'o', ' ', ',', '.', 'T', 'é', '中', '😀', '\n', 'ing', 'the');
    fc.assert(
      fc.property(fc.string({ unit, maxLength: 60 }), (text) => {
        expect(tok512.encode(text)).toEqual(runCEncode(tok512, text));
        expect(tok32k.encode(text)).toEqual(runCEncode(tok32k, text));
      }),
      { numRuns: 300 },
    );
  });

  it('encodes a prompt of several thousand characters exactly like run.c', () => {
    const text = readGreedyReference().text.repeat(13);
    expect(text.length).toBeGreaterThan(4000);
    const ids = tok512.encode(text);
    expect(ids).toEqual(runCEncode(tok512, text));
    expect(tok512.decode([1, ...ids])).toBe(text);
  });
});
