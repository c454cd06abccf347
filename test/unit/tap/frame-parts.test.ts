/**
 * Frames built from pieces: activations whose rows come as several data parts (the tap bridge's
 * coalesced decode steps) against the same rows as one array, and tokens frames from a reused
 * TokensFrameBuilder (its id map and index buffer must not carry anything from one frame to the
 * next).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { f16BitsToF32, f32ToF16Bits } from '../../../src/common/f16.js';
import { ActivationFrameBuilder, TokensFrameBuilder, encodeActivationFrame, encodeTokensFrame, type TokenEntries } from '../../../src/tap/builders.js';
import { activationDataLength, decodeMessage, encodeMessage, writeActivationsFrame } from '../../../src/tap/codec.js';
import { requestTableByteLength } from '../../../src/tap/layout.js';
import type { ActivationsMessage, StreamDtype, TokensMessage } from '../../../src/tap/messages.js';
import { expectSaegateError } from '../../helpers/errors.js';

const D = 4;
/** Rows per part: a step with one request, an empty step, a step with three, one with two. */
const PART_ROWS = [1, 0, 3, 2];
const ROWS = PART_ROWS.reduce((a, b) => a + b, 0);
const REQUEST_IDS = ['r-a', 'r-b', 'r-a', 'r-c', 'r-b', 'r-a'];
const POSITIONS = [0, 7, 1, 3, 8, 2];

/** Values that are not all exactly representable in f16, with both signs and a zero. */
const F32_VALUES = Float32Array.from({ length: ROWS * D }, (_, i) => (i === 5 ? 0 : (i % 3 === 0 ? -1 : 1) * (0.1 + i * 0.37)));
const F16_BITS = Uint16Array.from(F32_VALUES, (v) => f32ToF16Bits(v));

/** `whole` cut into consecutive parts of PART_ROWS rows (subarrays: no copy). */
function split<T extends Float32Array | Uint16Array>(whole: T): T[] {
  const parts: T[] = [];
  let at = 0;
  for (const rows of PART_ROWS) {
    parts.push(whole.subarray(at * D, (at + rows) * D) as T);
    at += rows;
  }
  return parts;
}

function decodeActivations(bytes: Uint8Array): ActivationsMessage {
  const msg = decodeMessage(bytes);
  if (msg.type !== 'activations') throw new Error(`expected activations, decoded ${msg.type}`);
  return msg;
}

/** The decoded rows as f32 numbers, whatever the frame's dtype. */
function decodedValues(msg: ActivationsMessage): number[] {
  return msg.dtype === 'f32' ? [...msg.data] : Array.from(msg.data, (bits) => f16BitsToF32(bits));
}

/** What a frame of `frameDtype` must hold for the given input, computed element by element. */
function expectedValues(input: 'f32' | 'f16', frameDtype: StreamDtype): number[] {
  if (input === 'f32') return frameDtype === 'f32' ? Array.from(F32_VALUES, (v) => Math.fround(v)) : Array.from(F32_VALUES, (v) => f16BitsToF32(f32ToF16Bits(v)));
  return Array.from(F16_BITS, (bits) => f16BitsToF32(bits));
}

