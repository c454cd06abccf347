import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { isSaegateError } from '../../../src/common/errors.js';
import { ActivationFrameBuilder, encodeActivationFrame, encodeTokensFrame } from '../../../src/tap/builders.js';
import { decodeMessage, encodeMessage, isVectorIdValid, vectorId } from '../../../src/tap/codec.js';
import { f16BitsToF32, f32ToF16Bits } from '../../../src/common/f16.js';
import type { ActivationsMessage, StreamDtype, TapMessage } from '../../../src/tap/messages.js';

const hex = (bytes: Uint8Array): string => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
const fromHex = (text: string): Uint8Array => new Uint8Array(Buffer.from(text.replace(/\s+/g, ''), 'hex'));

/** The decode error code, or 'decoded' when it did not throw. */
function decodeOutcome(bytes: Uint8Array): string {
  try {
    decodeMessage(bytes);
    return 'decoded';
  } catch (e) {
    return isSaegateError(e) ? e.code : `non-saegate ${String(e)}`;
  }
}

const vectorValues = Float32Array.from([0.25, -1.5, 3, 0]);
const vid = vectorId(vectorValues);

const controlMessages: TapMessage[] = [
  {
    type: 'hello',
    protocolVersions: [1],
    modelId: 'stories260K',
    dModel: 64,
    nLayers: 5,
    hookPoints: ['blocks.0.hook_resid_pre', 'blocks.0.hook_resid_post'],
    dtypes: ['f32', 'f16', 'bf16'],
    canSteer: true,
    serverId: 'pod-7',
  },
  { type: 'welcome', protocolVersion: 1, sessionId: 'c0ffee' },
  { type: 'subscribe', hooks: ['blocks.0.hook_resid_post'], dtype: 'f16', includePrompt: true },
  { type: 'subscribe', hooks: [], dtype: 'f32', includePrompt: false },
  { type: 'subscribe', hooks: ['blocks.0.hook_resid_post'], dtype: 'f16', includePrompt: true, maxDelayMs: 50 },
  {
    type: 'plan',
    requestId: 'req-1',
    planId: 'plan-1',
    entries: [{ hook: 'blocks.0.hook_resid_post', vectorId: vid, scale: -4.5, fromPosition: 3, untilPosition: null }],
  },
  {
    type: 'plan_update',
    requestId: 'req-1',
    planId: 'plan-1.1',
    entries: [{ hook: 'blocks.0.hook_resid_post', vectorId: vid, scale: 2, fromPosition: 0, untilPosition: 17 }],
  },
  { type: 'plan_update', requestId: 'req-1', planId: 'plan-1.2', entries: [], maxDelayMs: 50 },
  { type: 'plan_ack', requestId: 'req-1', planId: 'plan-1', accepted: false, reason: 'unknown vector id' },
  { type: 'plan_ack', requestId: 'req-1', planId: 'plan-1', accepted: true },
  { type: 'end', requestId: 'req-1', promptTokens: 12, completionTokens: 40, finishReason: 'length' },
  { type: 'error', code: 'SAEGATE_ERR_TAP_FRAME', message: 'malformed tap frame: ünïcode ✓' },
];

