import path from 'node:path';
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { writeSaeLensDirectory } from '../../../src/lab/train/trainer.js';
import { saeWeightsHash } from '../../../src/monitor/sae-hash.js';
import { loadSae } from '../../../src/sae/load.js';
import type { SaeWeights } from '../../../src/sae/types.js';
import { makeTempDir } from '../../helpers/fixtures.js';
import { seededStandardSae } from '../../helpers/sae.js';

function topK(seed: number): SaeWeights {
  const sae = seededStandardSae({ dIn: 8, dSae: 32, hook: 'blocks.1.hook_resid_post', seed, scales: { W_enc: 1, b_enc: 0.1, W_dec: 1, b_dec: 0.1 } });
  return { ...sae, config: { ...sae.config, architecture: 'topk', k: 4 } };
}

describe('saeWeightsHash', () => {
  it('is a sha256 of the weights: equal for the same weights written and loaded again, different when one value changes', () => {
    const sae = topK(1);
    const dir = makeTempDir('sae-hash-');
    try {
      writeSaeLensDirectory(path.join(dir, 'a'), sae);
      const loaded = loadSae(path.join(dir, 'a'));
      expect(saeWeightsHash(sae)).toMatch(/^sha256:[0-9a-f]{64}$/);
      expect(saeWeightsHash(loaded)).toBe(saeWeightsHash(sae));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    const changed = { ...sae, W_dec: Float32Array.from(sae.W_dec) };
    changed.W_dec[17] += 1e-3;
    expect(saeWeightsHash(changed)).not.toBe(saeWeightsHash(sae));
    expect(saeWeightsHash(topK(2))).not.toBe(saeWeightsHash(sae));
    expect(saeWeightsHash({ ...sae, config: { ...sae.config, k: 5 } })).not.toBe(saeWeightsHash(sae));
  });
});
