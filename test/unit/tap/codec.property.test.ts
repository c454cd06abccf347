import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isSaegateError } from '../../../src/common/errors.js';
import { encodeActivationFrame, encodeTokensFrame } from '../../../src/tap/builders.js';
import { decodeMessage, encodeMessage, vectorId } from '../../../src/tap/codec.js';
import { MessageTypeCode, type ActivationsMessage, type TapMessage } from '../../../src/tap/messages.js';

/** Decoding either succeeds or throws SAEGATE_ERR_TAP_FRAME; anything else fails the property. */
function decodesOrFailsTyped(bytes: Uint8Array): boolean {
  try {
    decodeMessage(bytes);
    return true;
  } catch (e) {
    if (isSaegateError(e, 'SAEGATE_ERR_TAP_FRAME')) return true;
    throw new Error(`decodeMessage threw something other than SAEGATE_ERR_TAP_FRAME: ${String(e)}`, { cause: e });
  }
}

const vector = Float32Array.from({ length: 8 }, (_, i) => i - 3.5);

/** One valid frame of every message type, to mutate. */
const seeds: Uint8Array[] = [
  encodeMessage({ type: 'hello', protocolVersions: [1], modelId: 'm', dModel: 8, nLayers: 2, hookPoints: ['blocks.0.hook_resid_pre'], dtypes: ['f32'], canSteer: true }),
  encodeMessage({ type: 'welcome', protocolVersion: 1, sessionId: 's' }),
  encodeMessage({ type: 'subscribe', hooks: ['blocks.0.hook_resid_pre'], dtype: 'f16', includePrompt: true }),
  encodeActivationFrame({ hookIndex: 0, dtype: 'f32', dModel: 3, requestIds: ['a', 'bb', 'a'], positions: Int32Array.from([1, 2, 3]), data: new Float32Array(9).fill(1) }, 2),
  encodeActivationFrame({ hookIndex: 1, dtype: 'f16', dModel: 3, requestIds: ['a', 'bb', 'a'], positions: Int32Array.from([1, 2, 3]), data: new Float32Array(9).fill(-2) }),
  encodeTokensFrame({ requestIds: ['a', 'b'], positions: [4, 5], tokenIds: [10, 11], texts: ['he', 'llo'] }),
  encodeMessage({ type: 'vector', id: vectorId(vector), values: vector }),
  encodeMessage({ type: 'plan', requestId: 'r', planId: 'p', entries: [{ hook: 'h', vectorId: vectorId(vector), scale: 1, fromPosition: 0, untilPosition: null }] }),
  encodeMessage({ type: 'plan_update', requestId: 'r', planId: 'p2', entries: [] }),
  encodeMessage({ type: 'plan_ack', requestId: 'r', planId: 'p', accepted: true }),
  encodeMessage({ type: 'end', requestId: 'r', promptTokens: 1, completionTokens: 2, finishReason: 'stop' }),
  encodeMessage({ type: 'error', code: 'X', message: 'y' }),
];

const typeCodes = Object.values(MessageTypeCode);

