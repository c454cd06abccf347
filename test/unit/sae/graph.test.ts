import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { isSaegateError } from '../../../src/common/errors.js';
import { buildSaeEncoderGraph, fitsFloat16, SaeEncoderNames, saeEncoderOutputNames } from '../../../src/sae/graph.js';
import type { SaeArchitecture, SaeNormalization, SaeWeights } from '../../../src/sae/types.js';
import { seededUniform as rng } from '../../../src/common/random.js';
import { makeSaeOf } from './sae-fixture.js';

const D_IN = 16;
const D_SAE = 64;
/** The `topk` architecture's own k. */
const ARCH_K = 12;
/** A list cap below every row's L0 here (checked below), so every capped list is cut. */
const CAP = 6;
const ROWS = 7;


function makeSae(architecture: SaeArchitecture, normalization: SaeNormalization, applyBDecToInput: boolean, seed: number): SaeWeights {
  return makeSaeOf({ architecture, normalization, applyBDecToInput, dIn: D_IN, dSae: D_SAE, k: ARCH_K, wEnc: 2, seed, source: `test-${architecture}-${normalization}` });
}

interface ReferenceRow {
  /** All active features by value, descending. */
  order: number[];
  dense: Float64Array;
  /** Smallest distance of any quantity to a decision boundary (0, threshold, k-th value, ties). */
  margin: number;
  xn: Float64Array;
}

/** Float64 reference of the SAELens encoder for one row, written from the equations with plain loops. */
function referenceEncode(sae: SaeWeights, row: Float32Array): ReferenceRow {
  const { dIn, dSae, normalizeActivations, applyBDecToInput, architecture } = sae.config;
  const x = Float64Array.from(row);
  let xn = x;
  if (normalizeActivations === 'constant_norm_rescale') {
    let ss = 0;
    for (const v of x) ss += v * v;
    const coeff = Math.sqrt(dIn) / Math.sqrt(ss);
    xn = x.map((v) => v * coeff);
  } else if (normalizeActivations === 'layer_norm') {
    const mu = x.reduce((a, b) => a + b, 0) / dIn;
    let ss = 0;
    for (const v of x) ss += (v - mu) * (v - mu);
    const std = Math.sqrt(ss / (dIn - 1)); // torch.std: unbiased
    xn = x.map((v) => (v - mu) / (std + 1e-5));
  } else if (normalizeActivations === 'expected_average_only_in' && sae.config.scalingFactor !== null) {
    const s = sae.config.scalingFactor;
    xn = x.map((v) => v * s);
  }
  const xc = xn.map((v, i) => (applyBDecToInput ? v - sae.b_dec[i] : v));
  const matmul = (bias: (j: number) => number): Float64Array => {
    const out = new Float64Array(dSae);
    for (let j = 0; j < dSae; j++) {
      let acc = bias(j);
      for (let i = 0; i < dIn; i++) acc += xc[i] * sae.W_enc[i * dSae + j];
      out[j] = acc;
    }
    return out;
  };

  const dense = new Float64Array(dSae);
  const boundaryDistances: number[] = [];
  if (architecture === 'gated' && sae.gated) {
    const { b_gate, r_mag, b_mag } = sae.gated;
    const gatePre = matmul((j) => b_gate[j]);
    // Magnitude path exactly as SAELens writes it: x' · (W_enc ⊙ exp(r_mag)) + b_mag.
    const magPre = new Float64Array(dSae);
    for (let j = 0; j < dSae; j++) {
      let acc = b_mag[j];
      for (let i = 0; i < dIn; i++) acc += xc[i] * (sae.W_enc[i * dSae + j] * Math.exp(r_mag[j]));
      magPre[j] = acc;
      dense[j] = (gatePre[j] > 0 ? 1 : 0) * Math.max(0, acc);
      boundaryDistances.push(Math.abs(gatePre[j]), Math.abs(acc));
    }
  } else {
    const pre = matmul((j) => sae.b_enc[j]);
    if (architecture === 'topk') {
      const byPre = [...pre.keys()].sort((a, b) => pre[b] - pre[a]);
      const k = sae.config.k ?? 0;
      for (let r = 0; r < k; r++) dense[byPre[r]] = Math.max(0, pre[byPre[r]]);
      boundaryDistances.push(pre[byPre[k - 1]] - pre[byPre[k]]);
      for (let r = 0; r < k; r++) boundaryDistances.push(Math.abs(pre[byPre[r]]));
    } else {
      for (let j = 0; j < dSae; j++) {
        const relu = Math.max(0, pre[j]);
        boundaryDistances.push(Math.abs(pre[j]));
        if (architecture === 'jumprelu' && sae.threshold) {
          dense[j] = pre[j] > sae.threshold[j] ? relu : 0;
          boundaryDistances.push(Math.abs(pre[j] - sae.threshold[j]));
        } else {
          dense[j] = relu;
        }
      }
    }
  }
  const order = [...dense.keys()].filter((j) => dense[j] > 0).sort((a, b) => dense[b] - dense[a]);
  for (let r = 1; r < order.length; r++) boundaryDistances.push(dense[order[r - 1]] - dense[order[r]]);
  return { order, dense, margin: Math.min(...boundaryDistances), xn };
}

