/**
 * Seeded train / held-out split of a corpus. Each document is placed by a hash of its id and the
 * seed alone — never by its position or by the other documents — so adding, removing or
 * reordering documents never moves an existing document to the other set, and raising the
 * held-out fraction only moves documents from train to held-out. The rule is spelled out in
 * docs/corpus.md so other tools (a Python notebook) can reproduce it.
 */
import { createHash } from 'node:crypto';
import { SaegateError } from '../../common/errors.js';

/** Options of {@link splitCorpus}. */
export interface SplitCorpusOptions {
  /** Expected share of documents held out, in [0, 1]. 0 holds out none, 1 all. */
  heldOutFraction: number;
  /** Any safe integer; the same seed gives the same split. */
  seed: number;
}

/** The two sets, each in the input's order. */
export interface CorpusSplit<T> {
  train: T[];
  heldOut: T[];
}

const TWO_TO_53 = 2 ** 53;

/**
 * Where a document falls in [0, 1): the first 8 bytes of SHA-256 of the UTF-8 string
 * `"<seed>:<id>"`, read big-endian, top 53 bits, divided by 2^53. A document is held out when
 * this is below `heldOutFraction`.
 */
export function splitScore(id: string, seed: number): number {
  const digest = createHash('sha256').update(`${seed}:${id}`, 'utf8').digest();
  return Number(digest.readBigUInt64BE(0) >> 11n) / TWO_TO_53;
}

/** Splits `documents` into train and held-out by {@link splitScore}. Throws SAEGATE_ERR_CONFIG for bad options. */
export function splitCorpus<T extends { readonly id: string }>(documents: readonly T[], options: SplitCorpusOptions): CorpusSplit<T> {
  const { heldOutFraction, seed } = options;
  if (typeof heldOutFraction !== 'number' || !(heldOutFraction >= 0 && heldOutFraction <= 1)) {
    throw new SaegateError('SAEGATE_ERR_CONFIG', ['heldOutFraction', `a number from 0 to 1, got ${heldOutFraction}`]);
  }
  if (!Number.isSafeInteger(seed)) throw new SaegateError('SAEGATE_ERR_CONFIG', ['seed', `a safe integer, got ${seed}`]);
  const split: CorpusSplit<T> = { train: [], heldOut: [] };
  for (const document of documents) {
    (splitScore(document.id, seed) < heldOutFraction ? split.heldOut : split.train).push(document);
  }
  return split;
}
