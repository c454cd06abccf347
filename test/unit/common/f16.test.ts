import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { f16BitsToF32, f16ToF32, f32ToF16, f32ToF16Bits, F16_MAX } from '../../../src/common/f16.js';

describe('f32ToF16Bits', () => {
  it.each([
    [1, 0x3c00],
    [-2, 0xc000],
    [0.5, 0x3800],
    [F16_MAX, 0x7bff],
    [-F16_MAX, 0xfbff],
    [0, 0x0000],
    [-0, 0x8000],
    // Smallest positive normal half, 2^-14.
    [2 ** -14, 0x0400],
    // 6.1e-5 is just below 2^-14 (6.1035e-5): it rounds to the largest subnormal, 1023 × 2^-24.
    [6.1e-5, 0x03ff],
    // Smallest subnormal, 2^-24.
    [2 ** -24, 0x0001],
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
    // Beyond the largest half: overflow to infinity.
    [1e6, 0x7c00],
    [-70000, 0xfc00],
  ].map(([value, bits]) => [value, `0x${bits.toString(16).padStart(4, '0')}`, bits] as const))('converts %s to half %s', (value, _hex, bits) => {
    expect(f32ToF16Bits(value)).toBe(bits);
  });

  it('maps NaN to the quiet NaN 0x7e00, keeping the sign', () => {
    expect(f32ToF16Bits(NaN)).toBe(0x7e00);
    const negativeNaN = new Float32Array(new Uint32Array([0xffc00001]).buffer)[0];
    expect(f32ToF16Bits(negativeNaN)).toBe(0xfe00);
  });

  it('rounds ties to even in the normal range', () => {
    // 1 + 2^-11 is halfway between 1 (0x3c00, even) and 1 + 2^-10 (0x3c01): goes down.
    expect(f32ToF16Bits(1 + 2 ** -11)).toBe(0x3c00);
    // 1 + 3·2^-11 is halfway between 0x3c01 (odd) and 0x3c02 (even): goes up.
    expect(f32ToF16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02);
    // Just above the halfway point rounds up.
    expect(f32ToF16Bits(1 + 2 ** -11 + 2 ** -20)).toBe(0x3c01);
  });

  it('rounds ties to even at the top of the range, where the tie is with infinity', () => {
    // 65520 is halfway between 65504 (mantissa 0x3ff, odd) and 65536 (= Inf): rounds to Inf.
    expect(f32ToF16Bits(65520)).toBe(0x7c00);
    expect(f32ToF16Bits(65519.9921875)).toBe(0x7bff);
  });

  it('rounds ties to even among subnormals', () => {
    // 2^-25 is halfway between 0 and 2^-24: to 0 (even).
    expect(f32ToF16Bits(2 ** -25)).toBe(0x0000);
    // 3·2^-25 is halfway between 1·2^-24 (odd) and 2·2^-24: to 2.
    expect(f32ToF16Bits(3 * 2 ** -25)).toBe(0x0002);
    // Slightly above 2^-25 goes up to the smallest subnormal.
    expect(f32ToF16Bits(2 ** -25 * 1.0001)).toBe(0x0001);
    // Halfway between the largest subnormal and the smallest normal: to the normal (even mantissa 0).
    expect(f32ToF16Bits(1023.5 * 2 ** -24)).toBe(0x0400);
  });
});

