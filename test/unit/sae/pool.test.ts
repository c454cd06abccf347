import * as ort from 'onnxruntime-node';
import { afterEach, describe, expect, it } from 'vitest';
import { isSaegateError } from '../../../src/common/errors.js';
import { buildSaeEncoderGraph, SaeEncoderNames, saeEncoderOutputNames } from '../../../src/sae/graph.js';
import { float32ToFloat16, float16ToFloat32 } from '../../../src/common/safetensors.js';
import { defaultIntraOpThreads, SaePool, SMALL_SAE_WEIGHTS, type EncodeResult } from '../../../src/sae/pool.js';
import { D_IN, D_SAE, expectExactRows, LOUD, makeSmallSae, makeWideSae, QUIET, rng, uniform, WIDE_D_IN, WIDE_D_SAE, wideRows } from './sae-fixture.js';

/** The list cap of the small-SAE tests: below most rows' L0, so lists are cut. */
const TOP_K = 8;

/** Encodes `rows` with a session created here, straight from the same graph bytes (capped at `topK` unless null). */
async function directEncode(rows: Float32Array, rowCount: number, topK: number | null): Promise<{ width: number; indices: number[]; values: Float32Array; l0: number[]; sqError: Float32Array; fvu: Float32Array }> {
  const session = await ort.InferenceSession.create(buildSaeEncoderGraph(makeSmallSae(), topK === null ? {} : { topK }));
  try {
    const out = await session.run({ [SaeEncoderNames.input]: new ort.Tensor('float32', rows, [rowCount, D_IN]) }, [...saeEncoderOutputNames]);
    return {
      width: out[SaeEncoderNames.indices].dims[1],
      indices: Array.from(out[SaeEncoderNames.indices].data as BigInt64Array, Number),
      values: out[SaeEncoderNames.values].data as Float32Array,
      l0: Array.from(out[SaeEncoderNames.l0].data as BigInt64Array, Number),
      sqError: out[SaeEncoderNames.sqError].data as Float32Array,
      fvu: out[SaeEncoderNames.fvu].data as Float32Array,
    };
  } finally {
    await session.release();
  }
}

function expectClose(actual: Float32Array, expected: Float32Array): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) expect(Math.abs(actual[i] - expected[i])).toBeLessThanOrEqual(1e-5 * Math.max(1, Math.abs(expected[i])));
}

async function expectMatchesDirect(result: EncodeResult, rows: Float32Array, rowCount: number, topK: number | null = TOP_K): Promise<void> {
  const direct = await directEncode(rows, rowCount, topK);
  expect(result.rowCount).toBe(rowCount);
  expect(result.topK).toBe(direct.width);
  expect(result.indices).toBeInstanceOf(Int32Array);
  expect(Array.from(result.indices)).toEqual(direct.indices);
  expect(Array.from(result.l0)).toEqual(direct.l0);
  expectClose(result.values, direct.values);
  expectClose(result.sqError, direct.sqError);
  expectClose(result.fvu, direct.fvu);
}