interface ExpectedRow {
  indices: number[];
  values: number[];
  l0: number;
  sqError: number;
  fvu: number;
}

/**
 * Reference outputs for a list `width` slots wide: the strongest `width` active features listed (the
 * rest padded), and L0 and the errors from every active feature, a dense decode.
 */
function expectedOutputs(sae: SaeWeights, ref: ReferenceRow, width: number): ExpectedRow {
  const { dIn, dSae } = sae.config;
  const kept = ref.order.slice(0, width);
  const recon = Float64Array.from(sae.b_dec);
  for (let j = 0; j < dSae; j++) for (let i = 0; i < dIn; i++) recon[i] += ref.dense[j] * sae.W_dec[j * dIn + i];
  let sqError = 0;
  for (let i = 0; i < dIn; i++) sqError += (ref.xn[i] - recon[i]) ** 2;
  const mean = ref.xn.reduce((a, b) => a + b, 0) / dIn;
  let energy = 0;
  for (const v of ref.xn) energy += (v - mean) ** 2;
  const pad = width - kept.length;
  return {
    indices: [...kept, ...Array<number>(pad).fill(-1)],
    values: [...kept.map((j) => ref.dense[j]), ...Array<number>(pad).fill(0)],
    l0: ref.order.length,
    sqError,
    fvu: sqError / energy,
  };
}

/**
 * Seeded rows, skipping any whose outcome hangs on a float32 rounding: a pre-activation within
 * 1e-3 of a ReLU/threshold/gate boundary, or two candidate features within 1e-3 of each other.
 */
function makeRows(sae: SaeWeights, seed: number): { x: Float32Array; refs: ReferenceRow[] } {
  const next = rng(seed);
  const x = new Float32Array(ROWS * D_IN);
  const refs: ReferenceRow[] = [];
  while (refs.length < ROWS) {
    // Offset and scale far from 1 so that every normalisation mode changes the features.
    const row = Float32Array.from({ length: D_IN }, () => 0.4 + 3 * (next() * 2 - 1));
    const ref = referenceEncode(sae, row);
    if (ref.margin < 1e-3) continue;
    x.set(row, refs.length * D_IN);
    refs.push(ref);
  }
  return { x, refs };
}

/** 1e-5 relative, with a 1e-6 absolute floor for quantities that are themselves near zero. */
function expectClose(actual: number, expected: number, what: string): void {
  const tolerance = 1e-5 * Math.abs(expected) + 1e-6;
  expect(Math.abs(actual - expected), `${what}: got ${actual}, expected ${expected}`).toBeLessThanOrEqual(tolerance);
}

async function runGraph(bytes: Uint8Array, x: Float32Array, rows: number): Promise<ort.InferenceSession.OnnxValueMapType> {
  const session = await ort.InferenceSession.create(bytes, { logSeverityLevel: 3 });
  try {
    expect(session.inputNames).toEqual([SaeEncoderNames.input]);
    expect([...session.outputNames].sort()).toEqual([...saeEncoderOutputNames].sort());
    return await session.run({ [SaeEncoderNames.input]: new ort.Tensor('float32', x, [rows, D_IN]) });
  } finally {
    await session.release();
  }
}

const architectures: SaeArchitecture[] = ['standard', 'topk', 'jumprelu', 'gated'];
const normalizations: SaeNormalization[] = ['none', 'constant_norm_rescale', 'layer_norm', 'expected_average_only_in'];
const cases = architectures.flatMap((architecture, a) =>
  normalizations.flatMap((normalization, n) =>
    [true, false].map((applyBDecToInput, b) => ({ architecture, normalization, applyBDecToInput, seed: 1000 + 100 * a + 10 * n + b })),
  ),
);

