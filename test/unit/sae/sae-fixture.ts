/**
 * A seeded small SAE (d_in 16, d_sae 64) shared by the pool and batcher tests, and wide SAEs
 * (d_sae 512, L0 far above 64) with a float64 reference for the exactness tests.
 */
import { expect } from 'vitest';
import { seededUniform } from '../../../src/common/random.js';
import type { SaeArchitecture, SaeNormalization, SaeWeights } from '../../../src/sae/types.js';

/** Uniforms in [0, 1) from a seed. */
export const rng = seededUniform;

export const D_IN = 16;
export const D_SAE = 64;


export function uniform(next: () => number, n: number, lo: number, hi: number): Float32Array {
  return Float32Array.from({ length: n }, () => lo + (hi - lo) * next());
}

/** A standard 16 → 64 SAE (no normalisation, b_dec subtracted) for the pool and batcher tests. */
export function makeSmallSae(seed = 7): SaeWeights {
  return makeSaeOf({ architecture: 'standard', normalization: 'none', applyBDecToInput: true, dIn: D_IN, dSae: D_SAE, k: 0, wEnc: 2, seed, source: 'test-pool' });
}

/**
 * Wide SAEs for the exactness tests: d_sae 512 with rows whose L0 is far above the 64 features
 * the engine used to list at most. Input `x` with entries uniform in ±A gives pre-activations of
 * standard deviation about A/3 around `b_enc` (−0.6 … −0.2; JumpReLU: −0.4 … 0, thresholds 0 … 0.3), so A = 6 ("loud" rows) fires roughly
 * 150–250 latents and A = 0.3 ("quiet" rows) a few.
 */
export const WIDE_D_IN = 32;
export const WIDE_D_SAE = 512;
export const LOUD = 6;
export const QUIET = 0.3;

export function makeWideSae(architecture: 'standard' | 'jumprelu', seed: number): SaeWeights {
  const next = rng(seed);
  const scale = 1 / Math.sqrt(WIDE_D_IN);
  return {
    config: configOf({ architecture, normalization: 'none', applyBDecToInput: true, dIn: WIDE_D_IN, dSae: WIDE_D_SAE, k: 0, source: `test-wide-${architecture}` }),
    W_enc: uniform(next, WIDE_D_IN * WIDE_D_SAE, -scale, scale),
    b_enc: architecture === 'jumprelu' ? uniform(next, WIDE_D_SAE, -0.4, 0) : uniform(next, WIDE_D_SAE, -0.6, -0.2),
    W_dec: uniform(next, WIDE_D_SAE * WIDE_D_IN, -scale, scale),
    b_dec: uniform(next, WIDE_D_IN, -0.5, 0.5),
    threshold: architecture === 'jumprelu' ? uniform(next, WIDE_D_SAE, 0, 0.3) : null,
    gated: null,
  };
}

/** Float64 reference of one row of a wide SAE (no normalisation, b_dec subtracted from the input). */
export interface WideReferenceRow {
  /** Activations of all d_sae latents. */
  dense: Float64Array;
  /** Active latents, by index. */
  active: number[];
  sqError: number;
  fvu: number;
  /** Smallest distance of a pre-activation to a decision boundary (0, or the threshold). */
  margin: number;
}

/** SAELens' standard / JumpReLU encode and the dense decode, in float64 with plain loops. */
export function wideReference(sae: SaeWeights, row: Float32Array): WideReferenceRow {
  const { dIn, dSae } = sae.config;
  const dense = new Float64Array(dSae);
  let margin = Infinity;
  for (let j = 0; j < dSae; j++) {
    let pre = sae.b_enc[j];
    for (let i = 0; i < dIn; i++) pre += (row[i] - sae.b_dec[i]) * sae.W_enc[i * dSae + j];
    margin = Math.min(margin, Math.abs(pre));
    const open = sae.threshold === null || pre > sae.threshold[j];
    if (sae.threshold !== null) margin = Math.min(margin, Math.abs(pre - sae.threshold[j]));
    dense[j] = open ? Math.max(0, pre) : 0;
  }
  const recon = Float64Array.from(sae.b_dec);
  for (let j = 0; j < dSae; j++) if (dense[j] > 0) for (let i = 0; i < dIn; i++) recon[i] += dense[j] * sae.W_dec[j * dIn + i];
  let sqError = 0;
  let mean = 0;
  for (let i = 0; i < dIn; i++) {
    sqError += (row[i] - recon[i]) ** 2;
    mean += row[i] / dIn;
  }
  let energy = 0;
  for (let i = 0; i < dIn; i++) energy += (row[i] - mean) ** 2;
  const active = [...dense.keys()].filter((j) => dense[j] > 0);
  return { dense, active, sqError, fvu: sqError / energy, margin };
}

/**
 * `count` seeded rows of amplitude `amplitude`, skipping any whose outcome hangs on a float32
 * rounding (a pre-activation within 1e-3 of 0 or of its threshold), with their references.
 */
export function wideRows(sae: SaeWeights, count: number, amplitude: number, seed: number): { rows: Float32Array; refs: WideReferenceRow[] } {
  const next = rng(seed);
  const dIn = sae.config.dIn;
  const rows = new Float32Array(count * dIn);
  const refs: WideReferenceRow[] = [];
  while (refs.length < count) {
    const row = uniform(next, dIn, -amplitude, amplitude);
    const ref = wideReference(sae, row);
    if (ref.margin < 1e-3) continue;
    rows.set(row, refs.length * dIn);
    refs.push(ref);
  }
  return { rows, refs };
}