describe('SaePool', () => {
  let pool: SaePool | null = null;
  afterEach(async () => {
    await pool?.close();
    pool = null;
  });

  it('encodes rows in a worker exactly as a direct onnxruntime session on the same graph does', async () => {
    pool = await SaePool.create({ sae: makeSmallSae(), topK: TOP_K, workers: 2, intraOpThreads: 1 });
    const rowCount = 13;
    const rows = uniform(rng(99), rowCount * D_IN, -2, 2);
    const copy = rows.slice();
    const result = await pool.encode(rows, rowCount);
    // The buffer was transferred to the worker, and comes back with the result.
    expect(rows.length).toBe(0);
    expect(Array.from(result.rows)).toEqual(Array.from(copy));
    // Some features are active, the capped lists are full, and ordered by value.
    expect(result.l0.some((v) => v > 0)).toBe(true);
    expect(result.topK).toBe(TOP_K);
    for (let r = 0; r < rowCount; r++) for (let k = 1; k < TOP_K; k++) expect(result.values[r * TOP_K + k]).toBeLessThanOrEqual(result.values[r * TOP_K + k - 1]);
    await expectMatchesDirect(result, copy, rowCount);
    expect(pool.stats).toMatchObject({ batches: 1, rowsEncoded: rowCount, workerRestarts: 0, rowsLost: 0 });
  });

  it('lists every active feature without a cap, pads rows below the batch\'s largest L0 with index −1 and value 0, and hands the outputs back as views of one exact-size buffer', async () => {
    pool = await SaePool.create({ sae: makeSmallSae(), workers: 1, intraOpThreads: 1 });
    const rowCount = 5;
    const rows = uniform(rng(41), rowCount * D_IN, -2, 2);
    const copy = rows.slice();
    const result = await pool.encode(rows, rowCount);
    const width = result.topK;
    expect(width).toBe(Math.max(...result.l0));
    expect(width).toBeLessThan(D_SAE);
    expect(Math.min(...result.l0)).toBeLessThan(width);
    for (let r = 0; r < rowCount; r++) {
      const l0 = result.l0[r];
      expect(Array.from(result.indices.subarray(r * width, r * width + l0)).every((j) => j >= 0)).toBe(true);
      expect(Array.from(result.indices.subarray(r * width + l0, (r + 1) * width))).toEqual(Array<number>(width - l0).fill(-1));
      expect(Array.from(result.values.subarray(r * width + l0, (r + 1) * width))).toEqual(Array<number>(width - l0).fill(0));
    }
    await expectMatchesDirect(result, copy, rowCount, null);
    // One buffer for the five outputs, back to back: one transfer instead of five, nothing else in it.
    const outputs = [result.indices, result.values, result.l0, result.sqError, result.fvu];
    let offset = 0;
    for (const array of outputs) {
      expect(array.buffer).toBe(result.indices.buffer);
      expect(array.byteOffset).toBe(offset);
      offset += array.byteLength;
    }
    expect(result.indices.buffer.byteLength).toBe(offset);
    expect(result.rows.buffer).not.toBe(result.indices.buffer);
  });

  it('spreads concurrent batches over the workers and resolves each with its own rows', async () => {
    pool = await SaePool.create({ sae: makeSmallSae(), topK: TOP_K, workers: 2, intraOpThreads: 1 });
    const inputs = [3, 5, 1, 4].map((n, i) => ({ n, rows: uniform(rng(200 + i), n * D_IN, -2, 2) }));
    const copies = inputs.map((x) => x.rows.slice());
    const results = await Promise.all(inputs.map((x) => pool!.encode(x.rows, x.n)));
    for (const [i, result] of results.entries()) await expectMatchesDirect(result, copies[i], inputs[i].n);
    expect(pool.stats.batches).toBe(4);
    expect(pool.stats.rowsEncoded).toBe(13);
  });

  it('replaces a crashed worker, rejects its in-flight batches with SAEGATE_ERR_WORKER_EXITED and counts the lost rows', async () => {
    pool = await SaePool.create({ sae: makeSmallSae(), topK: TOP_K, workers: 1, intraOpThreads: 1 });
    const crashed = pool.hosts[0].terminate();
    // Posted after the thread was told to die, so it is lost with this batch in flight.
    const lost = pool.encode(uniform(rng(5), 6 * D_IN, -2, 2), 6);
    const error = await lost.then(
      () => null,
      (e: unknown) => e,
    );
    expect(isSaegateError(error, 'SAEGATE_ERR_WORKER_EXITED')).toBe(true);
    await crashed;
    expect(pool.stats.workerRestarts).toBe(1);
    expect(pool.stats.rowsLost).toBe(6);

    const rows = uniform(rng(6), 4 * D_IN, -2, 2);
    const copy = rows.slice();
    const result = await pool.encode(rows, 4);
    await expectMatchesDirect(result, copy, 4);
    expect(pool.stats.rowsEncoded).toBe(4);
  });

  it('gives a small SAE on the CPU one intra-op thread unless told otherwise, and leaves larger SAEs and CUDA to onnxruntime', async () => {
    const small = makeSmallSae();
    const large = { ...small, config: { ...small.config, dIn: 1024, dSae: SMALL_SAE_WEIGHTS / 1024 + 1 } };
    expect(defaultIntraOpThreads(small, 'cpu')).toBe(1);
    expect(defaultIntraOpThreads(large, 'cpu')).toBe(0);
    expect(defaultIntraOpThreads(small, 'cuda')).toBe(0);
    pool = await SaePool.create({ sae: small, topK: TOP_K });
    expect(pool.intraOpThreads).toBe(1);
    await pool.close();
    pool = await SaePool.create({ sae: small, topK: TOP_K, intraOpThreads: 0 });
    expect(pool.intraOpThreads).toBe(0);
    const rows = uniform(rng(8), 3 * D_IN, -2, 2);
    const copy = rows.slice();
    await expectMatchesDirect(await pool.encode(rows, 3), copy, 3);
  });

  it('rejects an intraOpThreads that is not a positive integer with SAEGATE_ERR_CONFIG', async () => {
    for (const intraOpThreads of [-1, 1.5]) {
      const error = await SaePool.create({ sae: makeSmallSae(), topK: TOP_K, intraOpThreads }).then(
        () => null,
        (e: unknown) => e,
      );
      expect(isSaegateError(error, 'SAEGATE_ERR_CONFIG')).toBe(true);
      expect((error as Error).message).toMatch(/intraOpThreads/);
    }
  });

  it('rejects encodes after close with SAEGATE_ERR_WORKER_EXITED', async () => {
    pool = await SaePool.create({ sae: makeSmallSae(), topK: TOP_K });
    await pool.close();
    const error = await pool.encode(new Float32Array(D_IN), 1).then(
      () => null,
      (e: unknown) => e,
    );
    expect(isSaegateError(error, 'SAEGATE_ERR_WORKER_EXITED')).toBe(true);
  });
});

