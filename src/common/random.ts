/** Seeded pseudo-random numbers shared by sampling and the tests' fixtures. */

/** mulberry32: small, fast, and good enough for sampling; state is one uint32. */
export class SeededRandom {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}

/** `SeededRandom` as a function returning uniforms in [0, 1). */
export function seededUniform(seed: number): () => number {
  const random = new SeededRandom(seed);
  return () => random.next();
}

/**
 * A uniformly random permutation of `[0, n)` (Fisher–Yates from the end, `j = ⌊u · (i + 1)⌋`),
 * drawn from `random`. The same generator state gives the same permutation.
 */
export function shuffledIndices(n: number, random: SeededRandom): Uint32Array {
  const perm = new Uint32Array(n);
  for (let i = 0; i < n; i++) perm[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random.next() * (i + 1));
    const t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  return perm;
}
