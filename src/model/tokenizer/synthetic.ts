/**
 * The tokenizer of synthetic models: byte-level and fixed, so a seeded random model can be served,
 * tokenized and decoded like a real one without any file.
 *
 * Ids: 0 unk/pad, 1 BOS, 2 EOS (all decode to nothing), 3..258 the bytes 0..255, and every id from
 * 259 up a fixed English word piece (" the", " cat", …) so that text sampled from a random model
 * reads as words. `encode` only ever emits byte tokens, which keeps it trivially invertible:
 * `decode(encode(s)) === s` for every string without lone surrogates.
 */
import { err } from '../../common/errors.js';
import type { Tokenizer } from '../types.js';
import { ByteBuilder, utf8Bytes } from './bytes.js';

const BYTE_OFFSET = 3;
const FIRST_WORD_ID = 256 + BYTE_OFFSET;

/** Word pieces for ids ≥ 259, cycled when the vocabulary is larger than the list. */
const WORDS = (
  ' the a and to of in was it he she they said little big day one time once upon there with his her' +
  ' cat dog bird tree sun park ball home friend happy sad play saw went had very so but not you I' +
  ' is on for at up out all be have we can like look run jump red blue green'
)
  .split(' ')
  .slice(1)
  .map((word) => utf8Bytes(` ${word}`));
const PUNCTUATION = ['.', ',', '!', '?', '\n'].map((p) => utf8Bytes(p));

/** A byte-level tokenizer for synthetic models; see the module comment. */
export class SyntheticTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosId = 1;
  readonly eosIds: readonly number[] = [2];
  readonly chatTemplate = null;

  constructor(vocabSize: number) {
    if (!Number.isSafeInteger(vocabSize) || vocabSize < FIRST_WORD_ID) {
      throw err('SAEGATE_ERR_MODEL_CONFIG', 'synthetic', `vocab ${vocabSize} is below the ${FIRST_WORD_ID} ids the synthetic byte tokenizer needs`);
    }
    this.vocabSize = vocabSize;
  }

  /** One token per UTF-8 byte; `addBos` (default false) prepends BOS. */
  encode(text: string, options: { addBos?: boolean } = {}): number[] {
    const ids = options.addBos ? [this.bosId] : [];
    for (const byte of utf8Bytes(text)) ids.push(byte + BYTE_OFFSET);
    return ids;
  }

  /** Byte tokens are bytes, higher ids their word piece, specials nothing; then UTF-8 with U+FFFD. */
  decode(ids: readonly number[]): string {
    const out = new ByteBuilder();
    const single = new Uint8Array(1);
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw err('SAEGATE_ERR_BAD_REQUEST', `token id ${id} is outside the vocabulary (0..${this.vocabSize - 1})`);
      }
      if (id < BYTE_OFFSET) continue;
      if (id < FIRST_WORD_ID) {
        single[0] = id - BYTE_OFFSET;
        out.append(single);
      } else {
        out.append(this.piece(id));
      }
    }
    return out.toText();
  }

  /** The fixed piece of a word id (≥ 259): mostly words, every seventh a punctuation mark. */
  piece(id: number): Uint8Array {
    const k = id - FIRST_WORD_ID;
    return k % 7 === 6 ? PUNCTUATION[Math.floor(k / 7) % PUNCTUATION.length] : WORDS[k % WORDS.length];
  }
}

/** The synthetic tokenizer for a vocabulary of `vocabSize` (at least 259) ids. */
export function syntheticTokenizer(vocabSize: number): SyntheticTokenizer {
  return new SyntheticTokenizer(vocabSize);
}
