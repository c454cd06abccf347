/**
 * `saegate sae encode` in-process (the process-level smoke test is in test/integration/cli.test.ts):
 * SAELens directories of wide standard and JumpReLU SAEs whose rows fire far more than 64 latents,
 * checked against a float64 reference.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { saeEncode } from '../../../src/cli/sae.js';
import { writeSafetensors } from '../../../src/common/safetensors.js';
import { makeTempDir, removeTempDir } from '../../helpers/fixtures.js';
import { LOUD, makeWideSae, QUIET, WIDE_D_IN, WIDE_D_SAE, wideRows } from '../sae/sae-fixture.js';

interface EncodeOutput {
  top_k: number | null;
  rows: { indices: number[]; values: number[]; l0: number; sq_error: number; fvu: number }[];
}

describe.each([
  { architecture: 'standard' as const, seed: 900 },
  { architecture: 'jumprelu' as const, seed: 950 },
])('saegate sae encode with a $architecture SAE (d_sae 512)', ({ architecture, seed }) => {
  const sae = makeWideSae(architecture, seed);
  const loud = wideRows(sae, 12, LOUD, seed + 1);
  const quiet = wideRows(sae, 4, QUIET, seed + 2);
  const refs = [...loud.refs, ...quiet.refs];
  let dir = '';
  afterEach(() => removeTempDir(dir));

  /** Writes the SAE as a SAELens directory and the rows as a safetensors file; runs the command. */
  async function encode(extra: string[]): Promise<EncodeOutput> {
    dir = makeTempDir('saegate-sae-encode-');
    fs.writeFileSync(
      path.join(dir, 'cfg.json'),
      JSON.stringify({ architecture, d_in: WIDE_D_IN, d_sae: WIDE_D_SAE, dtype: 'float32', hook_name: sae.config.hookName, apply_b_dec_to_input: true, normalize_activations: 'none' }),
    );
    writeSafetensors(path.join(dir, 'sae_weights.safetensors'), {
      W_enc: { dtype: 'F32', shape: [WIDE_D_IN, WIDE_D_SAE], data: sae.W_enc },
      b_enc: { dtype: 'F32', shape: [WIDE_D_SAE], data: sae.b_enc },
      W_dec: { dtype: 'F32', shape: [WIDE_D_SAE, WIDE_D_IN], data: sae.W_dec },
      b_dec: { dtype: 'F32', shape: [WIDE_D_IN], data: sae.b_dec },
      ...(sae.threshold !== null && { threshold: { dtype: 'F32', shape: [WIDE_D_SAE], data: sae.threshold } }),
    });
    const rows = new Float32Array([...loud.rows, ...quiet.rows]);
    writeSafetensors(path.join(dir, 'rows.safetensors'), { rows: { dtype: 'F32', shape: [refs.length, WIDE_D_IN], data: rows } });
    const output = path.join(dir, 'out.json');
    await saeEncode(['--sae', dir, '--input', path.join(dir, 'rows.safetensors'), '--output', output, ...extra]);
    return JSON.parse(fs.readFileSync(output, 'utf8')) as EncodeOutput;
  }

  it('lists every active latent of each row by default, with L0, sq_error and fvu equal to a float64 reference', async () => {
    const out = await encode([]);
    expect(out.top_k).toBeNull();
    expect(out.rows).toHaveLength(refs.length);
    expect(Math.min(...loud.refs.map((ref) => ref.active.length))).toBeGreaterThan(100);
    out.rows.forEach((row, r) => {
      const ref = refs[r];
      expect(row.l0, `row ${r} l0`).toBe(ref.active.length);
      expect(row.indices, `row ${r}`).toHaveLength(ref.active.length);
      expect([...row.indices].sort((a, b) => a - b), `row ${r} active set`).toEqual(ref.active);
      row.values.forEach((v, s) => {
        expect(Math.abs(v - ref.dense[row.indices[s]])).toBeLessThanOrEqual(1e-5 * ref.dense[row.indices[s]] + 1e-5);
        if (s > 0) expect(v).toBeLessThanOrEqual(row.values[s - 1]);
      });
      expect(Math.abs(row.sq_error - ref.sqError), `row ${r} sq_error`).toBeLessThanOrEqual(1e-4 * ref.sqError + 1e-6);
      expect(Math.abs(row.fvu - ref.fvu), `row ${r} fvu`).toBeLessThanOrEqual(1e-4 * ref.fvu + 1e-6);
    });
  });

  it('with --top-k N lists each row\'s N strongest latents, and L0 and the errors stay exact', async () => {
    const out = await encode(['--top-k', '16']);
    expect(out.top_k).toBe(16);
    out.rows.forEach((row, r) => {
      const ref = refs[r];
      const strongest = [...ref.active].sort((a, b) => ref.dense[b] - ref.dense[a]).slice(0, 16);
      expect(row.indices, `row ${r}`).toEqual(strongest);
      expect(row.l0).toBe(ref.active.length);
      expect(Math.abs(row.sq_error - ref.sqError), `row ${r} sq_error`).toBeLessThanOrEqual(1e-4 * ref.sqError + 1e-6);
    });
  });
});
