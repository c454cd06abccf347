/**
 * llama2.c's tokenizer: a sentencepiece BPE vocabulary exported as
 *
 *     int32 max_token_length, then per token: float32 score, int32 byte length, bytes
 *
 * Encoding and decoding reproduce `encode()` and `decode()` of llama2.c's run.c, so token ids match
 * the ones the checkpoints were evaluated with. Pieces are byte strings, not text: a Map keyed by
 * the piece's bytes as a latin1 string (one char per byte) makes concatenation and lookup exact
 * even for pieces that are partial UTF-8.
 */
import fs from 'node:fs';
import { err } from '../../common/errors.js';
import type { Tokenizer } from '../types.js';
import { ByteBuilder, byteFallbackValue, utf8Bytes } from './bytes.js';

const BOS_ID = 1;
const EOS_ID = 2;
/** Byte-fallback tokens: byte b is token b + 3, after <unk>, <s> and </s>. */
const BYTE_TOKEN_OFFSET = 3;
/** run.c starts its best-merge search at this score, so a merge scoring at or below it never happens. */
const MERGE_SCORE_FLOOR = -1e10;

/** One candidate merge of two adjacent symbols, as a heap entry. */
interface MergeCandidate {
  score: number;
  /** Node index of the left symbol; also its original position, which orders ties left to right. */
  left: number;
  right: number;
  merged: number;
  leftVersion: number;
  rightVersion: number;
}

/** True when `a` should be merged before `b`: higher score first, then the leftmost pair. */
function before(a: MergeCandidate, b: MergeCandidate): boolean {
  return a.score > b.score || (a.score === b.score && a.left < b.left);
}

/** A binary max-heap of merge candidates. */
class MergeHeap {
  readonly #items: MergeCandidate[] = [];

  get size(): number {
    return this.#items.length;
  }

  push(item: MergeCandidate): void {
    const items = this.#items;
    let i = items.length;
    items.push(item);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(item, items[parent])) break;
      items[i] = items[parent];
      i = parent;
    }
    items[i] = item;
  }

  pop(): MergeCandidate {
    const items = this.#items;
    const top = items[0];
    const last = items.pop()!;
    if (items.length > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= items.length) break;
        const r = l + 1;
        const child = r < items.length && before(items[r], items[l]) ? r : l;
        if (!before(items[child], last)) break;
        items[i] = items[child];
        i = child;
      }
      items[i] = last;
    }
    return top;
  }
}

