/**
 * Byte-level helpers shared by the tokenizers that decode to bytes first (llama2.c, synthetic):
 * pieces are byte strings, so output is assembled as bytes and turned into text once.
 */

// ignoreBOM: a decoded EF BB BF at the start is text the model produced, not a byte-order mark to
// drop. Non-fatal: invalid or incomplete UTF-8 becomes U+FFFD, as the Tokenizer contract says.
const utf8Decoder = new TextDecoder('utf-8', { ignoreBOM: true });
const utf8Encoder = new TextEncoder();

/** UTF-8 bytes of a string (lone surrogates become U+FFFD's bytes). */
export function utf8Bytes(text: string): Uint8Array {
  return utf8Encoder.encode(text);
}

/** Decodes UTF-8 with U+FFFD for invalid or incomplete sequences, keeping a leading BOM. */
export function decodeUtf8(bytes: Uint8Array): string {
  return utf8Decoder.decode(bytes);
}

/** Appends byte strings into one growing buffer without a copy per append. */
export class ByteBuilder {
  #bytes = new Uint8Array(256);
  #length = 0;

  append(piece: Uint8Array): void {
    if (this.#length + piece.length > this.#bytes.length) {
      const grown = new Uint8Array(Math.max(this.#bytes.length * 2, this.#length + piece.length));
      grown.set(this.#bytes.subarray(0, this.#length));
      this.#bytes = grown;
    }
    this.#bytes.set(piece, this.#length);
    this.#length += piece.length;
  }

  /** The bytes appended so far, as text. */
  toText(): string {
    return decodeUtf8(this.#bytes.subarray(0, this.#length));
  }
}

/** The byte a llama2.c / sentencepiece byte-fallback piece `<0xAB>` stands for, or -1. */
export function byteFallbackValue(piece: string): number {
  const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(piece);
  return m ? parseInt(m[1], 16) : -1;
}
