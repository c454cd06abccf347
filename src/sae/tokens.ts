/**
 * Per-request token tables for the SAE sink: the token id and text piece at each position of each
 * request, from the tap's `tokens` messages, so encoded rows can say which token they were read at.
 *
 * Memory is bounded twice: at most `maxTokenRequests` requests are kept, and at most `maxTokens` token
 * slots over all of them (a request holds one slot per position up to the highest it has seen,
 * growing by doubling). Beyond either bound the least recently touched request is forgotten, and a
 * position at or above `maxTokens` is never stored, so neither many requests nor one request with a
 * huge position can grow the tables without limit. A forgotten token reads as unknown (−1, ''),
 * which consumers must handle anyway: tokens of a prompt are only sent when the subscription asks.
 */
import { err } from '../common/errors.js';
import type { TokensMessage } from '../tap/messages.js';
import type { RequestIndexColumn, TokenLookup } from './batcher.js';

export interface RequestTokensOptions {
  /** Requests whose tokens are kept; the least recently touched are forgotten first. Default 4096. */
  maxTokenRequests?: number;
  /** Token slots kept over all requests; positions at or above it are not stored. Default 1,048,576. */
  maxTokens?: number;
}

interface TokenTable {
  /** Token id by position; −1 where unknown. Its length is the table's capacity. */
  ids: Int32Array;
  /** Text piece by position; '' where unknown. Same length as `ids`. */
  texts: string[];
  /** Set when the table was forgotten while a message was still writing to it. */
  evicted: boolean;
}

/** Smallest table allocated, positions. */
const MIN_CAPACITY = 16;

export class RequestTokens implements TokenLookup {
  private readonly maxRequests: number;
  private readonly maxTokens: number;
  /** In least- to most-recently-touched order (a touch re-inserts). */
  private readonly tables = new Map<string, TokenTable>();
  private heldTokens = 0;
  /** Table per request-table index of the message being added (or the batch being filled), reused. */
  private byIndex: (TokenTable | undefined)[] = [];

  constructor(options: RequestTokensOptions = {}) {
    this.maxRequests = options.maxTokenRequests ?? 4096;
    this.maxTokens = options.maxTokens ?? 1 << 20;
    for (const [name, value] of [['maxTokenRequests', this.maxRequests], ['maxTokens', this.maxTokens]] as const) {
      if (!Number.isInteger(value) || value < 1) throw err('SAEGATE_ERR_CONFIG', name, `a positive integer, got ${value}`);
    }
  }

  /** Requests with a table now. */
  get requests(): number {
    return this.tables.size;
  }

  /** Token slots held over all tables. */
  get slots(): number {
    return this.heldTokens;
  }

  /** Whether `requestId` has a table. */
  has(requestId: string): boolean {
    return this.tables.has(requestId);
  }

  /** Stores every entry of a `tokens` message; each request in it becomes the most recently touched. */
  add(message: TokensMessage): void {
    const byIndex = this.byIndex;
    const indexes = message.rowRequestIndexes;
    const positions = message.positions;
    for (let i = 0; i < indexes.length; i++) {
      const k = indexes[i];
      const table = byIndex[k] ?? (byIndex[k] = this.touch(message.requestIds[k]));
      const position = positions[i];
      if (position < 0 || position >= this.maxTokens || table.evicted) continue;
      if (position >= table.ids.length) this.grow(table, position + 1);
      // grow() may have forgotten this very table when one message outgrows the bounds.
      if (table.evicted) continue;
      table.ids[position] = message.tokenIds[i];
      table.texts[position] = message.texts[i];
    }
    // Drop the references so forgotten tables are not kept alive until the next message.
    byIndex.fill(undefined, 0, message.requestIds.length);
  }

  /** Forgets a request's tokens. */
  delete(requestId: string): void {
    const table = this.tables.get(requestId);
    if (table === undefined) return;
    this.forget(requestId, table);
  }

  /** Forgets every request. */
  clear(): void {
    for (const [requestId, table] of this.tables) this.forget(requestId, table);
  }

  fill(requestIds: readonly string[], rowRequestIndexes: RequestIndexColumn, positions: Int32Array, tokenIds: Int32Array, tokenTexts: string[]): void {
    // One Map lookup per request of the batch, then rows index the tables by their request index.
    const tables = this.byIndex;
    for (let k = 0; k < requestIds.length; k++) tables[k] = this.tables.get(requestIds[k]);
    for (let r = 0; r < tokenIds.length; r++) {
      const table = tables[rowRequestIndexes[r]];
      const position = positions[r];
      if (table !== undefined && position >= 0 && position < table.ids.length) {
        tokenIds[r] = table.ids[position];
        tokenTexts[r] = table.texts[position];
      } else {
        tokenIds[r] = -1;
        tokenTexts[r] = '';
      }
    }
    tables.fill(undefined, 0, requestIds.length);
  }

  /** The request's table, created when missing, moved to the most recently touched end. */
  private touch(requestId: string): TokenTable {
    let table = this.tables.get(requestId);
    if (table !== undefined) {
      this.tables.delete(requestId);
      this.tables.set(requestId, table);
      return table;
    }
    table = { ids: new Int32Array(0), texts: [], evicted: false };
    this.tables.set(requestId, table);
    this.evictBeyondBounds();
    return table;
  }

  /** Grows `table` to hold at least `needed` positions (`needed` ≤ maxTokens), then enforces the bounds. */
  private grow(table: TokenTable, needed: number): void {
    const old = table.ids.length;
    const capacity = Math.min(this.maxTokens, Math.max(needed, old * 2, MIN_CAPACITY));
    const ids = new Int32Array(capacity).fill(-1);
    ids.set(table.ids);
    table.ids = ids;
    const texts = table.texts;
    for (let p = old; p < capacity; p++) texts.push('');
    this.heldTokens += capacity - old;
    this.evictBeyondBounds();
  }

  private evictBeyondBounds(): void {
    while (this.tables.size > this.maxRequests || this.heldTokens > this.maxTokens) {
      const oldest = this.tables.entries().next();
      if (oldest.done === true) return;
      this.forget(oldest.value[0], oldest.value[1]);
    }
  }

  private forget(requestId: string, table: TokenTable): void {
    this.tables.delete(requestId);
    this.heldTokens -= table.ids.length;
    table.evicted = true;
  }
}
