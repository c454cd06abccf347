import { describe, expect, it } from 'vitest';
import { encodeTokensFrame, type TokenEntries } from '../../../src/tap/builders.js';
import { decodeMessage } from '../../../src/tap/codec.js';
import type { TokensMessage } from '../../../src/tap/messages.js';
import { RequestTokens } from '../../../src/sae/tokens.js';

/** A tokens message as the tap decodes it off the wire. */
function tokensMessage(entries: TokenEntries): TokensMessage {
  const message = decodeMessage(encodeTokensFrame(entries));
  if (message.type !== 'tokens') throw new Error(`decoded a ${message.type} message`);
  return message;
}

/** One request's tokens at `positions`: id 100 + position, text `t<position>`. */
function tokensOf(requestId: string, positions: number[]): TokensMessage {
  return tokensMessage({ requestIds: positions.map(() => requestId), positions, tokenIds: positions.map((p) => 100 + p), texts: positions.map((p) => `t${p}`) });
}

/** What `fill` gives for these rows, as [id, text] pairs. */
function lookUp(tokens: RequestTokens, rows: [string, number][]): [number, string][] {
  const tokenIds = new Int32Array(rows.length);
  const tokenTexts = new Array<string>(rows.length).fill('?');
  // The batch's compact form: a request table and each row's index into it.
  const requestIds = [...new Set(rows.map(([id]) => id))];
  const rowRequestIndexes = Uint16Array.from(rows, ([id]) => requestIds.indexOf(id));
  tokens.fill(requestIds, rowRequestIndexes, Int32Array.from(rows, ([, p]) => p), tokenIds, tokenTexts);
  return rows.map((_, i) => [tokenIds[i], tokenTexts[i]]);
}

describe('RequestTokens', () => {
  it('returns the token id and text piece stored for each request and position, and −1 with empty text where none was sent', () => {
    const tokens = new RequestTokens();
    // Two requests in one message, out of order, one piece empty (a split character's first byte).
    tokens.add(tokensMessage({ requestIds: ['a', 'b', 'a', 'a'], positions: [1, 0, 0, 3], tokenIds: [11, 20, 10, 13], texts: ['é', 'x', '', 'z'] }));
    expect(lookUp(tokens, [['a', 0], ['a', 1], ['b', 0], ['a', 2], ['a', 3], ['a', 500], ['c', 0], ['b', 1]])).toEqual([
      [10, ''],
      [11, 'é'],
      [20, 'x'],
      [-1, ''],
      [13, 'z'],
      [-1, ''],
      [-1, ''],
      [-1, ''],
    ]);
  });

  it('forgets the least recently touched request beyond maxTokenRequests', () => {
    const tokens = new RequestTokens({ maxTokenRequests: 3 });
    tokens.add(tokensOf('r1', [0]));
    tokens.add(tokensOf('r2', [0]));
    tokens.add(tokensOf('r3', [0]));
    // r1 gets a new token: now r2 is the least recently touched.
    tokens.add(tokensOf('r1', [1]));
    tokens.add(tokensOf('r4', [0]));
    expect(tokens.requests).toBe(3);
    expect([tokens.has('r1'), tokens.has('r2'), tokens.has('r3'), tokens.has('r4')]).toEqual([true, false, true, true]);
    expect(lookUp(tokens, [['r1', 0], ['r1', 1], ['r2', 0], ['r4', 0]])).toEqual([
      [100, 't0'],
      [101, 't1'],
      [-1, ''],
      [100, 't0'],
    ]);
  });

  it('bounds the token slots over all requests and never stores a position at or above maxTokens', () => {
    const tokens = new RequestTokens({ maxTokens: 64 });
    tokens.add(tokensOf('long', Array.from({ length: 40 }, (_, p) => p)));
    // Capacity doubles from 16: 16 → 32 → 64 slots for 40 positions.
    expect(tokens.slots).toBe(64);
    tokens.add(tokensOf('next', [0]));
    // 64 + 16 > 64: the older request goes.
    expect(tokens.has('long')).toBe(false);
    expect(tokens.slots).toBe(16);
    // A position beyond the budget is not stored and allocates nothing.
    tokens.add(tokensOf('next', [64, 2_000_000_000]));
    expect(tokens.slots).toBe(16);
    expect(lookUp(tokens, [['next', 0], ['next', 64], ['next', 2_000_000_000], ['long', 0]])).toEqual([
      [100, 't0'],
      [-1, ''],
      [-1, ''],
      [-1, ''],
    ]);
  });

  it('forgets one request on delete and every request on clear, giving their slots back', () => {
    const tokens = new RequestTokens();
    tokens.add(tokensOf('a', [0, 1]));
    tokens.add(tokensOf('b', [0]));
    tokens.delete('a');
    expect(lookUp(tokens, [['a', 0], ['b', 0]])).toEqual([
      [-1, ''],
      [100, 't0'],
    ]);
    expect(tokens.slots).toBe(16);
    tokens.clear();
    expect([tokens.requests, tokens.slots]).toEqual([0, 0]);
  });

  it('refuses a zero request bound with SAEGATE_ERR_CONFIG naming the option', () => {
    expect(() => new RequestTokens({ maxTokenRequests: 0 })).toThrow(/maxTokenRequests/);
  });
});
