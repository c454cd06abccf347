/**
 * IEEE-754 binary16 ("half", f16) <-> binary32 conversion for activation frames.
 *
 * Node 20 has no Float16Array or Math.f16round, so halves travel as Uint16Array bit patterns.
 * f32 -> f16 rounds to nearest, ties to even (what GPUs and numpy do), keeps subnormals, maps
 * overflow to ±Inf and every NaN to the quiet NaN 0x7e00 with its sign. f16 -> f32 is exact and
 * goes through a 65,536-entry table of f32 bit patterns (256 KiB, built on first use): one load per
 * element beats the branches of a bitwise decode and keeps NaN payloads intact.
 */
import { err } from './errors.js';

/** Largest finite half, 65504. */
export const F16_MAX = 65504;

/**
 * Converts one f32 (as its bit pattern `bits`, and as the number `value` it encodes) to f16 bits.
 * Both forms are passed because the caller already has them: the subnormal branch needs the value,
 * the others only need integer operations on the bits.
 */
function halfBits(bits: number, value: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const abs = bits & 0x7fffffff;
  // |v| >= 2^16, Inf or NaN. Finite values in [65520, 65536) are caught by the carry below.
  if (abs >= 0x47800000) return sign | (abs > 0x7f800000 ? 0x7e00 : 0x7c00);
  // |v| < 2^-14: the half is subnormal (or zero), i.e. a multiple of 2^-24. Scaling by 2^24 is exact
  // in a double, so rounding the scaled value to an integer, ties to even, is the whole job.
  if (abs < 0x38800000) {
    const scaled = Math.abs(value) * 16777216;
    const floor = Math.floor(scaled);
    const frac = scaled - floor;
    return sign | (frac > 0.5 || (frac === 0.5 && (floor & 1) === 1) ? floor + 1 : floor);
  }
  // Normal: rebias the exponent (127 -> 15) by adding (15 - 127) << 23, and add 0xfff plus the lowest
  // kept mantissa bit so the shift rounds to nearest even. A mantissa carry bumps the exponent, which
  // is right, including the step to Inf at the top. `>>>` reduces the (exact, < 2^53) sum modulo 2^32
  // first, which is the 32-bit wrap-around the trick relies on.
  return sign | ((abs + 0xc8000fff + ((abs >>> 13) & 1)) >>> 13);
}

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** f16 bits (0..65535) of `value` rounded to the nearest half, ties to even. */
export function f32ToF16Bits(value: number): number {
  scratchF32[0] = value;
  return halfBits(scratchU32[0], scratchF32[0]);
}

let table: Uint32Array | null = null;

/** f32 bit pattern for every half bit pattern. */
function halfTable(): Uint32Array {
  if (table !== null) return table;
  const bits = new Uint32Array(65536);
  const values = new Float32Array(bits.buffer);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exponent = (h >>> 10) & 0x1f;
    const mantissa = h & 0x3ff;
    if (exponent === 0) {
      // Zero or subnormal half: mantissa × 2^-24, a normal f32 (exact; -0 / 2^24 stays -0).
      values[h] = (sign !== 0 ? -mantissa : mantissa) / 16777216;
    } else if (exponent === 31) {
      // Inf, or NaN with its payload moved to the top of the f32 mantissa.
      bits[h] = (sign | 0x7f800000 | (mantissa << 13)) >>> 0;
    } else {
      bits[h] = (sign | ((exponent + 112) << 23) | (mantissa << 13)) >>> 0;
    }
  }
  table = bits;
  return bits;
}

/** The f32 value of f16 bits `bits` (0..65535). Exact. */
export function f16BitsToF32(bits: number): number {
  scratchU32[0] = halfTable()[bits & 0xffff];
  return scratchF32[0];
}

/**
 * Writes `src.length` halves, `src[i]` rounded to nearest-even, into `dst[0..src.length)`.
 * Allocates one typed-array view per call, nothing per element.
 */
export function f32ToF16(src: Float32Array, dst: Uint16Array): void {
  const n = src.length;
  if (dst.length < n) throw err('SAEGATE_ERR_TAP_ARGUMENT', `f32ToF16: destination holds ${dst.length} values, source has ${n}`);
  // Float32Array views are always 4-byte aligned, so a Uint32Array view of the same bytes is valid.
  const srcBits = new Uint32Array(src.buffer, src.byteOffset, n);
  for (let i = 0; i < n; i++) dst[i] = halfBits(srcBits[i], src[i]);
}

/** Writes `src.length` f32 values, the exact value of each half in `src`, into `dst[0..src.length)`. */
export function f16ToF32(src: Uint16Array, dst: Float32Array): void {
  const n = src.length;
  if (dst.length < n) throw err('SAEGATE_ERR_TAP_ARGUMENT', `f16ToF32: destination holds ${dst.length} values, source has ${n}`);
  const lookup = halfTable();
  // Copying bit patterns (not numbers) keeps NaN payloads, which a Float32Array store may not.
  const dstBits = new Uint32Array(dst.buffer, dst.byteOffset, n);
  for (let i = 0; i < n; i++) dstBits[i] = lookup[src[i]];
}