/** A llama2.c tokenizer; see the module comment. */
export class Llama2cTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosId = BOS_ID;
  readonly eosIds: readonly number[] = [EOS_ID];
  readonly chatTemplate = null;
  /** The file's max_token_length field. */
  readonly maxTokenLength: number;
  /** Merge scores by token id (f32 values, as run.c compares them). */
  readonly scores: Float32Array;
  /** Pieces by token id as latin1 byte strings (one char per byte). */
  readonly pieces: readonly string[];
  readonly #idByPiece = new Map<string, number>();
  /** Bytes each token decodes to (byte-fallback pieces resolved to their one byte). */
  readonly #decodeBytes: Uint8Array[];
  /** The same after BOS: sentencepiece drops the leading space of the first piece. */
  readonly #decodeBytesAfterBos: Uint8Array[];

  constructor(options: { pieces: readonly Uint8Array[]; scores: Float32Array; maxTokenLength: number }) {
    this.vocabSize = options.pieces.length;
    this.scores = options.scores;
    this.maxTokenLength = options.maxTokenLength;
    this.pieces = options.pieces.map((bytes) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('latin1'));
    // run.c binary-searches a sorted copy; with duplicate pieces it could return either id. Real
    // exports have none; the first id wins here, deterministically.
    this.pieces.forEach((piece, id) => {
      if (!this.#idByPiece.has(piece)) this.#idByPiece.set(piece, id);
    });
    this.#decodeBytes = options.pieces.map((bytes, id) => {
      const byte = byteFallbackValue(this.pieces[id]);
      return byte >= 0 ? Uint8Array.of(byte) : bytes;
    });
    // run.c checks the raw piece for the leading space, so a `<0x20>` after BOS is kept.
    this.#decodeBytesAfterBos = this.#decodeBytes.map((bytes, id) => (this.pieces[id].startsWith(' ') ? bytes.subarray(1) : bytes));
  }

  /** The id of a piece given as text (UTF-8), or undefined. */
  pieceId(piece: string): number | undefined {
    return this.#idByPiece.get(Buffer.from(piece, 'utf8').toString('latin1'));
  }

  /**
   * Encodes like run.c's `encode(text, bos, eos=0)`: a dummy-prefix space when the text is not
   * empty, one token per UTF-8 codepoint (byte fallback when the codepoint is not a piece), then
   * repeated merging of the adjacent pair whose concatenation is the highest-scoring piece,
   * leftmost first on ties. `addBos` defaults to false.
   */
  encode(text: string, options: { addBos?: boolean } = {}): number[] {
    const ids = text.length === 0 ? [] : this.#merge(this.#codepointTokens(utf8Bytes(` ${text}`)));
    return options.addBos ? [BOS_ID, ...ids] : ids;
  }

  /**
   * run.c's first pass. Its dummy prefix is a lookup of " " pushed as its own token; prepending
   * the space to the bytes is the same thing, and when a vocabulary lacks " " (stories260K's does)
   * it falls back to the byte token for 0x20 where run.c would push id -1.
   */
  #codepointTokens(bytes: Uint8Array): number[] {
    const ids: number[] = [];
    let start = 0;
    for (let i = 0; i < bytes.length; i++) {
      if ((bytes[i] & 0xc0) !== 0x80) start = i;
      const length = i - start + 1;
      // Keep collecting continuation bytes of this codepoint, at most 4 bytes, as run.c does.
      if (i + 1 < bytes.length && (bytes[i + 1] & 0xc0) === 0x80 && length < 4) continue;
      const chunk = bytes.subarray(start, i + 1);
      const id = this.#idByPiece.get(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length).toString('latin1'));
      if (id !== undefined) ids.push(id);
      else for (const byte of chunk) ids.push(byte + BYTE_TOKEN_OFFSET);
      start = i + 1;
    }
    return ids;
  }

  /**
   * run.c's merge loop gives the same result as this heap version: run.c rescans all pairs and
   * takes the highest score, first position on ties; the heap orders candidates by (score desc,
   * left node asc), and a node's index is its original position, which preserves list order.
   * Candidates that went stale (a side merged since) are recognised by version stamps and
   * skipped. O(n log n) instead of run.c's O(n²) rescans.
   */
  #merge(initial: number[]): number[] {
    const n = initial.length;
    const id = Int32Array.from(initial);
    const next = new Int32Array(n);
    const prev = new Int32Array(n);
    const version = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    const heap = new MergeHeap();
    const consider = (left: number, right: number): void => {
      const merged = this.#idByPiece.get(this.pieces[id[left]] + this.pieces[id[right]]);
      if (merged === undefined) return;
      const score = this.scores[merged];
      if (!(score > MERGE_SCORE_FLOOR)) return;
      heap.push({ score, left, right, merged, leftVersion: version[left], rightVersion: version[right] });
    };
    for (let i = 0; i + 1 < n; i++) consider(i, i + 1);
    while (heap.size > 0) {
      const c = heap.pop();
      if (version[c.left] !== c.leftVersion || version[c.right] !== c.rightVersion) continue;
      id[c.left] = c.merged;
      version[c.left]++;
      // The right node dies; bumping its version invalidates every candidate that mentions it.
      version[c.right]++;
      const after = next[c.right];
      next[c.left] = after;
      if (after >= 0) prev[after] = c.left;
      if (prev[c.left] >= 0) consider(prev[c.left], c.left);
      if (after >= 0) consider(c.left, after);
    }
    const out: number[] = [];
    // Node 0 is never the right side of a merge, so it heads the list to the end.
    for (let i = n > 0 ? 0 : -1; i >= 0; i = next[i]) out.push(id[i]);
    return out;
  }

  /**
   * Decodes like run.c's `decode()` over the sequence: `<0xXX>` pieces are raw bytes and a piece
   * right after BOS loses its leading space; BOS and EOS themselves decode to nothing (they are
   * sentencepiece control tokens; run.c never prints them). Bytes are joined first and decoded as
   * UTF-8 once, so multi-byte characters split over byte tokens come out whole.
   */
  decode(ids: readonly number[]): string {
    const out = new ByteBuilder();
    let previous = -1;
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw err('SAEGATE_ERR_BAD_REQUEST', `token id ${id} is outside the vocabulary (0..${this.vocabSize - 1})`);
      }
      if (id !== BOS_ID && id !== EOS_ID) out.append(previous === BOS_ID ? this.#decodeBytesAfterBos[id] : this.#decodeBytes[id]);
      previous = id;
    }
    return out.toText();
  }
}