describe('control messages', () => {
  it.each(controlMessages.map((m) => [m.type, m] as const))('round-trips %s through JSON', (_type, msg) => {
    const frame = encodeMessage(msg);
    expect(frame[1]).toBe(0);
    expect(decodeMessage(frame)).toEqual(msg);
  });

  it('writes the header then the UTF-8 JSON body', () => {
    const frame = encodeMessage({ type: 'subscribe', hooks: ['blocks.0.hook_resid_pre'], dtype: 'f16', includePrompt: false });
    expect([...frame.subarray(0, 4)]).toEqual([0x03, 0, 0, 0]);
    expect(JSON.parse(Buffer.from(frame.subarray(4)).toString('utf8'))).toEqual({
      hooks: ['blocks.0.hook_resid_pre'],
      dtype: 'f16',
      includePrompt: false,
    });
  });

  it('ignores unknown fields in a body so later minor additions stay readable', () => {
    const frame = new Uint8Array(Buffer.concat([Buffer.from([0x02, 0, 0, 0]), Buffer.from('{"protocolVersion":1,"sessionId":"s","future":true}')]));
    expect(decodeMessage(frame)).toEqual({ type: 'welcome', protocolVersion: 1, sessionId: 's' });
  });

  it('refuses to encode a body that fails its schema', () => {
    expect(() => encodeMessage({ type: 'end', requestId: '', promptTokens: 1, completionTokens: 1, finishReason: 'stop' })).toThrow(
      expect.objectContaining({ code: 'SAEGATE_ERR_TAP_ARGUMENT' }),
    );
    expect(() =>
      encodeMessage({
        type: 'plan',
        requestId: 'r',
        planId: 'p',
        entries: [{ hook: 'h', vectorId: vid, scale: 1, fromPosition: 5, untilPosition: 5 }],
      }),
    ).toThrow(/untilPosition/);
  });
});

describe('vector', () => {
  it('ids a vector by the sha256 of its f32 little-endian bytes', () => {
    const bytes = fromHex('0000803e 0000c0bf 00004040 00000000');
    expect(vid).toBe(createHash('sha256').update(bytes).digest('hex'));
    expect(vid).toMatch(/^[0-9a-f]{64}$/);
  });

  it('round-trips a vector and keeps values 4-byte aligned in the frame', () => {
    const frame = encodeMessage({ type: 'vector', id: vid, values: vectorValues });
    // header 4 + u8 64 + id 64 + 3 padding + u32 dModel = 76, then 4 values.
    expect(frame.byteLength).toBe(76 + 16);
    const msg = decodeMessage(frame);
    expect(msg.type).toBe('vector');
    if (msg.type !== 'vector') return;
    expect(msg.id).toBe(vid);
    expect([...msg.values]).toEqual([0.25, -1.5, 3, 0]);
    expect(isVectorIdValid(msg)).toBe(true);
  });

  it('decodes a vector whose id does not match its content, and isVectorIdValid flags it', () => {
    const forged = encodeMessage({ type: 'vector', id: vid, values: Float32Array.from([1, 1, 1, 1]) });
    const msg = decodeMessage(forged);
    expect(msg.type === 'vector' && isVectorIdValid(msg)).toBe(false);
  });
});

describe('tokens', () => {
  it('round-trips entries of several requests, with multi-byte and empty text pieces', () => {
    const frame = encodeTokensFrame({
      requestIds: ['a', 'b', 'a'],
      positions: [7, 3, 8],
      tokenIds: [100, 2, 31999],
      texts: [' héllo', '', '✓'],
    });
    const msg = decodeMessage(frame);
    expect(msg).toEqual({
      type: 'tokens',
      requestIds: ['a', 'b'],
      rowRequestIndexes: Uint16Array.from([0, 1, 0]),
      positions: Int32Array.from([7, 3, 8]),
      tokenIds: Int32Array.from([100, 2, 31999]),
      texts: [' héllo', '', '✓'],
    });
  });
});

function activationMessage(dtype: StreamDtype): ActivationsMessage {
  const values = [1, -2, 0.5, 0.25, 3, 0, 65504, -0.125, 7];
  const common = {
    type: 'activations' as const,
    hookIndex: 2,
    dModel: 3,
    droppedRowsSinceLastFrame: 11,
    requestIds: ['req-a', 'req-ü'],
    rowRequestIndexes: Uint16Array.from([1, 0, 1]),
    positions: Int32Array.from([0, 41, 1]),
  };
  return dtype === 'f32'
    ? { ...common, dtype, data: Float32Array.from(values) }
    : { ...common, dtype, data: Uint16Array.from(values, (v) => f32ToF16Bits(v)) };
}

