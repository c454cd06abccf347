/**
 * `FeatureScreen` against the SAE encoder graph run by onnxruntime: a feature whose activation
 * onnxruntime puts above a rule's `above` must never be screened out (that would silently miss a
 * policy trigger), for every architecture, normalisation and `applyBDecToInput`, for f32 and f16
 * rows, at a wide SAE where float32's rounding is largest, and on rows the graph's float32
 * normalisation gets badly wrong (large offsets, constant rows, over- and underflow, Infinity,
 * NaN). And the screen must be worth having: it screens out most inactive features at `above = 0`.
 */
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { f16ToF32, f32ToF16 } from '../../../src/common/f16.js';
import { seededUniform } from '../../../src/common/random.js';
import { FeatureScreen } from '../../../src/policies/screen.js';
import { buildSaeEncoderGraph, SaeEncoderNames, saeEncoderOutputNames } from '../../../src/sae/graph.js';
import type { SaeArchitecture, SaeNormalization, SaeWeights } from '../../../src/sae/types.js';
import type { ActivationData } from '../../../src/tap/messages.js';
import { makeSaeOf, uniform, type SaeSpec } from '../sae/sae-fixture.js';

/** Rows per batch (each batch is also given as f16, decoded back to f32 for onnxruntime). */
const ROWS = 32;

type ScreenSaeSpec = Omit<SaeSpec, 'source'>;

function makeSae(spec: ScreenSaeSpec): SaeWeights {
  return makeSaeOf({ ...spec, source: `screen-${spec.architecture}-${spec.normalization}` });
}

/**
 * Dense activations `[rows, dSae]` as onnxruntime computes them: the graph's listed features
 * (indices and values, −1 pads) scattered back into a zero vector per row.
 */
async function encodeDense(sae: SaeWeights, x: Float32Array, rows: number): Promise<Float32Array> {
  const { dIn, dSae } = sae.config;
  const session = await ort.InferenceSession.create(buildSaeEncoderGraph(sae), { logSeverityLevel: 3 });
  try {
    const out = await session.run({ [SaeEncoderNames.input]: new ort.Tensor('float32', x, [rows, dIn]) }, saeEncoderOutputNames);
    const width = out[SaeEncoderNames.indices].dims[1];
    const indices = out[SaeEncoderNames.indices].data as BigInt64Array;
    const values = out[SaeEncoderNames.values].data as Float32Array;
    const dense = new Float32Array(rows * dSae);
    for (let r = 0; r < rows; r++) {
      for (let s = 0; s < width; s++) {
        const index = Number(indices[r * width + s]);
        if (index === -1) continue;
        expect(index >= 0 && index < dSae && dense[r * dSae + index] === 0, `row ${r} slot ${s}: index ${index}`).toBe(true);
        dense[r * dSae + index] = values[r * width + s];
      }
    }
    return dense;
  } finally {
    await session.release();
  }
}

/**
 * The screen's bound for `feature` at the prepared row: the `above` where `mayExceed` turns false
 * (it is true exactly below its bound), found by bisection near `near`. For failure messages only.
 */
function boundOf(screen: FeatureScreen, feature: number, near: number): number {
  if (!Number.isFinite(near)) near = 0;
  let step = Math.max(1, Math.abs(near));
  let lo = near - step;
  for (let i = 0; !screen.mayExceed(feature, lo); i++) {
    // False at every `above` (a NaN bound): nothing passes.
    if (i === 64) return Number.NEGATIVE_INFINITY;
    lo -= step *= 2;
  }
  let hi = near;
  for (let i = 0; screen.mayExceed(feature, hi); i++) {
    if (i === 64) return Number.POSITIVE_INFINITY;
    hi += step *= 2;
  }
  for (let i = 0; i < 200 && hi - lo > 1e-15 * Math.max(1, Math.abs(hi)); i++) {
    const mid = (lo + hi) / 2;
    if (screen.mayExceed(feature, mid)) lo = mid;
    else hi = mid;
  }
  return lo;
}

/**
 * Every (row, feature) of `data` whose onnxruntime activation `act` (from `dense`) the screen
 * rules out, i.e. `mayExceed(f, act − δ)` false: a rule with that `above` would fire and be missed.
 * An infinite activation is checked at the largest finite `above`. `label` names a row.
 */
