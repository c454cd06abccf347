import * as ort from 'onnxruntime-node';
import { afterEach, describe, expect, it } from 'vitest';
import { isSaegateError } from '../../../src/common/errors.js';
import { buildSaeEncoderGraph, SaeEncoderNames, saeEncoderOutputNames } from '../../../src/sae/graph.js';
import { defaultIntraOpThreads, SaePool, SMALL_SAE_WEIGHTS, type EncodeResult } from '../../../src/sae/pool.js';
import { D_IN, D_SAE, makeSmallSae, rng, uniform } from './sae-fixture.js';

const TOP_K = 8;

/** Encodes `rows` with a session created here, straight from the same graph bytes. */
async function directEncode(rows: Float32Array, rowCount: number, topK = TOP_K): Promise<{ indices: number[]; values: Float32Array; l0: number[]; sqError: Float32Array; fvu: Float32Array }> {
  const session = await ort.InferenceSession.create(buildSaeEncoderGraph(makeSmallSae(), { topK }));
  try {
    const out = await session.run({ [SaeEncoderNames.input]: new ort.Tensor('float32', rows, [rowCount, D_IN]) }, [...saeEncoderOutputNames]);
    return {
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

async function expectMatchesDirect(result: EncodeResult, rows: Float32Array, rowCount: number, topK = TOP_K): Promise<void> {
  const direct = await directEncode(rows, rowCount, topK);
  expect(result.rowCount).toBe(rowCount);
  expect(result.topK).toBe(topK);
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
    // Some features are active and the top-K list is ordered by value.
    expect(result.l0.some((v) => v > 0)).toBe(true);
    for (let r = 0; r < rowCount; r++) for (let k = 1; k < TOP_K; k++) expect(result.values[r * TOP_K + k]).toBeLessThanOrEqual(result.values[r * TOP_K + k - 1]);
    await expectMatchesDirect(result, copy, rowCount);
    expect(pool.stats).toMatchObject({ batches: 1, rowsEncoded: rowCount, workerRestarts: 0, rowsLost: 0 });
  });

  it('reports unused slots as index −1 and value 0, like the graph, and hands back arrays that own their whole buffers', async () => {
    // topK = d_sae: every row has fewer active features than slots, so every row is padded.
    pool = await SaePool.create({ sae: makeSmallSae(), topK: D_SAE, workers: 1, intraOpThreads: 1 });
    const rowCount = 5;
    const rows = uniform(rng(41), rowCount * D_IN, -2, 2);
    const copy = rows.slice();
    const result = await pool.encode(rows, rowCount);
    for (let r = 0; r < rowCount; r++) {
      const l0 = result.l0[r];
      expect(l0).toBeLessThan(D_SAE);
      expect(Array.from(result.indices.subarray(r * D_SAE + l0, (r + 1) * D_SAE))).toEqual(Array<number>(D_SAE - l0).fill(-1));
      expect(Array.from(result.values.subarray(r * D_SAE + l0, (r + 1) * D_SAE))).toEqual(Array<number>(D_SAE - l0).fill(0));
    }
    await expectMatchesDirect(result, copy, rowCount, D_SAE);
    // Exact-size buffers: a subscriber may transfer them on without sending anything else along.
    for (const array of [result.indices, result.values, result.l0, result.sqError, result.fvu]) {
      expect(array.byteOffset).toBe(0);
      expect(array.buffer.byteLength).toBe(array.byteLength);
    }
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