describe.each([
  ['f32', 'f32'],
  ['f32', 'f16'],
  ['f16', 'f32'],
  ['f16', 'f16'],
] as const)('an activations frame from %s data parts into a %s frame', (input, frameDtype) => {
  const whole = input === 'f32' ? F32_VALUES : F16_BITS;
  const parts = input === 'f32' ? split(F32_VALUES) : split(F16_BITS);

  it('is byte for byte the frame built from the concatenated array and decodes to the same rows', () => {
    const rows = { hookIndex: 3, dtype: frameDtype, dModel: D, requestIds: REQUEST_IDS, positions: Int32Array.from(POSITIONS) };
    const fromWhole = new ActivationFrameBuilder().build({ ...rows, data: whole }, 5);
    const fromParts = new ActivationFrameBuilder().build({ ...rows, data: parts }, 5);
    expect(Buffer.from(fromParts).equals(Buffer.from(fromWhole))).toBe(true);

    const decoded = decodeActivations(fromParts);
    expect(decoded).toMatchObject({ hookIndex: 3, dtype: frameDtype, dModel: D, droppedRowsSinceLastFrame: 5, requestIds: ['r-a', 'r-b', 'r-c'] });
    expect([...decoded.rowRequestIndexes]).toEqual([0, 1, 0, 2, 1, 0]);
    expect([...decoded.positions]).toEqual(POSITIONS);
    expect(decodedValues(decoded)).toEqual(expectedValues(input, frameDtype));
    expect(decodedValues(decoded)).toEqual(decodedValues(decodeActivations(fromWhole)));
  });

  it('takes positions as any array-like of numbers and data parts through writeActivationsFrame', () => {
    const table = ['r-a', 'r-b', 'r-c'];
    const layout = {
      hookIndex: 0,
      dtype: frameDtype,
      dModel: D,
      droppedRows: 0,
      requestIds: table,
      requestTableBytes: requestTableByteLength(table),
      rowCount: ROWS,
      rowRequestIndexes: Uint16Array.from([0, 1, 0, 2, 1, 0]),
    };
    const fromParts = writeActivationsFrame({ ...layout, positions: POSITIONS, data: parts });
    const fromWhole = writeActivationsFrame({ ...layout, positions: Int32Array.from(POSITIONS), data: whole });
    expect(fromParts.equals(fromWhole)).toBe(true);
    const decoded = decodeActivations(fromParts);
    expect([...decoded.positions]).toEqual(POSITIONS);
    expect(decodedValues(decoded)).toEqual(expectedValues(input, frameDtype));
  });

  it('refuses parts that hold fewer values than rows × dModel, naming both counts', () => {
    const short = parts.slice(0, -1);
    expect(activationDataLength(short)).toBe((ROWS - 2) * D);
    expectSaegateError(
      () => encodeActivationFrame({ hookIndex: 0, dtype: frameDtype, dModel: D, requestIds: REQUEST_IDS, positions: POSITIONS, data: short }),
      'SAEGATE_ERR_TAP_ARGUMENT',
      `data holds ${(ROWS - 2) * D} values`,
      `${ROWS} × ${D}`,
    );
  });

  it('refuses parts that hold more values than rows × dModel, naming both counts', () => {
    const extra = [...parts, whole.subarray(0, D)] as typeof parts;
    expectSaegateError(
      () => encodeActivationFrame({ hookIndex: 0, dtype: frameDtype, dModel: D, requestIds: REQUEST_IDS, positions: POSITIONS, data: extra }),
      'SAEGATE_ERR_TAP_ARGUMENT',
      `data holds ${(ROWS + 1) * D} values`,
      `${ROWS} × ${D}`,
    );
  });
});

describe('activationDataLength', () => {
  it('counts the values of one array and the sum over parts', () => {
    expect(activationDataLength(new Float32Array(12))).toBe(12);
    expect(activationDataLength(new Uint16Array(3))).toBe(3);
    expect(activationDataLength([new Float32Array(2), new Float32Array(0), new Float32Array(5)])).toBe(7);
    expect(activationDataLength([] as Float32Array[])).toBe(0);
  });

  it('any split of the rows into parts gives the frame of the whole array (f32 and f16 frames)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 4 }), { minLength: 1, maxLength: 6 }),
        fc.constantFrom<StreamDtype>('f32', 'f16'),
        fc.boolean(),
        (partRows, dtype, halfInput) => {
          const rows = partRows.reduce((a, b) => a + b, 0);
          const values = Float32Array.from({ length: rows * 3 }, (_, i) => Math.sin(i + 1) * 100);
          const whole = halfInput ? Uint16Array.from(values, (v) => f32ToF16Bits(v)) : values;
          const parts: (Float32Array | Uint16Array)[] = [];
          let at = 0;
          for (const n of partRows) {
            parts.push(whole.subarray(at * 3, (at + n) * 3));
            at += n;
          }
          const layout = { hookIndex: 1, dtype, dModel: 3, requestIds: Array.from({ length: rows }, (_, i) => `q${i % 2}`), positions: Array.from({ length: rows }, (_, i) => i) };
          const fromWhole = encodeActivationFrame({ ...layout, data: whole });
          const fromParts = encodeActivationFrame({ ...layout, data: halfInput ? (parts as Uint16Array[]) : (parts as Float32Array[]) });
          expect(Buffer.from(fromParts).equals(Buffer.from(fromWhole))).toBe(true);
        },
      ),
    );
  });
});