function missed(screen: FeatureScreen, data: ActivationData, rows: number, dense: Float32Array, dSae: number, label: (row: number) => string): string[] {
  const failures: string[] = [];
  for (let r = 0; r < rows; r++) {
    screen.prepare(data, r);
    for (let f = 0; f < dSae; f++) {
      const act = dense[r * dSae + f];
      const above = act === Number.POSITIVE_INFINITY ? Number.MAX_VALUE : act - 1e-9 * Math.max(1, Math.abs(act));
      if (!screen.mayExceed(f, above)) {
        failures.push(`${label(r)} (${data.dtype} rows) feature ${f}: onnxruntime activation ${act}, screen bound ${boundOf(screen, f, act)}`);
      }
    }
  }
  return failures;
}

/** Fails listing (the first 20 of) `problems`, which vitest would otherwise abbreviate in its diff. */
function expectNone(problems: string[], what: string): void {
  expect(problems.length, `${what}: ${problems.length}\n${problems.slice(0, 20).join('\n')}`).toBe(0);
}

/** Rows uniform in [lo, hi), and the same rows rounded to f16: as bit patterns and decoded to f32. */
function makeRows(dIn: number, seed: number, lo: number, hi: number): { f32: Float32Array; halves: Uint16Array; decoded: Float32Array } {
  const f32 = uniform(seededUniform(seed), ROWS * dIn, lo, hi);
  const halves = new Uint16Array(f32.length);
  f32ToF16(f32, halves);
  const decoded = new Float32Array(f32.length);
  f16ToF32(halves, decoded);
  return { f32, halves, decoded };
}

interface Fixture {
  sae: SaeWeights;
  screen: FeatureScreen;
  rows: ReturnType<typeof makeRows>;
  /** onnxruntime's dense activations of `rows.f32`. */
  dense: Float32Array;
  /** onnxruntime's dense activations of `rows.decoded`. */
  denseDecoded: Float32Array;
}

/** The SAE, its screen, its rows and onnxruntime's activations of them (one run for both row sets). */
async function fixture(spec: ScreenSaeSpec, lo: number, hi: number): Promise<Fixture> {
  const sae = makeSae(spec);
  const screen = FeatureScreen.forPrecision(sae, 'f32');
  if (screen === null) throw new Error('no f32 screen');
  const rows = makeRows(spec.dIn, spec.seed + 1, lo, hi);
  const both = new Float32Array(2 * ROWS * spec.dIn);
  both.set(rows.f32, 0);
  both.set(rows.decoded, ROWS * spec.dIn);
  const dense = await encodeDense(sae, both, 2 * ROWS);
  const half = ROWS * spec.dSae;
  return { sae, screen, rows, dense: dense.subarray(0, half), denseDecoded: dense.subarray(half) };
}

/** The share of inactive (row, feature) pairs the screen rules out at `above = 0`. */
function screenedOutShare({ screen, rows, dense, sae }: Fixture): { share: number; inactive: number } {
  const { dSae } = sae.config;
  const data: ActivationData = { dtype: 'f32', data: rows.f32 };
  let inactive = 0;
  let screenedOut = 0;
  for (let r = 0; r < ROWS; r++) {
    screen.prepare(data, r);
    for (let f = 0; f < dSae; f++) {
      if (dense[r * dSae + f] !== 0) continue;
      inactive++;
      if (!screen.mayExceed(f, 0)) screenedOut++;
    }
  }
  return { share: screenedOut / inactive, inactive };
}

const architectures: SaeArchitecture[] = ['standard', 'jumprelu', 'topk', 'gated'];
const normalizations: SaeNormalization[] = ['none', 'constant_norm_rescale', 'layer_norm', 'expected_average_only_in'];
const narrowCases: ScreenSaeSpec[] = architectures.flatMap((architecture, a) =>
  normalizations.flatMap((normalization, n) =>
    [true, false].map((applyBDecToInput, b) => ({ architecture, normalization, applyBDecToInput, dIn: 16, dSae: 64, k: 12, wEnc: 2, seed: 5000 + 100 * a + 10 * n + b })),
  ),
);
/** Narrow rows: offset and spread far from 0 and 1, so every normalisation changes the features. */
const NARROW_LO = 0.4 - 3;
const NARROW_HI = 0.4 + 3;