describe.each([
  { architecture: 'standard' as const, seed: 500 },
  { architecture: 'jumprelu' as const, seed: 600 },
])('SaePool with a $architecture SAE whose rows fire far more than 64 latents (d_sae 512)', ({ architecture, seed }) => {
  const sae = makeWideSae(architecture, seed);
  const loud = wideRows(sae, 24, LOUD, seed + 1);
  const quiet = wideRows(sae, 8, QUIET, seed + 2);
  let pool: SaePool | null = null;
  afterEach(async () => {
    await pool?.close();
    pool = null;
  });

  it('has seeded rows with L0 well above 64 (loud) and below it (quiet)', () => {
    const loudL0 = loud.refs.map((ref) => ref.active.length);
    const quietL0 = quiet.refs.map((ref) => ref.active.length);
    expect(Math.min(...loudL0)).toBeGreaterThan(100);
    expect(Math.max(...loudL0)).toBeGreaterThan(150);
    expect(Math.max(...quietL0)).toBeLessThan(64);
    expect(Math.max(...quietL0)).toBeGreaterThan(0);
  });

  it('lists every active latent of every row, with L0, sq_error, fvu and firing counts equal to a float64 reference', async () => {
    pool = await SaePool.create({ sae, intraOpThreads: 1 });
    // Quiet and loud rows in one batch: the quiet ones are padded to the loud ones' width.
    const rows = new Float32Array([...quiet.rows, ...loud.rows]);
    const result = await pool.encode(rows, quiet.refs.length + loud.refs.length);
    expectExactRows(result, [...quiet.refs, ...loud.refs], WIDE_D_SAE);
    expect(result.topK).toBeGreaterThan(150);
  });

  it('follows L0 from batch to batch: narrow for quiet rows, as wide as the largest L0 when loud rows come, narrow again after', async () => {
    pool = await SaePool.create({ sae, intraOpThreads: 1 });
    const widths: number[] = [];
    for (const { rows, refs } of [quiet, loud, quiet]) {
      const result = await pool.encode(rows.slice(), refs.length);
      expectExactRows(result, refs, WIDE_D_SAE);
      widths.push(result.topK);
    }
    expect(widths[0]).toBeLessThan(64);
    expect(widths[1]).toBeGreaterThan(150);
    expect(widths[2]).toBe(widths[0]);
    // One onnxruntime run per batch, whatever the width.
    expect(pool.stats.batches).toBe(3);
  });

  it('with a list cap, lists only each row\'s strongest latents and keeps L0, sq_error and fvu exact', async () => {
    const cap = 16;
    pool = await SaePool.create({ sae, topK: cap, intraOpThreads: 1 });
    const result = await pool.encode(loud.rows.slice(), loud.refs.length);
    expect(result.topK).toBe(cap);
    loud.refs.forEach((ref, r) => {
      const strongest = [...ref.active].sort((a, b) => ref.dense[b] - ref.dense[a]).slice(0, cap);
      expect(Array.from(result.indices.subarray(r * cap, (r + 1) * cap)), `row ${r}`).toEqual(strongest);
      expect(result.l0[r]).toBe(ref.active.length);
      expect(Math.abs(result.sqError[r] - ref.sqError)).toBeLessThanOrEqual(1e-4 * ref.sqError + 1e-6);
      expect(Math.abs(result.fvu[r] - ref.fvu)).toBeLessThanOrEqual(1e-4 * ref.fvu + 1e-6);
    });
  });

  it('with float16 weights, still lists every active latent and its error is that of the listed ones\' decode, to half precision', async () => {
    pool = await SaePool.create({ sae, weights: 'f16', intraOpThreads: 1 });
    expect(pool.weights).toBe('f16');
    const result = await pool.encode(loud.rows.slice(), loud.refs.length);
    const width = result.topK;
    expect(width).toBe(Math.max(...result.l0));
    expect(width).toBeGreaterThan(150);
    // The graph decodes with float16 decoder rows widened to float32.
    const wDec = float16ToFloat32(float32ToFloat16(sae.W_dec));
    loud.refs.forEach((ref, r) => {
      const slots = Array.from(result.indices.subarray(r * width, (r + 1) * width));
      const listed = slots.filter((j) => j >= 0);
      expect(listed.length, `row ${r}`).toBe(result.l0[r]);
      // Within float16 rounding of the float64 reference: a few latents near a boundary may flip.
      expect(Math.abs(result.l0[r] - ref.active.length)).toBeLessThanOrEqual(3);
      const recon = Float64Array.from(sae.b_dec);
      listed.forEach((j, s) => {
        for (let i = 0; i < WIDE_D_IN; i++) recon[i] += result.values[r * width + s] * wDec[j * WIDE_D_IN + i];
      });
      let sq = 0;
      for (let i = 0; i < WIDE_D_IN; i++) sq += (loud.rows[r * WIDE_D_IN + i] - recon[i]) ** 2;
      // Wide lists are decoded densely, in half precision like the encoder product: activations
      // rounded to float16 (2^-11 relative) move the error by about 1e-4 of itself.
      expect(Math.abs(result.sqError[r] - sq), `row ${r} sq_error`).toBeLessThanOrEqual(2e-3 * sq + 1e-6);
    });
  });
});