describe.each(cases)('SAE encoder graph: $architecture, normalize=$normalization, applyBDecToInput=$applyBDecToInput', ({ architecture, normalization, applyBDecToInput, seed }) => {
  const sae = makeSae(architecture, normalization, applyBDecToInput, seed);
  const { x, refs } = makeRows(sae, seed + 1);

  // Uncapped, the width is the batch's largest L0 and every list is its row's full active set; a
  // cap below every L0 cuts every list to CAP and leaves L0 and the errors exact. The error comes
  // from the sparse decode (gathered decoder rows) or the dense one (f · W_dec): both are checked.
  it.each([
    { topK: undefined, decode: 'sparse', sparseDecodeMaxWidth: D_SAE },
    { topK: undefined, decode: 'dense', sparseDecodeMaxWidth: 0 },
    { topK: CAP, decode: 'default', sparseDecodeMaxWidth: undefined },
  ])('matches the float64 reference with list cap $topK and the $decode decode: ordered features, L0 and the exact reconstruction error', async ({ topK, sparseDecodeMaxWidth }) => {
    const out = await runGraph(
      buildSaeEncoderGraph(sae, { ...(topK !== undefined && { topK }), ...(sparseDecodeMaxWidth !== undefined && { sparseDecodeMaxWidth }) }),
      x,
      ROWS,
    );
    const width = Math.min(topK ?? Infinity, Math.max(...refs.map((ref) => ref.order.length)));
    const indices = out[SaeEncoderNames.indices].data as BigInt64Array;
    const values = out[SaeEncoderNames.values].data as Float32Array;
    const l0 = out[SaeEncoderNames.l0].data as BigInt64Array;
    const sqError = out[SaeEncoderNames.sqError].data as Float32Array;
    const fvu = out[SaeEncoderNames.fvu].data as Float32Array;
    expect(out[SaeEncoderNames.indices].dims).toEqual([ROWS, width]);
    expect(out[SaeEncoderNames.values].dims).toEqual([ROWS, width]);
    expect(out[SaeEncoderNames.l0].dims).toEqual([ROWS]);

    refs.forEach((ref, r) => {
      const want = expectedOutputs(sae, ref, width);
      expect([...indices.subarray(r * width, (r + 1) * width)].map(Number), `row ${r} indices`).toEqual(want.indices);
      want.values.forEach((v, s) => expectClose(values[r * width + s], v, `row ${r} value ${s}`));
      expect(Number(l0[r]), `row ${r} l0`).toBe(want.l0);
      expectClose(sqError[r], want.sqError, `row ${r} sq_error`);
      expectClose(fvu[r], want.fvu, `row ${r} fvu`);
    });
  });
});