describe.each(narrowCases)('FeatureScreen vs onnxruntime: $architecture, normalize=$normalization, applyBDecToInput=$applyBDecToInput', (spec) => {
  let fx: Fixture;
  beforeAll(async () => {
    fx = await fixture(spec, NARROW_LO, NARROW_HI);
  });

  it('never screens out a feature onnxruntime puts above a threshold just below its activation (f32 rows)', () => {
    const label = `${spec.architecture}/${spec.normalization}/applyBDecToInput=${spec.applyBDecToInput}`;
    expectNone(missed(fx.screen, { dtype: 'f32', data: fx.rows.f32 }, ROWS, fx.dense, spec.dSae, (r) => `${label} row ${r}`), 'features screened out that onnxruntime fires');
    // The rows light up features (the check above is not vacuous).
    expect(fx.dense.some((v) => v > 0)).toBe(true);
  });

  it('screens f16 rows like the f32 rows decoded from the same halves, and never screens out what onnxruntime fires on those', () => {
    const label = `${spec.architecture}/${spec.normalization}/applyBDecToInput=${spec.applyBDecToInput}`;
    const halves: ActivationData = { dtype: 'f16', data: fx.rows.halves };
    expectNone(missed(fx.screen, halves, ROWS, fx.denseDecoded, spec.dSae, (r) => `${label} row ${r}`), 'features screened out that onnxruntime fires');
    const decoded: ActivationData = { dtype: 'f32', data: fx.rows.decoded };
    const differ: string[] = [];
    const thresholds = (act: number): number[] => [act - 1e-3, act, act + 1e-3, 0, 0.05, 0.5];
    for (let r = 0; r < ROWS; r++) {
      const acts = fx.denseDecoded.subarray(r * spec.dSae, (r + 1) * spec.dSae);
      fx.screen.prepare(halves, r);
      const fromHalves = [...acts].map((act, f) => thresholds(act).map((above) => fx.screen.mayExceed(f, above)));
      fx.screen.prepare(decoded, r);
      acts.forEach((act, f) =>
        thresholds(act).forEach((above, t) => {
          if (fx.screen.mayExceed(f, above) !== fromHalves[f][t]) differ.push(`row ${r} feature ${f} above ${above}`);
        }),
      );
    }
    expectNone(differ, `${label}: f16 rows screened unlike their decoded f32 rows`);
  });

  it('lets every feature through for any `above` below 0 (an activation of 0 is above it)', () => {
    const data: ActivationData = { dtype: 'f32', data: fx.rows.f32 };
    for (let r = 0; r < ROWS; r++) {
      fx.screen.prepare(data, r);
      for (let f = 0; f < spec.dSae; f++) {
        for (const above of [-Number.MIN_VALUE, -1e-12, -1, -1e9]) {
          if (!fx.screen.mayExceed(f, above)) expect.fail(`row ${r} feature ${f} screened out at above ${above}`);
        }
      }
    }
  });
});

describe.each([
  { architecture: 'standard', normalization: 'none' },
  { architecture: 'topk', normalization: 'none' },
  { architecture: 'standard', normalization: 'layer_norm' },
  { architecture: 'topk', normalization: 'layer_norm' },
] as const)('FeatureScreen vs onnxruntime at a wide SAE (dIn 768, inputs ±20): $architecture, normalize=$normalization', ({ architecture, normalization }) => {
  // Weights ~1/sqrt(dIn) and inputs of magnitude 20: the 768-term float32 dot products carry the
  // largest absolute rounding of these tests.
  const spec: ScreenSaeSpec = { architecture, normalization, applyBDecToInput: true, dIn: 768, dSae: 128, k: 16, wEnc: 1, seed: normalization === 'none' ? 7100 : 7200 };
  let fx: Fixture;
  beforeAll(async () => {
    fx = await fixture(spec, -20, 20);
  });

  it('never screens out a feature onnxruntime puts above a threshold just below its activation, for f32 and f16 rows', () => {
    const label = `wide ${architecture}/${normalization}`;
    expectNone(missed(fx.screen, { dtype: 'f32', data: fx.rows.f32 }, ROWS, fx.dense, spec.dSae, (r) => `${label} row ${r}`), 'features screened out that onnxruntime fires');
    expectNone(missed(fx.screen, { dtype: 'f16', data: fx.rows.halves }, ROWS, fx.denseDecoded, spec.dSae, (r) => `${label} row ${r}`), 'features screened out that onnxruntime fires');
    expect(fx.dense.some((v) => v > 0)).toBe(true);
  });
});