describe.each(['f32', 'f16'] as const)('activations frames in %s', (dtype) => {
  it('round-trip request table, rows, positions, dropped count and data', () => {
    const msg = activationMessage(dtype);
    expect(decodeMessage(encodeMessage(msg))).toEqual(msg);
  });

  it('decode the data block as a view of the frame, not a copy, when it is aligned', () => {
    const frame = encodeMessage(activationMessage(dtype));
    const msg = decodeMessage(frame);
    if (msg.type !== 'activations') throw new Error('expected activations');
    expect(msg.data.buffer).toBe(frame.buffer);
    expect(msg.data).toBeInstanceOf(dtype === 'f32' ? Float32Array : Uint16Array);
  });

  it('decode a frame sitting at an odd memory offset by copying the data block once', () => {
    const frame = encodeMessage(activationMessage(dtype));
    const shifted = new Uint8Array(frame.byteLength + 1);
    shifted.set(frame, 1);
    const msg = decodeMessage(shifted.subarray(1));
    if (msg.type !== 'activations') throw new Error('expected activations');
    expect(msg.data.buffer).not.toBe(shifted.buffer);
    expect(msg).toEqual(activationMessage(dtype));
  });

  it('build from per-row request ids and f32 data, converting to the frame dtype', () => {
    const data = Float32Array.from([1, 2, 3, 4, 5, 6.1e-5, 1 + 2 ** -11, 0.1]);
    const frame = encodeActivationFrame(
      { hookIndex: 0, dtype, dModel: 2, requestIds: ['x', 'y', 'x', 'z'], positions: Int32Array.from([5, 9, 6, 0]), data },
      4,
    );
    const msg = decodeMessage(frame);
    if (msg.type !== 'activations') throw new Error('expected activations');
    expect(msg.requestIds).toEqual(['x', 'y', 'z']);
    expect([...msg.rowRequestIndexes]).toEqual([0, 1, 0, 2]);
    expect([...msg.positions]).toEqual([5, 9, 6, 0]);
    expect(msg.droppedRowsSinceLastFrame).toBe(4);
    const decoded = msg.dtype === 'f32' ? [...msg.data] : [...msg.data].map((h) => f16BitsToF32(h));
    const expected = dtype === 'f32' ? [...data] : [...data].map((v) => f16BitsToF32(f32ToF16Bits(v)));
    expect(decoded).toEqual(expected);
  });

  it('build from f16 bit patterns, widening them when the frame is f32', () => {
    const halves = Uint16Array.from([0x3c00, 0xc000, 0x7bff, 0x0001]);
    const msg = decodeMessage(encodeActivationFrame({ hookIndex: 1, dtype, dModel: 4, requestIds: ['r'], positions: Int32Array.from([3]), data: halves }));
    if (msg.type !== 'activations') throw new Error('expected activations');
    const decoded = msg.dtype === 'f32' ? [...msg.data] : [...msg.data].map((h) => f16BitsToF32(h));
    expect(decoded).toEqual([1, -2, 65504, 2 ** -24]);
  });

  it('carry a frame with no rows, which still reports dropped rows', () => {
    const msg = decodeMessage(encodeActivationFrame({ hookIndex: 0, dtype, dModel: 8, requestIds: [], positions: new Int32Array(0), data: new Float32Array(0) }, 99));
    expect(msg).toMatchObject({ type: 'activations', dtype, droppedRowsSinceLastFrame: 99, requestIds: [] });
    if (msg.type === 'activations') expect(msg.data.length).toBe(0);
  });
});