/** What the exactness check reads: an `EncodeResult` or an `SaeResultBatch`. */
export interface ListedRows {
  rowCount: number;
  topK: number;
  indices: Int32Array;
  values: Float32Array;
  l0: Int32Array;
  sqError: Float32Array;
  fvu: Float32Array;
}

/**
 * Checks encoded rows against their float64 references: the list is `max(1, largest L0)` wide and
 * holds each row's full active set by value, descending, then −1/0 padding; L0 is exact; the
 * activations, sq_error and fvu agree to float32 accuracy; and per-feature firing counts over the
 * batch, taken from the lists as the monitor takes them, equal the reference counts.
 */
export function expectExactRows(result: ListedRows, refs: WideReferenceRow[], dSae: number): void {
  const width = Math.max(1, ...refs.map((ref) => ref.active.length));
  expect(result.rowCount).toBe(refs.length);
  expect(result.topK, 'list width').toBe(width);
  const firing = new Uint32Array(dSae);
  const wanted = new Uint32Array(dSae);
  refs.forEach((ref, r) => {
    const l0 = ref.active.length;
    const slots = Array.from(result.indices.subarray(r * width, (r + 1) * width));
    const values = result.values.subarray(r * width, (r + 1) * width);
    expect(result.l0[r], `row ${r} l0`).toBe(l0);
    expect([...slots.slice(0, l0)].sort((a, b) => a - b), `row ${r} active set`).toEqual(ref.active);
    expect(slots.slice(l0), `row ${r} padding`).toEqual(Array<number>(width - l0).fill(-1));
    for (let s = 0; s < l0; s++) {
      const want = ref.dense[slots[s]];
      expect(Math.abs(values[s] - want), `row ${r} feature ${slots[s]}: got ${values[s]}, expected ${want}`).toBeLessThanOrEqual(1e-5 * Math.abs(want) + 1e-5);
      if (s > 0) expect(values[s], `row ${r} order`).toBeLessThanOrEqual(values[s - 1]);
    }
    for (let s = 0; s < width; s++) if (slots[s] >= 0) firing[slots[s]]++;
    for (const j of ref.active) wanted[j]++;
    expect(Math.abs(result.sqError[r] - ref.sqError), `row ${r} sq_error: got ${result.sqError[r]}, expected ${ref.sqError}`).toBeLessThanOrEqual(1e-4 * ref.sqError + 1e-6);
    expect(Math.abs(result.fvu[r] - ref.fvu), `row ${r} fvu: got ${result.fvu[r]}, expected ${ref.fvu}`).toBeLessThanOrEqual(1e-4 * ref.fvu + 1e-6);
  });
  expect(Array.from(firing), 'firing counts').toEqual(Array.from(wanted));
}

/** `expected_average_only_in`'s scaling factor in `makeSaeOf`'s SAEs. */
export const SCALING_FACTOR = 0.37;

export interface SaeSpec {
  architecture: SaeArchitecture;
  normalization: SaeNormalization;
  applyBDecToInput: boolean;
  dIn: number;
  dSae: number;
  /** The `topk` architecture's k. */
  k: number;
  /** Encoder weights are uniform in ±wEnc / sqrt(dIn). */
  wEnc: number;
  seed: number;
  /** The config's `source` (it names the SAE in errors). */
  source: string;
}

/** The SAELens f32 config of a test SAE at `blocks.0.hook_resid_post` (k only for `topk`, the scaling factor only for `expected_average_only_in`). */
function configOf(spec: Pick<SaeSpec, 'architecture' | 'normalization' | 'applyBDecToInput' | 'dIn' | 'dSae' | 'k' | 'source'>): SaeWeights['config'] {
  const { architecture, normalization, applyBDecToInput, dIn, dSae, k, source } = spec;
  return {
    architecture,
    format: 'saelens',
    dIn,
    dSae,
    hookName: 'blocks.0.hook_resid_post',
    modelName: null,
    applyBDecToInput,
    normalizeActivations: normalization,
    k: architecture === 'topk' ? k : null,
    scalingFactor: normalization === 'expected_average_only_in' ? SCALING_FACTOR : null,
    dtype: 'f32',
    source,
  };
}

/** A seeded SAE of any architecture, normalisation and size (graph and screen tests). */
export function makeSaeOf(spec: SaeSpec): SaeWeights {
  const { architecture, dIn, dSae, wEnc, seed } = spec;
  const next = rng(seed);
  const scale = 1 / Math.sqrt(dIn);
  return {
    config: configOf(spec),
    W_enc: uniform(next, dIn * dSae, -wEnc * scale, wEnc * scale),
    b_enc: uniform(next, dSae, -0.3, 0.3),
    W_dec: uniform(next, dSae * dIn, -scale, scale),
    b_dec: uniform(next, dIn, -0.5, 0.5),
    threshold: architecture === 'jumprelu' ? uniform(next, dSae, 0, 0.4) : null,
    gated:
      architecture === 'gated'
        ? { b_gate: uniform(next, dSae, -0.3, 0.3), r_mag: uniform(next, dSae, -0.5, 0.5), b_mag: uniform(next, dSae, -0.3, 0.3) }
        : null,
  };
}