/** Rows of one kind: entry `i` of each row drawn by `value`. */
interface RowFamily {
  name: string;
  value: (next: () => number, i: number) => number;
}
const FAMILY_ROWS = 8;
const around = (centre: number, halfWidth: number): RowFamily['value'] => (next) => centre + halfWidth * (2 * next() - 1);
/** Rows with one or two non-finite entries, which every normalisation spreads or keeps. */
const nonFinite: RowFamily[] = [
  { name: 'one +Infinity', value: (next, i) => (i === 3 ? Number.POSITIVE_INFINITY : 2 * next() - 1) },
  { name: 'one -Infinity', value: (next, i) => (i === 3 ? Number.NEGATIVE_INFINITY : 2 * next() - 1) },
  { name: '+Infinity and -Infinity', value: (next, i) => (i === 3 ? Number.POSITIVE_INFINITY : i === 4 ? Number.NEGATIVE_INFINITY : 2 * next() - 1) },
  { name: 'one NaN', value: (next, i) => (i === 3 ? Number.NaN : 2 * next() - 1) },
];
/**
 * Rows where float32 normalisation in the graph is far from exact (each of these made the screen
 * miss features before it declined such rows), with ordinary and borderline ones around them.
 */
const illConditioned: Partial<Record<SaeNormalization, RowFamily[]>> = {
  layer_norm: [
    // The mean's rounding, next to the row's spread, shifts the graph's normalised row.
    { name: 'offset 1000 ±0.01', value: around(1000, 0.01) },
    { name: 'offset 10 ±0.001', value: around(10, 0.001) },
    { name: 'offset 10 ±0.01', value: around(10, 0.01) },
    { name: 'offset 10 ±0.1', value: around(10, 0.1) },
    { name: 'offset 1000 ±0.5 on the f16 grid', value: (next) => 1000 + 0.5 * Math.round(2 * next() - 1) },
    // Constant rows: the graph's centred row is its mean's rounding, divided by ~eps.
    { name: 'constant 1/3', value: () => 1 / 3 },
    { name: 'constant 1000.1', value: () => 1000.1 },
    { name: 'constant 0.1', value: () => 0.1 },
    { name: 'constant 0', value: () => 0 },
    // Squares beyond float32's range.
    { name: '±1e20', value: around(0, 1e20) },
  ],
  constant_norm_rescale: [
    { name: '±1e20', value: around(0, 1e20) },
    { name: '±1e-21', value: around(0, 1e-21) },
    { name: '±1e-15', value: around(0, 1e-15) },
    { name: 'constant 0', value: () => 0 },
  ],
  expected_average_only_in: [{ name: '±1e38', value: around(0, 1e38) }],
  none: [{ name: '±1e38', value: around(0, 1e38) }],
};