describe('f16BitsToF32', () => {
  it.each([
    [0x3c00, 1],
    [0xc000, -2],
    [0x7bff, 65504],
    [0x0001, 2 ** -24],
    [0x03ff, 1023 * 2 ** -24],
    [0x0400, 2 ** -14],
    [0x7c00, Infinity],
    [0xfc00, -Infinity],
  ].map(([bits, value]) => [`0x${bits.toString(16).padStart(4, '0')}`, value, bits] as const))('converts half %s to %s', (_hex, value, bits) => {
    expect(f16BitsToF32(bits)).toBe(value);
  });

  it('decodes NaN patterns as NaN and signed zero as signed zero', () => {
    expect(f16BitsToF32(0x7e00)).toBeNaN();
    expect(f16BitsToF32(0x7c01)).toBeNaN();
    expect(Object.is(f16BitsToF32(0x8000), -0)).toBe(true);
  });

  it('round-trips every non-NaN half exactly through f32', () => {
    for (let h = 0; h < 0x10000; h++) {
      const exponent = (h >>> 10) & 0x1f;
      if (exponent === 31 && (h & 0x3ff) !== 0) continue;
      if (f32ToF16Bits(f16BitsToF32(h)) !== h) throw new Error(`0x${h.toString(16)} does not round-trip`);
    }
    expect(f32ToF16Bits(f16BitsToF32(0x1234))).toBe(0x1234);
  });
});

describe('array conversion', () => {
  it('converts arrays element by element, like the scalar functions', () => {
    const src = Float32Array.from([1, -2, 65504, 6.1e-5, Infinity, NaN, 1 + 2 ** -11, 0.1]);
    const half = new Uint16Array(src.length);
    f32ToF16(src, half);
    expect([...half]).toEqual([0x3c00, 0xc000, 0x7bff, 0x03ff, 0x7c00, 0x7e00, 0x3c00, 0x2e66]);
    const back = new Float32Array(src.length);
    f16ToF32(half, back);
    expect([...back.subarray(0, 5)]).toEqual([1, -2, 65504, 1023 * 2 ** -24, Infinity]);
    expect(back[5]).toBeNaN();
    expect(back[7]).toBeCloseTo(0.0999755859375, 12);
  });

  it('converts a subarray view without touching the neighbouring elements', () => {
    const backing = Float32Array.from([9, 1, 2, 9]);
    const out = new Uint16Array([7, 7, 7, 7]);
    f32ToF16(backing.subarray(1, 3), out.subarray(1, 3));
    expect([...out]).toEqual([7, 0x3c00, 0x4000, 7]);
  });

  it('keeps NaN payloads when widening halves', () => {
    const out = new Float32Array(1);
    f16ToF32(Uint16Array.from([0x7d23]), out);
    expect(new Uint32Array(out.buffer)[0]).toBe(0x7f800000 | (0x123 << 13));
  });

  it('refuses a destination shorter than the source', () => {
    expect(() => f32ToF16(new Float32Array(4), new Uint16Array(3))).toThrow(expect.objectContaining({ code: 'SAEGATE_ERR_TAP_ARGUMENT' }));
    expect(() => f16ToF32(new Uint16Array(4), new Float32Array(3))).toThrow(expect.objectContaining({ code: 'SAEGATE_ERR_TAP_ARGUMENT' }));
  });

  it('agrees with a reference that picks the nearest half (ties to even) for arbitrary floats', () => {
    // Reference: the two halves bracketing |v| and an explicit distance comparison.
    const reference = (v: number): number => {
      const x = Math.fround(v);
      if (Number.isNaN(x)) return 0x7e00;
      const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
      const a = Math.abs(x);
      if (a >= 65520) return sign | 0x7c00;
      let lo = 0;
      let hi = 0x7bff;
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if (f16BitsToF32(mid) <= a) lo = mid;
        else hi = mid - 1;
      }
      if (f16BitsToF32(lo) === a) return sign | lo;
      const up = lo + 1;
      const dLo = a - f16BitsToF32(lo);
      const dUp = f16BitsToF32(up) - a;
      if (dLo < dUp) return sign | lo;
      if (dUp < dLo) return sign | up;
      return sign | ((lo & 1) === 0 ? lo : up);
    };
    fc.assert(
      fc.property(fc.float({ noNaN: true }), (v) => {
        expect(f32ToF16Bits(v)).toBe(reference(v));
      }),
      { numRuns: 5000 },
    );
  });
});
