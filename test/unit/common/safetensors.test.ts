import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SaegateError } from '../../../src/common/errors.js';
import {
  bfloat16ToFloat32,
  float16ToFloat32,
  float32ToBfloat16,
  float32ToFloat16,
  SafetensorsFile,
  writeSafetensors,
} from '../../../src/common/safetensors.js';
import { expectSaegateError } from '../../helpers/errors.js';
import { makeTempDir, removeTempDir } from '../../helpers/fixtures.js';

/** Builds safetensors bytes from a header object and a data section, without any validation. */
function rawFile(header: unknown, data: Uint8Array = new Uint8Array(0), headerLength?: bigint): Uint8Array {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(headerLength ?? BigInt(json.length));
  return Buffer.concat([length, json, data]);
}

describe('safetensors writer and reader', () => {
  let dir: string;
  beforeAll(() => {
    dir = makeTempDir();
  });
  afterAll(() => removeTempDir(dir));

  it('round-trips F32, F16 and BF16 tensors with shapes and metadata', () => {
    const file = path.join(dir, 'round.safetensors');
    const values = Float32Array.from({ length: 24 }, (_, i) => (i - 12) * 0.375);
    writeSafetensors(
      file,
      {
        a: { dtype: 'F32', shape: [2, 3, 4], data: values },
        b: { dtype: 'F16', shape: [24], data: values },
        c: { dtype: 'BF16', shape: [4, 6], data: values },
        empty: { dtype: 'F32', shape: [0, 5], data: new Float32Array(0) },
      },
      { format: 'pt', note: 'hello' },
    );
    const st = SafetensorsFile.open(file);
    try {
      expect(st.metadata).toEqual({ format: 'pt', note: 'hello' });
      expect([...st.tensors.keys()]).toEqual(['a', 'b', 'c', 'empty']);
      expect(st.info('a')).toMatchObject({ dtype: 'F32', shape: [2, 3, 4], byteLength: 96 });
      // Every tensor starts 8-byte aligned because the header is padded.
      for (const info of st.tensors.values()) expect(info.byteOffset % 8).toBe(0);
      // Multiples of 0.125 in this range are exact in all three dtypes.
      expect(st.getFloat32('a')).toEqual(values);
      expect(st.getFloat32('b')).toEqual(values);
      expect(st.getFloat32('c')).toEqual(values);
      expect(st.getFloat32('empty')).toEqual(new Float32Array(0));
      const raw = st.getTensor('b');
      expect(raw).toMatchObject({ dtype: 'F16', shape: [24] });
      expect(raw.data.length).toBe(48);
      expect(new Uint16Array(raw.data.buffer)[0]).toBe(float32ToFloat16(values)[0]);
    } finally {
      st.close();
    }
  });

  it('writes F16/BF16 given as raw bit patterns unchanged', () => {
    const file = path.join(dir, 'bits.safetensors');
    const bits = Uint16Array.from([0x0001, 0x3c00, 0x7c00, 0xfc00, 0x8000, 0x7bff]);
    writeSafetensors(file, { h: { dtype: 'F16', shape: [6], data: bits }, b: { dtype: 'BF16', shape: [6], data: bits } });
    const st = SafetensorsFile.open(file);
    expect(new Uint16Array(st.getTensor('h').data.buffer)).toEqual(bits);
    expect(st.getFloat32('h')).toEqual(Float32Array.from([2 ** -24, 1, Infinity, -Infinity, -0, 65504]));
    expect(st.getFloat32('b')).toEqual(bfloat16ToFloat32(bits));
    st.close();
  });

  it('reads lazily: opening reads only the header, tensors are read on request and fail after close', () => {
    const file = path.join(dir, 'lazy.safetensors');
    writeSafetensors(file, { x: { dtype: 'F32', shape: [3], data: Float32Array.of(1, 2, 3) } });
    const st = SafetensorsFile.open(file);
    // Overwrite the data on disk after open: the reader must see the new bytes, proving it reads on demand.
    const fd = fs.openSync(file, 'r+');
    fs.writeSync(fd, Buffer.from(Float32Array.of(7).buffer), 0, 4, st.info('x').byteOffset);
    fs.closeSync(fd);
    expect(st.getFloat32('x')).toEqual(Float32Array.of(7, 2, 3));
    st.close();
    expectSaegateError(() => st.getFloat32('x'), 'SAEGATE_ERR_SAFETENSORS', file, 'after close');
  });

  it('names the file and tensor for a missing tensor or a non-float dtype', () => {
    const bytes = rawFile({ ints: { dtype: 'I32', shape: [2], data_offsets: [0, 8] } }, new Uint8Array(8));
    const st = SafetensorsFile.fromBytes(bytes, 'ints.safetensors');
    expect(new Int32Array(st.getTensor('ints').data.buffer)).toEqual(Int32Array.of(0, 0));
    expectSaegateError(() => st.getFloat32('ints'), 'SAEGATE_ERR_SAFETENSORS', 'ints.safetensors', "'ints'", 'I32');
    expectSaegateError(() => st.getTensor('nope'), 'SAEGATE_ERR_SAFETENSORS', 'ints.safetensors', "'nope'");
  });

  it('rejects F32 data that is not a Float32Array and shapes that do not match the value count', () => {
    expectSaegateError(() => writeSafetensors(path.join(dir, 'x.safetensors'), { t: { dtype: 'F32', shape: [2], data: new Uint16Array(2) } }), 'SAEGATE_ERR_SAFETENSORS', "'t'", 'Float32Array');
    expectSaegateError(() => writeSafetensors(path.join(dir, 'y.safetensors'), { t: { dtype: 'F32', shape: [3], data: new Float32Array(2) } }), 'SAEGATE_ERR_SAFETENSORS', "'t'", '[3]');
  });
});

