import { describe, expect, it } from 'vitest';
import { isSaegateError } from '../../../src/common/errors.js';
import { createSession, loadOrt, runSession } from '../../../src/common/ort.js';
import { buildSaeEncoderGraph, SaeEncoderNames, saeEncoderOutputNames } from '../../../src/sae/graph.js';
import { D_IN, makeSmallSae } from '../sae/sae-fixture.js';

describe('runSession', () => {
  it('returns the fetched outputs of a run, and turns an onnxruntime run error into SAEGATE_ERR_RUNTIME with the original as cause', async () => {
    const ort = await loadOrt();
    const session = await createSession(buildSaeEncoderGraph(makeSmallSae(), { topK: 4 }), { device: 'cpu', intraOpThreads: 1 });
    try {
      const out = await runSession(session, { [SaeEncoderNames.input]: new ort.Tensor('float32', new Float32Array(2 * D_IN), [2, D_IN]) }, [SaeEncoderNames.l0]);
      expect(Object.keys(out)).toEqual([SaeEncoderNames.l0]);
      expect(out[SaeEncoderNames.l0].dims).toEqual([2]);

      // One value too many per row: the graph's MatMul refuses the shape.
      const wrong = { [SaeEncoderNames.input]: new ort.Tensor('float32', new Float32Array(2 * (D_IN + 1)), [2, D_IN + 1]) };
      const error = await runSession(session, wrong, [...saeEncoderOutputNames]).then(
        () => null,
        (e: unknown) => e,
      );
      expect(isSaegateError(error, 'SAEGATE_ERR_RUNTIME')).toBe(true);
      const cause = (error as Error).cause;
      expect(cause).toBeInstanceOf(Error);
      expect((error as Error).message).toBe(`model runtime failed: ${(cause as Error).message}`);
    } finally {
      await session.release();
    }
  });
});