describe('decodeMessage on hostile input', () => {
  it('decodes or throws SAEGATE_ERR_TAP_FRAME for arbitrary byte strings', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 512 }), decodesOrFailsTyped), { numRuns: 3000 });
  });

  it('decodes or throws SAEGATE_ERR_TAP_FRAME for arbitrary bodies behind every valid header', () => {
    fc.assert(
      fc.property(fc.constantFrom(...typeCodes), fc.uint8Array({ maxLength: 512 }), (code, body) => {
        const frame = new Uint8Array(4 + body.length);
        frame[0] = code;
        frame.set(body, 4);
        return decodesOrFailsTyped(frame);
      }),
      { numRuns: 3000 },
    );
  });

  it('decodes or throws SAEGATE_ERR_TAP_FRAME for mutated valid frames of every type', () => {
    const mutation = fc.oneof(
      fc.record({ kind: fc.constant('set' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
      fc.record({ kind: fc.constant('truncate' as const), at: fc.nat(), value: fc.constant(0) }),
      fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
      fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), value: fc.constant(0) }),
    );
    fc.assert(
      fc.property(fc.constantFrom(...seeds), fc.array(mutation, { minLength: 1, maxLength: 6 }), (seed, mutations) => {
        let bytes = [...seed];
        for (const m of mutations) {
          const at = bytes.length === 0 ? 0 : m.at % bytes.length;
          if (m.kind === 'set' && bytes.length > 0) bytes[at] = m.value;
          else if (m.kind === 'truncate') bytes = bytes.slice(0, at);
          else if (m.kind === 'insert') bytes.splice(at, 0, m.value);
          else if (m.kind === 'delete') bytes.splice(at, 1);
        }
        return decodesOrFailsTyped(Uint8Array.from(bytes));
      }),
      { numRuns: 5000 },
    );
  });

  it('decodes every seed frame unmodified (so the mutations start from valid input)', () => {
    expect(seeds.map((s) => decodeMessage(s).type)).toEqual([
      'hello',
      'welcome',
      'subscribe',
      'activations',
      'activations',
      'tokens',
      'vector',
      'plan',
      'plan_update',
      'plan_ack',
      'end',
      'error',
    ]);
  });
});

describe('round trips of generated messages', () => {
  const requestId = fc.string({ minLength: 1, maxLength: 40 });

  const activations: fc.Arbitrary<ActivationsMessage> = fc
    .record({
      dModel: fc.integer({ min: 1, max: 16 }),
      rows: fc.integer({ min: 0, max: 20 }),
      requestIds: fc.uniqueArray(requestId, { minLength: 1, maxLength: 5 }),
      hookIndex: fc.integer({ min: 0, max: 0xffff }),
      dropped: fc.nat(),
      f16: fc.boolean(),
      seed: fc.integer(),
    })
    .map(({ dModel, rows, requestIds, hookIndex, dropped, f16, seed }) => {
      const rowRequestIndexes = Uint16Array.from({ length: rows }, (_, i) => Math.abs(seed + i * 7) % requestIds.length);
      const positions = Int32Array.from({ length: rows }, (_, i) => Math.abs(seed * 31 + i) % 0x7fffffff);
      const common = { type: 'activations' as const, hookIndex, dModel, droppedRowsSinceLastFrame: dropped, requestIds, rowRequestIndexes, positions };
      return f16
        ? { ...common, dtype: 'f16' as const, data: Uint16Array.from({ length: rows * dModel }, (_, i) => (seed + i * 2654435761) & 0xffff) }
        : { ...common, dtype: 'f32' as const, data: Float32Array.from({ length: rows * dModel }, (_, i) => Math.fround((seed % 1000) * 0.37 + i)) };
    });

  it('round-trips arbitrary activations frames exactly', () => {
    fc.assert(
      fc.property(activations, (msg) => {
        expect(decodeMessage(encodeMessage(msg))).toEqual(msg);
      }),
      { numRuns: 500 },
    );
  });

  it('round-trips arbitrary plans', () => {
    const entry = fc.record({
      hook: fc.string({ minLength: 1, maxLength: 30 }),
      vectorId: fc.constant(vectorId(vector)),
      scale: fc.double({ noNaN: true, noDefaultInfinity: true }),
      fromPosition: fc.integer({ min: 0, max: 1000 }),
      untilPosition: fc.option(fc.integer({ min: 1001, max: 5000 }), { nil: null }),
    });
    fc.assert(
      fc.property(requestId, requestId, fc.array(entry, { maxLength: 5 }), (rid, planId, entries) => {
        const msg: TapMessage = { type: 'plan', requestId: rid, planId, entries };
        // -0 does not survive JSON; the protocol's scales are plain numbers, so compare by value.
        const decoded = decodeMessage(encodeMessage(msg));
        expect(JSON.stringify(decoded)).toBe(JSON.stringify(msg));
      }),
      { numRuns: 300 },
    );
  });
});