describe('ActivationFrameBuilder', () => {
  it('measures exactly the byte length it then builds', () => {
    const builder = new ActivationFrameBuilder();
    for (const dtype of ['f32', 'f16'] as const) {
      for (const rows of [0, 1, 2, 3, 5, 300]) {
        const input = {
          hookIndex: 7,
          dtype,
          dModel: 5,
          requestIds: Array.from({ length: rows }, (_, i) => `request-${i % 7}`),
          positions: Int32Array.from({ length: rows }, (_, i) => i),
          data: new Float32Array(rows * 5).fill(0.5),
        };
        const measured = builder.measure(input);
        expect(builder.build(input).byteLength).toBe(measured);
      }
    }
  });

  it('reuses its buffers across frames without leaking the previous frame’s request table', () => {
    const builder = new ActivationFrameBuilder();
    builder.build({ hookIndex: 0, dtype: 'f32', dModel: 1, requestIds: ['a', 'b', 'c'], positions: Int32Array.from([1, 2, 3]), data: Float32Array.from([1, 2, 3]) });
    const msg = decodeMessage(builder.build({ hookIndex: 0, dtype: 'f32', dModel: 1, requestIds: ['c'], positions: Int32Array.from([4]), data: Float32Array.from([9]) }));
    expect(msg).toMatchObject({ requestIds: ['c'], rowRequestIndexes: Uint16Array.from([0]), positions: Int32Array.from([4]) });
  });

  it('encodes 2048 rows of d_model 4096 in f16 into one frame of the exact expected size', () => {
    const rows = 2048;
    const dModel = 4096;
    const requestIds = Array.from({ length: rows }, (_, i) => `req-${i % 64}`);
    const data = new Float32Array(rows * dModel);
    for (let i = 0; i < data.length; i++) data[i] = (i % 97) - 48;
    const frame = encodeActivationFrame({ hookIndex: 0, dtype: 'f16', dModel, requestIds, positions: Int32Array.from({ length: rows }, (_, i) => i), data });
    const msg = decodeMessage(frame);
    if (msg.type !== 'activations') throw new Error('expected activations');
    expect(msg.data.length).toBe(rows * dModel);
    expect(f16BitsToF32(msg.data[rows * dModel - 1])).toBe(data[rows * dModel - 1]);
    expect(frame.byteLength % 2).toBe(0);
  });

  it.each([
    ['a hook index beyond u16', { hookIndex: 70000 }],
    ['an empty request id', { requestIds: [''] }],
    ['a request id over 255 bytes', { requestIds: ['x'.repeat(256)] }],
    ['data not rows × dModel', { data: new Float32Array(3) }],
    ['a negative position', { positions: Int32Array.from([-1]) }],
    ['positions not one per row', { positions: Int32Array.from([1, 2]) }],
  ])('refuses %s', (_name, override) => {
    const input = { hookIndex: 0, dtype: 'f32' as const, dModel: 2, requestIds: ['r'], positions: Int32Array.from([0]), data: new Float32Array(2), ...override };
    expect(() => encodeActivationFrame(input)).toThrow(expect.objectContaining({ code: 'SAEGATE_ERR_TAP_ARGUMENT' }));
  });
});

describe('the worked example in docs/tap-protocol.md', () => {
  const exampleHex = `
    04 00 00 00  03 00  01  00  02 00 00 00  03 00 00 00  07 00 00 00
    02 00  02 72 31  02 72 32
    00 00 04 00 00 00  00 00 05 00 00 00  01 00 00 00 00 00
    00 00
    00 00 80 3f  00 00 00 c0  00 00 00 3f  00 00 80 3e  00 00 40 40  00 00 00 00`;

  it('is what the builder writes for it, byte for byte', () => {
    const frame = encodeActivationFrame(
      { hookIndex: 3, dtype: 'f32', dModel: 2, requestIds: ['r1', 'r1', 'r2'], positions: Int32Array.from([4, 5, 0]), data: Float32Array.from([1, -2, 0.5, 0.25, 3, 0]) },
      7,
    );
    expect(hex(frame)).toBe(hex(fromHex(exampleHex)));
  });

  it('decodes to the rows the document describes', () => {
    expect(decodeMessage(fromHex(exampleHex))).toEqual({
      type: 'activations',
      hookIndex: 3,
      dtype: 'f32',
      dModel: 2,
      droppedRowsSinceLastFrame: 7,
      requestIds: ['r1', 'r2'],
      rowRequestIndexes: Uint16Array.from([0, 0, 1]),
      positions: Int32Array.from([4, 5, 0]),
      data: Float32Array.from([1, -2, 0.5, 0.25, 3, 0]),
    });
  });
});