describe('f16 and bf16 conversion', () => {
  it('decodes f16 zero, subnormals, normals, the largest half, infinities and NaN exactly', () => {
    const bits = Uint16Array.from([0x0000, 0x8000, 0x0001, 0x03ff, 0x0400, 0x3c00, 0xc000, 0x3555, 0x7bff, 0x7c00, 0xfc00, 0x7e00, 0x7c01]);
    const values = float16ToFloat32(bits);
    expect(Object.is(values[1], -0)).toBe(true);
    expect([...values.slice(2, 11)]).toEqual([2 ** -24, 1023 * 2 ** -24, 2 ** -14, 1, -2, (1 + 0x155 / 1024) * 2 ** -2, 65504, Infinity, -Infinity]);
    expect(Number.isNaN(values[11]) && Number.isNaN(values[12])).toBe(true);
  });

  it('round-trips every non-NaN f16 bit pattern through f32', () => {
    const all = Uint16Array.from({ length: 65536 }, (_, i) => i).filter((h) => (h & 0x7c00) !== 0x7c00 || (h & 0x3ff) === 0);
    expect(float32ToFloat16(float16ToFloat32(all))).toEqual(all);
  });

  it('rounds f32 to f16 to nearest with ties to even, overflowing to infinity', () => {
    const inputs = Float32Array.from([1 + 2 ** -11, 1 + 3 * 2 ** -11, 65519, 65520, 1e6, -1e6, 2 ** -25, 3 * 2 ** -25, 2 ** -26, NaN]);
    expect([...float32ToFloat16(inputs)]).toEqual([0x3c00, 0x3c02, 0x7bff, 0x7c00, 0x7c00, 0xfc00, 0x0000, 0x0002, 0x0000, 0x7e00]);
  });

  it('rounds f32 to bf16 to nearest with ties to even and keeps NaN a NaN', () => {
    const inputs = Float32Array.from([1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, -2.5, Infinity, NaN]);
    const bits = float32ToBfloat16(inputs);
    expect([...bits.slice(0, 5)]).toEqual([0x3f80, 0x3f80, 0x3f82, 0xc020, 0x7f80]);
    expect(Number.isNaN(bfloat16ToFloat32(bits)[5])).toBe(true);
  });
});