/** Parses tokenizer.bin bytes; `path` is for error messages. */
export function parseLlama2cTokenizer(bytes: Uint8Array, path: string): Llama2cTokenizer {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 4) throw err('SAEGATE_ERR_TOKENIZER_FILE', path, `file has ${bytes.length} bytes, shorter than the 4-byte header`);
  const maxTokenLength = view.getInt32(0, true);
  if (maxTokenLength <= 0) throw err('SAEGATE_ERR_TOKENIZER_FILE', path, `max_token_length ${maxTokenLength} is not positive`);
  const pieces: Uint8Array[] = [];
  const scores: number[] = [];
  let offset = 4;
  while (offset < bytes.length) {
    const token = pieces.length;
    if (offset + 8 > bytes.length) {
      throw err('SAEGATE_ERR_TOKENIZER_FILE', path, `truncated: token ${token} needs 8 bytes of score and length at byte ${offset}, the file ends at ${bytes.length}`);
    }
    const score = view.getFloat32(offset, true);
    const length = view.getInt32(offset + 4, true);
    if (Number.isNaN(score)) throw err('SAEGATE_ERR_TOKENIZER_FILE', path, `token ${token} has a NaN score`);
    if (length < 0 || length > maxTokenLength) {
      throw err('SAEGATE_ERR_TOKENIZER_FILE', path, `token ${token} has length ${length}, outside 0..max_token_length ${maxTokenLength}`);
    }
    if (offset + 8 + length > bytes.length) {
      throw err('SAEGATE_ERR_TOKENIZER_FILE', path, `truncated: token ${token} needs ${length} bytes at byte ${offset + 8}, the file ends at ${bytes.length}`);
    }
    pieces.push(bytes.slice(offset + 8, offset + 8 + length));
    scores.push(score);
    offset += 8 + length;
  }
  if (pieces.length < 256 + BYTE_TOKEN_OFFSET) {
    throw err('SAEGATE_ERR_TOKENIZER_FILE', path, `${pieces.length} tokens is fewer than the 259 llama2.c reserves for <unk>, <s>, </s> and the 256 byte tokens`);
  }
  return new Llama2cTokenizer({ pieces, scores: Float32Array.from(scores), maxTokenLength });
}

/** Loads a llama2.c tokenizer.bin. SAEGATE_ERR_TOKENIZER_FILE when it is missing or malformed. */
export function loadLlama2cTokenizer(path: string): Llama2cTokenizer {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(path);
  } catch (cause) {
    throw err('SAEGATE_ERR_TOKENIZER_FILE', path, `cannot read: ${(cause as Error).message}`);
  }
  return parseLlama2cTokenizer(bytes, path);
}