describe.each(
  architectures.flatMap((architecture, a) =>
    normalizations.flatMap((normalization, n) =>
      // Wide rows only where the normalisation sums over the row (its float32 error grows with dIn).
      (normalization === 'layer_norm' || normalization === 'constant_norm_rescale' ? [16, 768] : [16]).map((dIn) => ({ architecture, normalization, dIn, seed: 8000 + 100 * a + 10 * n + (dIn === 16 ? 0 : 1) })),
    ),
  ),
)('FeatureScreen vs onnxruntime on rows float32 normalises poorly or not at all: $architecture, normalize=$normalization, dIn $dIn', ({ architecture, normalization, dIn, seed }) => {
  it('never screens out a feature onnxruntime fires on, for f32 rows and for the same rows as f16', async () => {
    const spec: ScreenSaeSpec = { architecture, normalization, applyBDecToInput: true, dIn, dSae: 64, k: 12, wEnc: 2, seed };
    const sae = makeSae(spec);
    const screen = FeatureScreen.forPrecision(sae, 'f32');
    if (screen === null) throw new Error('no f32 screen');
    const families = [...(illConditioned[normalization] ?? []), ...nonFinite];
    const rows = families.length * FAMILY_ROWS;
    const next = seededUniform(seed + 1);
    const x = new Float32Array(rows * dIn);
    families.forEach((family, k) => {
      for (let r = 0; r < FAMILY_ROWS; r++) for (let i = 0; i < dIn; i++) x[(k * FAMILY_ROWS + r) * dIn + i] = family.value(next, i);
    });
    const halves = new Uint16Array(x.length);
    f32ToF16(x, halves);
    const decoded = new Float32Array(x.length);
    f16ToF32(halves, decoded);
    const both = new Float32Array(2 * x.length);
    both.set(x, 0);
    both.set(decoded, x.length);
    const dense = await encodeDense(sae, both, 2 * rows);
    const label = (r: number): string => `${architecture}/${normalization}/dIn ${dIn} '${families[Math.floor(r / FAMILY_ROWS)].name}' row ${r % FAMILY_ROWS}`;
    expectNone(missed(screen, { dtype: 'f32', data: x }, rows, dense.subarray(0, rows * 64), 64, label), 'features screened out that onnxruntime fires');
    expectNone(missed(screen, { dtype: 'f16', data: halves }, rows, dense.subarray(rows * 64), 64, label), 'features screened out that onnxruntime fires');
    // Not vacuous: onnxruntime fires features on these rows, infinitely on some.
    expect(dense.some((v) => v > 0)).toBe(true);
    expect(dense.some((v) => v === Number.POSITIVE_INFINITY)).toBe(normalization === 'none' || normalization === 'expected_average_only_in');
  });
});