describe('safetensors validation', () => {
  const f32 = (n: number) => new Uint8Array(n * 4);

  it.each([
    ['a file shorter than the length prefix', () => new Uint8Array(5), ['fewer than the 8-byte header length']],
    ['a header length beyond the file', () => rawFile({}, new Uint8Array(0), 1000n), ['header length 1000', 'runs past']],
    ['a 2^63 header length', () => rawFile({}, new Uint8Array(0), 1n << 63n), ['runs past']],
    ['a header that is not JSON', () => Buffer.concat([Buffer.from([5, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('{nope')]), ['not valid JSON']],
    ['a header that is a JSON array', () => rawFile([1, 2]), ['not a JSON object']],
    ['an unknown dtype', () => rawFile({ w: { dtype: 'F12', shape: [1], data_offsets: [0, 4] } }, f32(1)), ["tensor 'w'", 'unknown dtype "F12"']],
    ['a negative dimension', () => rawFile({ w: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, f32(1)), ["tensor 'w'", 'shape']],
    ['offsets past the data section', () => rawFile({ w: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, f32(2)), ["tensor 'w'", '[0, 16]', '8 bytes']],
    ['offsets that end before they begin', () => rawFile({ w: { dtype: 'F32', shape: [0], data_offsets: [8, 4] } }, f32(2)), ["tensor 'w'", 'end before']],
    ['a shape × dtype size that differs from the offsets', () => rawFile({ w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, f32(2)), ["tensor 'w'", 'needs 12 bytes', 'hold 8']],
    [
      'overlapping tensors',
      () => rawFile({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, f32(3)),
      ["tensor 'b'", 'overlap', "'a'"],
    ],
    ['a hole between tensors', () => rawFile({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, f32(2)), ["tensor 'a'", 'hole']],
    ['trailing bytes after the last tensor', () => rawFile({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, f32(2)), ['8 bytes', 'cover only 4']],
    ['non-string metadata', () => rawFile({ __metadata__: { n: 1 } }), ['__metadata__.n']],
    ['a header that is not UTF-8', () => Buffer.concat([Buffer.from([2, 0, 0, 0, 0, 0, 0, 0]), Buffer.from([0xff, 0xfe])]), ['UTF-8']],
  ])('rejects %s with SAEGATE_ERR_SAFETENSORS naming the file', (_name, build, fragments) => {
    expectSaegateError(() => SafetensorsFile.fromBytes(build(), 'bad.safetensors'), 'SAEGATE_ERR_SAFETENSORS', 'bad.safetensors', ...fragments);
  });

  it('rejects a bad file on disk naming its path, a missing file and a directory', () => {
    const dir = makeTempDir();
    try {
      const file = path.join(dir, 'truncated.safetensors');
      fs.writeFileSync(file, rawFile({ w: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, f32(4)).subarray(0, 30));
      expectSaegateError(() => SafetensorsFile.open(file), 'SAEGATE_ERR_SAFETENSORS', file);
      expectSaegateError(() => SafetensorsFile.open(path.join(dir, 'missing.safetensors')), 'SAEGATE_ERR_SAFETENSORS', 'missing.safetensors', 'cannot open');
      expectSaegateError(() => SafetensorsFile.open(dir), 'SAEGATE_ERR_SAFETENSORS', dir, 'not a regular file');
    } finally {
      removeTempDir(dir);
    }
  });

  it('accepts a header padded with trailing spaces and zero-sized tensors anywhere', () => {
    const header = { z: { dtype: 'F32', shape: [0], data_offsets: [4, 4] }, a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'BF16', shape: [2], data_offsets: [4, 8] } };
    const json = Buffer.from(`${JSON.stringify(header)}      `);
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(json.length));
    const st = SafetensorsFile.fromBytes(Buffer.concat([length, json, Buffer.from(Float32Array.of(2.5).buffer), Buffer.from(Uint16Array.of(0x3f80, 0xc000).buffer)]));
    expect(st.getFloat32('a')).toEqual(Float32Array.of(2.5));
    expect(st.getFloat32('b')).toEqual(Float32Array.of(1, -2));
    expect(st.getFloat32('z').length).toBe(0);
  });

  it('never throws anything but SaegateError on random bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 256 }), (bytes) => {
        try {
          SafetensorsFile.fromBytes(bytes);
        } catch (error) {
          expect(error).toBeInstanceOf(SaegateError);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('never throws anything but SaegateError on random headers with a consistent length prefix', () => {
    const dtype = fc.constantFrom('F32', 'F16', 'BF16', 'I8', 'U64', 'F64', 'XX', 7);
    const dims = fc.array(fc.oneof(fc.nat(8), fc.integer({ min: -3, max: 3 }), fc.constant(2 ** 53)), { maxLength: 3 });
    const entry = fc.record({ dtype, shape: fc.oneof(dims, fc.constant('x')), data_offsets: fc.oneof(fc.tuple(fc.nat(64), fc.nat(64)), fc.array(fc.nat(64), { maxLength: 3 })) }, { requiredKeys: [] });
    const header = fc.dictionary(fc.oneof(fc.string({ maxLength: 4 }), fc.constant('__metadata__')), fc.oneof(entry, fc.jsonValue({ maxDepth: 2 })), { maxKeys: 4 });
    fc.assert(
      fc.property(header, fc.uint8Array({ maxLength: 64 }), (h, data) => {
        try {
          const st = SafetensorsFile.fromBytes(rawFile(h, data));
          for (const name of st.tensors.keys()) {
            const info = st.info(name);
            if (['F32', 'F16', 'BF16', 'F64'].includes(info.dtype)) {
              expect(st.getFloat32(name).length).toBe(info.shape.reduce((a, b) => a * b, 1));
            }
          }
        } catch (error) {
          expect(error).toBeInstanceOf(SaegateError);
        }
      }),
      { numRuns: 2000 },
    );
  });
});