describe('malformed frames', () => {
  const valid = encodeMessage(activationMessage('f32'));
  const patched = (at: number, ...bytes: number[]): Uint8Array => {
    const copy = new Uint8Array(valid);
    copy.set(bytes, at);
    return copy;
  };
  const control = (type: number, body: string | Uint8Array): Uint8Array =>
    new Uint8Array(Buffer.concat([Buffer.from([type, 0, 0, 0]), typeof body === 'string' ? Buffer.from(body, 'utf8') : Buffer.from(body)]));

  it.each([
    ['an empty buffer', new Uint8Array(0)],
    ['a buffer shorter than the header', Uint8Array.from([4, 0])],
    ['an unknown message type', Uint8Array.from([0x7f, 0, 0, 0])],
    ['a message type of zero', new Uint8Array(16)],
    ['non-zero flags', patched(1, 1)],
    ['non-zero reserved header bytes', patched(2, 0, 1)],
    ['an unknown dtype code', patched(6, 3)],
    ['a row count larger than the frame can hold', patched(12, 0xff, 0xff, 0xff, 0x7f)],
    ['a row count smaller than the rows present', patched(12, 2)],
    ['a dModel that does not match the data block', patched(8, 4)],
    ['a dModel of zero', patched(8, 0, 0, 0, 0)],
    ['a request index outside the request table', patched(20 + 2 + 6 + 1 + 7, 9)],
    ['a request id that is not UTF-8', patched(23, 0xff)],
    ['a truncated data block', valid.subarray(0, valid.byteLength - 1)],
    ['trailing bytes after the data block', new Uint8Array(Buffer.concat([valid, Buffer.from([0, 0, 0, 0])]))],
    ['JSON that does not parse', control(0x02, '{"protocolVersion":1,')],
    ['a JSON body that fails the schema', control(0x02, '{"protocolVersion":"1","sessionId":"s"}')],
    ['a JSON body that is not UTF-8', control(0x02, Uint8Array.from([0x7b, 0xc3, 0x28, 0x7d]))],
    ['a JSON body that is null', control(0x0b, 'null')],
    ['a subscribe with a negative maxDelayMs', control(0x03, '{"hooks":[],"dtype":"f32","includePrompt":false,"maxDelayMs":-1}')],
    ['a subscribe with a fractional maxDelayMs', control(0x03, '{"hooks":[],"dtype":"f32","includePrompt":false,"maxDelayMs":2.5}')],
    ['a plan_update with a maxDelayMs over 60000', control(0x08, '{"requestId":"r","planId":"p","entries":[],"maxDelayMs":60001}')],
    ['a plan_update with a string maxDelayMs', control(0x08, '{"requestId":"r","planId":"p","entries":[],"maxDelayMs":"50"}')],
    ['an empty JSON body', control(0x01, '')],
    ['a vector id of the wrong length', control(0x06, Uint8Array.from([3, 0x61, 0x62, 0x63]))],
    ['a tokens frame with trailing bytes', new Uint8Array(Buffer.concat([encodeTokensFrame({ requestIds: ['a'], positions: [0], tokenIds: [1], texts: ['x'] }), Buffer.from([1])]))],
  ])('rejects %s with SAEGATE_ERR_TAP_FRAME', (_name, bytes) => {
    expect(decodeOutcome(bytes)).toBe('SAEGATE_ERR_TAP_FRAME');
  });

  it('names what is wrong in the error message', () => {
    expect(() => decodeMessage(patched(8, 4))).toThrow(/data block has 36 bytes, rows × dModel = 3 × 4 f32 needs 48/);
    expect(() => decodeMessage(Uint8Array.from([0x7f, 0, 0, 0]))).toThrow(/unknown message type 0x7f/);
  });
});