describe('FeatureScreen: worth having, edges and misuse', () => {
  const fixtures = new Map<string, Fixture>();
  beforeAll(async () => {
    const screened = narrowCases.filter(
      (c) => (c.architecture === 'standard' && c.normalization !== 'expected_average_only_in') || (c.architecture === 'topk' && c.normalization === 'none'),
    );
    for (const spec of screened) {
      fixtures.set(`${spec.architecture}/${spec.normalization}/applyBDecToInput=${spec.applyBDecToInput}`, await fixture(spec, NARROW_LO, NARROW_HI));
    }
  });
  afterAll(() => fixtures.clear());

  it('screens out most inactive features at above = 0 on standard (every normalisation but a pure rescale) and topk SAEs', () => {
    const shares = [...fixtures].map(([name, fx]) => ({ name, ...screenedOutShare(fx) }));
    expect(shares.length).toBe(8);
    // A standard SAE's feature is inactive exactly when its pre-activation is ≤ 0, and these random
    // weights put pre-activations roughly symmetric about 0: about half the pairs are inactive, and
    // all of them but the few within the margin (~1e-4 of Σ|x_c·w|) of 0 have a bound of 0.
    // Measured: 1071/1071 and 1018/1018 (applyBDecToInput true/false); with layer_norm 1020/1022 and
    // 1029/1029, with constant_norm_rescale 979/980 and 1046/1046 (so the screen does not decline
    // ordinary normalised rows). A topk SAE (k = 12 of 64)
    // also zeroes the positive pre-activations outside its top 12, which the screen cannot see: of
    // its 52 inactive features per row only the ~32 negative ones can go, ~60%. Measured: 967/1664
    // (58.1%) and 1040/1664 (62.5%). The bounds (95%, 45%) leave room for other seeds but fail a
    // screen that lets zero-bounded features through (the margin outside the ReLU did: 0%).
    for (const { name, share, inactive } of shares) {
      expect(inactive, name).toBeGreaterThan(ROWS * 10);
      expect(share, `${name}: screened out ${share} of ${inactive} inactive pairs`).toBeGreaterThan(name.startsWith('topk') ? 0.45 : 0.95);
    }
  });

  it('reads an index outside the SAE as a feature of value 0', () => {
    const sae = makeSae(narrowCases[0]);
    const screen = FeatureScreen.forPrecision(sae, 'f32');
    if (screen === null) throw new Error('no f32 screen');
    screen.prepare({ dtype: 'f32', data: uniform(seededUniform(3), sae.config.dIn, -3, 3) }, 0);
    for (const feature of [-1, sae.config.dSae, sae.config.dSae + 7, 1.5, Number.NaN]) {
      expect(screen.mayExceed(feature, -1), `feature ${feature} above -1`).toBe(true);
      expect(screen.mayExceed(feature, -1e-12), `feature ${feature} above -1e-12`).toBe(true);
      expect(screen.mayExceed(feature, 0), `feature ${feature} above 0`).toBe(false);
      expect(screen.mayExceed(feature, 1), `feature ${feature} above 1`).toBe(false);
    }
  });

  it('declines rows the float32 graph cannot normalise reliably (every feature may exceed any above), and still screens exact ones', () => {
    const d = 16;
    const screenOf = (normalization: SaeNormalization): FeatureScreen => {
      const screen = FeatureScreen.forPrecision(makeSae({ ...narrowCases[0], normalization }), 'f32');
      if (screen === null) throw new Error('no f32 screen');
      return screen;
    };
    const row = (value: (i: number) => number): Float32Array => Float32Array.from({ length: d }, (_, i) => value(i));
    const next = seededUniform(11);
    const declined: [SaeNormalization, string, ActivationData][] = [
      ['layer_norm', 'constant 1000.1', { dtype: 'f32', data: row(() => 1000.1) }],
      ['layer_norm', 'offset 1000 ±0.01', { dtype: 'f32', data: row(() => 1000 + 0.02 * (next() - 0.5)) }],
      ['layer_norm', '±1e20', { dtype: 'f32', data: row(() => 1e20 * (next() - 0.5)) }],
      ['constant_norm_rescale', '±1e20', { dtype: 'f32', data: row(() => 1e20 * (next() - 0.5)) }],
      ['constant_norm_rescale', '±1e-21', { dtype: 'f32', data: row(() => 1e-21 * (next() - 0.5)) }],
      ['none', 'a NaN', { dtype: 'f32', data: row((i) => (i === 2 ? Number.NaN : 1)) }],
      ['none', 'an f16 -Infinity', { dtype: 'f16', data: Uint16Array.from({ length: d }, (_, i) => (i === 2 ? 0xfc00 : 0x3c00)) }],
      ['layer_norm', 'an f16 NaN', { dtype: 'f16', data: Uint16Array.from({ length: d }, (_, i) => (i === 2 ? 0x7e00 : 0x3c00)) }],
    ];
    for (const [normalization, name, data] of declined) {
      const screen = screenOf(normalization);
      screen.prepare(data, 0);
      for (let f = 0; f < 64; f++) expect(screen.mayExceed(f, Number.MAX_VALUE), `${normalization} ${name}: feature ${f}`).toBe(true);
      // An index outside the SAE still reads as 0.
      expect(screen.mayExceed(64, 0), `${normalization} ${name}: feature 64`).toBe(false);
    }
    // A zero row is normalised exactly (to 0) by both: screened as usual, some features out at 0.
    for (const normalization of ['layer_norm', 'constant_norm_rescale'] as const) {
      const screen = screenOf(normalization);
      screen.prepare({ dtype: 'f32', data: new Float32Array(d) }, 0);
      const out = Array.from({ length: 64 }, (_, f) => screen.mayExceed(f, 0)).filter((may) => !may).length;
      expect(out, `${normalization} zero row`).toBeGreaterThan(10);
    }
  });

  it('gives no screen for an SAE encoded with f16 weights, and refuses mayExceed before prepare', () => {
    const sae = makeSae(narrowCases[0]);
    expect(FeatureScreen.forPrecision(sae, 'f16')).toBeNull();
    const screen = FeatureScreen.forPrecision(sae, 'f32');
    expect(screen).not.toBeNull();
    expect(() => screen?.mayExceed(0, 0)).toThrow(/before prepare/);
  });
});