describe('SAE encoder graph: shapes and limits', () => {
  it('covers padding (rows below their batch\'s largest L0) and a cut in every capped list in the seeded cases', () => {
    const l0sOf = ({ architecture, normalization, applyBDecToInput, seed }: (typeof cases)[number]): number[] =>
      makeRows(makeSae(architecture, normalization, applyBDecToInput, seed), seed + 1).refs.map((ref) => ref.order.length);
    const batches = cases.map(l0sOf);
    // Every batch but the topk ones (whose rows all have L0 = k here) has a row shorter than its
    // widest one, so the uncapped case checks padding.
    const unpadded = cases.filter((c, i) => Math.min(...batches[i]) === Math.max(...batches[i])).map((c) => c.architecture);
    expect(unpadded.filter((architecture) => architecture !== 'topk')).toEqual([]);
    expect(batches.flat().filter((l0) => l0 <= CAP)).toEqual([]);
  });

  it('takes any number of rows with one session, and a row encodes the same alone as in a batch (where its list is padded to the batch width)', async () => {
    const sae = makeSae('jumprelu', 'layer_norm', true, 7);
    const { x, refs } = makeRows(sae, 8);
    const session = await ort.InferenceSession.create(buildSaeEncoderGraph(sae), { logSeverityLevel: 3 });
    try {
      const batch = await session.run({ x: new ort.Tensor('float32', x, [ROWS, D_IN]) });
      const single = await session.run({ x: new ort.Tensor('float32', x.slice(3 * D_IN, 4 * D_IN), [1, D_IN]) });
      const width = batch.feature_indices.dims[1];
      const l0 = refs[3].order.length;
      expect(width).toBe(Math.max(...refs.map((ref) => ref.order.length)));
      expect(l0).toBeLessThan(width);
      expect(single.feature_indices.dims).toEqual([1, l0]);
      const row = [...(batch.feature_indices.data as BigInt64Array).subarray(3 * width, 4 * width)];
      expect(row).toEqual([...(single.feature_indices.data as BigInt64Array), ...Array<bigint>(width - l0).fill(-1n)]);
      expectClose((single.sq_error.data as Float32Array)[0], (batch.sq_error.data as Float32Array)[3], 'sq_error');
    } finally {
      await session.release();
    }
  });

  it('lists one padded slot per row when no feature fires anywhere in the batch', async () => {
    const sae = makeSae('standard', 'none', true, 5);
    // b_enc far below any pre-activation these rows reach: nothing fires.
    const silent = { ...sae, b_enc: new Float32Array(D_SAE).fill(-1e6) };
    const out = await runGraph(buildSaeEncoderGraph(silent), new Float32Array(ROWS * D_IN).fill(0.5), ROWS);
    expect(out[SaeEncoderNames.indices].dims).toEqual([ROWS, 1]);
    expect([...(out[SaeEncoderNames.indices].data as BigInt64Array)]).toEqual(Array<bigint>(ROWS).fill(-1n));
    expect([...(out[SaeEncoderNames.l0].data as BigInt64Array)]).toEqual(Array<bigint>(ROWS).fill(0n));
  });

  it('rejects a list cap that is not a positive integer and a topk SAE without k, with SAEGATE_ERR_CONFIG naming the source', () => {
    const sae = makeSae('standard', 'none', true, 3);
    expect(() => buildSaeEncoderGraph(sae, { topK: D_SAE + 1 })).not.toThrow();
    expect(() => buildSaeEncoderGraph(sae, { sparseDecodeMaxWidth: -1 })).toThrow(/sparseDecodeMaxWidth/);
    for (const topK of [0, -3, 2.5]) {
      expect(() => buildSaeEncoderGraph(sae, { topK })).toThrow(/test-standard-none/);
      try {
        buildSaeEncoderGraph(sae, { topK });
      } catch (error) {
        expect(isSaegateError(error, 'SAEGATE_ERR_CONFIG')).toBe(true);
      }
    }
    const topk = makeSae('topk', 'none', true, 4);
    expect(() => buildSaeEncoderGraph({ ...topk, config: { ...topk.config, k: null } }, { topK: 4 })).toThrow(/needs k/);
  });
});

describe('SAE encoder graph with float16 weights (the CUDA default)', () => {
  it.each(architectures)('%s: float16 weights give the float32 graph’s features and errors to half-precision accuracy', async (architecture) => {
    const sae = makeSae(architecture, 'none', true, 21);
    const { x } = makeRows(sae, 22);
    const f32 = await runGraph(buildSaeEncoderGraph(sae, { topK: CAP }), x, ROWS);
    const f16 = await runGraph(buildSaeEncoderGraph(sae, { topK: CAP, weights: 'f16' }), x, ROWS);
    // The sparse decode in f16 (the default above decodes these lists densely).
    const f16Sparse = await runGraph(buildSaeEncoderGraph(sae, { topK: CAP, weights: 'f16', sparseDecodeMaxWidth: D_SAE }), x, ROWS);
    const v32 = f32.feature_values.data as Float32Array;
    const v16 = f16.feature_values.data as Float32Array;
    const scale = Math.max(...v32.map(Math.abs));
    for (let i = 0; i < v32.length; i++) expect(Math.abs(v16[i] - v32[i])).toBeLessThan(2e-2 * scale);
    // The same features, allowing a swap between near-equal neighbours.
    const i32 = [...(f32.feature_indices.data as BigInt64Array)];
    const i16 = [...(f16.feature_indices.data as BigInt64Array)];
    const same = i32.filter((v, i) => v === i16[i]).length;
    expect(same / i32.length).toBeGreaterThan(0.85);
    const fvu32 = f32.fvu.data as Float32Array;
    const fvu16 = f16.fvu.data as Float32Array;
    const fvu16Sparse = f16Sparse.fvu.data as Float32Array;
    for (let r = 0; r < ROWS; r++) {
      expect(Math.abs(fvu16[r] - fvu32[r])).toBeLessThan(0.05 * Math.max(fvu32[r], 0.1));
      expect(Math.abs(fvu16Sparse[r] - fvu32[r])).toBeLessThan(0.05 * Math.max(fvu32[r], 0.1));
    }
  });

  it('keeps float32 where the weights do not fit float16', () => {
    const sae = makeSae('standard', 'none', true, 3);
    expect(fitsFloat16(sae)).toBe(true);
    sae.W_dec[5] = 1e6;
    expect(fitsFloat16(sae)).toBe(false);
  });
});