function decodeTokens(bytes: Uint8Array): TokensMessage {
  const msg = decodeMessage(bytes);
  if (msg.type !== 'tokens') throw new Error(`expected tokens, decoded ${msg.type}`);
  return msg;
}

/** Entries as (request id, position, token id, text) tuples, the way a receiver reads them. */
function entriesOf(msg: TokensMessage): [string, number, number, string][] {
  return Array.from(msg.rowRequestIndexes, (index, i) => [msg.requestIds[index], msg.positions[i], msg.tokenIds[i], msg.texts[i]]);
}

describe('TokensFrameBuilder', () => {
  it('builds consecutive frames that each decode to their own entries, with no ids carried over', () => {
    const builder = new TokensFrameBuilder();
    const first = builder.build({ requestIds: ['a', 'b', 'a', 'c'], positions: [0, 0, 1, 0], tokenIds: [10, 20, 11, 30], texts: ['x', 'y', 'z', 'w'] });
    // Fewer distinct ids, one of them new and one that had another index in the first frame.
    const second = builder.build({ requestIds: ['c', 'd', 'c'], positions: [1, 5, 2], tokenIds: [31, 40, 32], texts: ['p', 'q', 'r'] });
    const third = builder.build({ requestIds: ['e'], positions: [9], tokenIds: [50], texts: ['s'] });

    const a = decodeTokens(first);
    expect(a.requestIds).toEqual(['a', 'b', 'c']);
    expect(entriesOf(a)).toEqual([
      ['a', 0, 10, 'x'],
      ['b', 0, 20, 'y'],
      ['a', 1, 11, 'z'],
      ['c', 0, 30, 'w'],
    ]);
    const b = decodeTokens(second);
    expect(b.requestIds).toEqual(['c', 'd']);
    expect([...b.rowRequestIndexes]).toEqual([0, 1, 0]);
    expect(entriesOf(b)).toEqual([
      ['c', 1, 31, 'p'],
      ['d', 5, 40, 'q'],
      ['c', 2, 32, 'r'],
    ]);
    const c = decodeTokens(third);
    expect(c.requestIds).toEqual(['e']);
    expect(entriesOf(c)).toEqual([['e', 9, 50, 's']]);
  });

  it('writes the same bytes as encodeMessage for the same entries', () => {
    const entries: TokenEntries = { requestIds: ['r2', 'r1', 'r2'], positions: Int32Array.from([3, 0, 4]), tokenIds: Int32Array.from([7, 8, 9]), texts: ['a', '', 'bc'] };
    const viaMessage = encodeMessage({
      type: 'tokens',
      requestIds: ['r2', 'r1'],
      rowRequestIndexes: Uint16Array.from([0, 1, 0]),
      positions: Int32Array.from([3, 0, 4]),
      tokenIds: Int32Array.from([7, 8, 9]),
      texts: ['a', '', 'bc'],
    });
    expect(Buffer.from(new TokensFrameBuilder().build(entries)).equals(Buffer.from(viaMessage))).toBe(true);
    expect(Buffer.from(encodeTokensFrame(entries)).equals(Buffer.from(viaMessage))).toBe(true);
  });

  it('round-trips empty and multi-byte texts', () => {
    const texts = ['', 'é', '日本', '🙂 ok', '', 'a'];
    const msg = decodeTokens(
      new TokensFrameBuilder().build({ requestIds: ['x', 'x', 'y', 'x', 'y', 'y'], positions: [0, 1, 0, 2, 1, 2], tokenIds: [1, 2, 3, 4, 5, 6], texts }),
    );
    expect(msg.texts).toEqual(texts);
    expect(entriesOf(msg).map((e) => e[0])).toEqual(['x', 'x', 'y', 'x', 'y', 'y']);
  });

  it('grows its index buffer past its first size and keeps every entry', () => {
    const builder = new TokensFrameBuilder();
    const count = 3000;
    const requestIds = Array.from({ length: count }, (_, i) => `req-${i % 700}`);
    const msg = decodeTokens(builder.build({ requestIds, positions: Array.from({ length: count }, (_, i) => i), tokenIds: Array.from({ length: count }, (_, i) => count - i), texts: new Array<string>(count).fill('t') }));
    expect(msg.requestIds).toHaveLength(700);
    expect(Array.from(msg.rowRequestIndexes, (index) => msg.requestIds[index])).toEqual(requestIds);
    expect([...msg.tokenIds]).toEqual(Array.from({ length: count }, (_, i) => count - i));
  });

  it('takes 65535 distinct request ids in one frame and refuses 65536, then builds the next frame normally', () => {
    const builder = new TokensFrameBuilder();
    const entries = (n: number): TokenEntries => ({
      requestIds: Array.from({ length: n }, (_, i) => `r${i}`),
      positions: new Int32Array(n),
      tokenIds: new Int32Array(n),
      texts: new Array<string>(n).fill(''),
    });
    const fits = decodeTokens(builder.build(entries(65_535)));
    expect(fits.requestIds).toHaveLength(65_535);
    expect(fits.requestIds[65_534]).toBe('r65534');
    expect(fits.rowRequestIndexes[65_534]).toBe(65_534);

    expectSaegateError(() => builder.build(entries(65_536)), 'SAEGATE_ERR_TAP_ARGUMENT', 'distinct request ids in one frame', '65535');

    const after = decodeTokens(builder.build({ requestIds: ['r9', 'z'], positions: [1, 2], tokenIds: [3, 4], texts: ['m', 'n'] }));
    expect(after.requestIds).toEqual(['r9', 'z']);
    expect(entriesOf(after)).toEqual([
      ['r9', 1, 3, 'm'],
      ['z', 2, 4, 'n'],
    ]);
  });

  it.each([
    ['positions', { positions: [0] }],
    ['tokenIds', { tokenIds: [1, 2, 3] }],
    ['texts', { texts: ['a'] }],
  ] as const)('refuses entries whose %s column has another length than requestIds', (_column, override) => {
    const entries: TokenEntries = { requestIds: ['a', 'b'], positions: [0, 1], tokenIds: [1, 2], texts: ['a', 'b'], ...override };
    expectSaegateError(() => new TokensFrameBuilder().build(entries), 'SAEGATE_ERR_TAP_ARGUMENT', 'requestIds, positions, tokenIds and texts must have the same length');
    expectSaegateError(() => encodeTokensFrame(entries), 'SAEGATE_ERR_TAP_ARGUMENT', 'same length');
  });

  it('refuses an empty request id and a negative position', () => {
    expectSaegateError(() => new TokensFrameBuilder().build({ requestIds: [''], positions: [0], tokenIds: [1], texts: ['a'] }), 'SAEGATE_ERR_TAP_ARGUMENT');
    expectSaegateError(() => new TokensFrameBuilder().build({ requestIds: ['a'], positions: [-1], tokenIds: [1], texts: ['a'] }), 'SAEGATE_ERR_TAP_ARGUMENT', 'token 0 has a negative position');
  });
});
