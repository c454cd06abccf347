/**
 * Statistics the benchmarks print. `median` is the upper median (the middle value of an odd count,
 * the upper of the two middle ones of an even count): always one of the measured values.
 */

/** The upper median of `xs`; NaN when there is none. */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}
