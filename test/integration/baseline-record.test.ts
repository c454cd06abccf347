/**
 * `saegate baseline record` on stories260K: one process-level run (the file loads with readBaseline,
 * its provenance names the model, SAE, hook and counts, and checkCompatible accepts it for the same
 * SAE and refuses another hook), then the bad inputs in-process, each a typed error naming what
 * was wrong. The SAE is a seeded synthetic TopK SAE of stories260K's width: the file's contents,
 * not the SAE's quality, are under test here (test/integration/drift-stories.test.ts trains one).
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { baselineRecord } from '../../src/cli/baseline-record.js';
import { checkCompatible, readBaseline, type Baseline } from '../../src/monitor/baseline.js';
import { saeWeightsHash } from '../../src/monitor/sae-hash.js';
import { loadSae } from '../../src/sae/load.js';
import type { SaeWeights } from '../../src/sae/types.js';
import { writeSaeLensDirectory } from '../../src/lab/train/trainer.js';
import { runCliToExit } from '../helpers/cli.js';
import { expectSaegateError, expectSaegateRejection } from '../helpers/errors.js';
import { hasSharedModels, makeTempDir, needsSharedModels, stories260K } from '../helpers/fixtures.js';
import { seededStandardSae } from '../helpers/sae.js';

const HOOK = 'blocks.3.hook_resid_post';
const model = ['--model', stories260K.model, '--tokenizer', stories260K.tokenizer];
const version = (createRequire(import.meta.url)('../../package.json') as { version: string }).version;

function topKSae(dIn: number, hook: string, seed: number): SaeWeights {
  const sae = seededStandardSae({ dIn, dSae: 256, hook, seed, scales: { W_enc: 0.5, b_enc: 0.1, W_dec: 0.5, b_dec: 0.1 } });
  return { ...sae, config: { ...sae.config, architecture: 'topk', k: 8, modelName: 'stories260K' } };
}

const STORIES = [
  'Once upon a time, there was a little girl named Lily. She loved to play outside.',
  'Tom had a red ball. He liked to throw it to his dog, Max.',
  'One day, a big bird flew over the house. The bird was very happy.',
  'Sue and her mom went to the park. They saw a duck in the pond.',
  'The sun was hot, so Ben sat under a tree and ate his apple.',
  'Mia found a shiny stone. She showed it to her friend and they smiled.',
  'A little cat wanted to climb the tall tree, but it was too scared.',
  'Grandpa told a story about a brave knight and a kind dragon.',
  'The boy built a tower of blocks. Then it fell down and he laughed.',
  'Anna baked a cake with her dad. It was sweet and yummy.',
];

describe.skipIf(!hasSharedModels)(needsSharedModels('saegate baseline record on stories260K'), () => {
  let dir: string;
  let saeDir: string;
  let corpus: string;

  beforeAll(() => {
    dir = makeTempDir('baseline-record-');
    saeDir = path.join(dir, 'sae-l3');
    writeSaeLensDirectory(saeDir, topKSae(64, HOOK, 5));
    corpus = path.join(dir, 'stories.jsonl');
    fs.writeFileSync(corpus, STORIES.map((text, id) => `${JSON.stringify({ id, text })}\n`).join(''));
  });

  afterAll(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  describe('a recorded baseline', () => {
    let baseline: Baseline;
    let stderr: string;
    const out = (): string => path.join(dir, 'baseline.json');

    beforeAll(async () => {
      const run = await runCliToExit(['baseline', 'record', '--sae', saeDir, '--corpus', corpus, '--out', out(), '--documents', '8', '--max-tokens', '12', '--seed', '3', ...model], { deadlineMs: 120_000 });
      stderr = run.err;
      expect(run.code, run.err).toBe(0);
      baseline = readBaseline(out());
    }, 130_000);

    it('holds one document per recorded corpus document, with provenance naming model, SAE, hook and counts', () => {
      const sae = loadSae(saeDir);
      expect(baseline.documents).toHaveLength(8);
      expect(baseline.documents.every((d) => d.tokens === 12)).toBe(true);
      expect(baseline.provenance).toMatchObject({
        model: 'stories260K',
        sae: { id: 'sae-l3', hash: saeWeightsHash(sae) },
        hook: HOOK,
        dSae: 256,
        tokens: 96,
        documents: 8,
        saegateVersion: version,
      });
      expect(baseline.provenance.sae.hash).toMatch(/^sha256:[0-9a-f]{64}$/);
      expect(Math.abs(Date.now() - Date.parse(baseline.provenance.createdAt))).toBeLessThan(600_000);
      // A TopK SAE: every row lists at most k latents, so a document's firing counts sum to ≤ 8 per token.
      for (const doc of baseline.documents) expect(doc.counts.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(8 * doc.tokens);
      expect(stderr).not.toContain('warning');
      expect(stderr).toMatch(/saegate baseline record: 8 documents, 96 tokens of stories260K at blocks\.3\.hook_resid_post through sae-l3 \(d_sae 256\)/);
    });

    it('is accepted by checkCompatible for the same SAE and refused for another hook or other weights', () => {
      const sae = loadSae(saeDir);
      const same = { model: 'stories260K', saeId: 'sae-l3', saeHash: saeWeightsHash(sae), hook: HOOK, dSae: 256 };
      expect(() => checkCompatible(baseline, same, out())).not.toThrow();
      expectSaegateError(() => checkCompatible(baseline, { ...same, hook: 'blocks.2.hook_resid_post' }, out()), 'SAEGATE_ERR_BASELINE_MISMATCH', 'hook: expected "blocks.2.hook_resid_post", baseline has "blocks.3.hook_resid_post"');
      const other = topKSae(64, HOOK, 6);
      expectSaegateError(() => checkCompatible(baseline, { ...same, saeHash: saeWeightsHash(other) }, out()), 'SAEGATE_ERR_BASELINE_MISMATCH', 'sae.hash');
    });
  });

  it("records the server's model id, and warns when the SAE's cfg.json names another model", async () => {
    const foreign = path.join(dir, 'sae-foreign');
    const sae = topKSae(64, HOOK, 9);
    writeSaeLensDirectory(foreign, { ...sae, config: { ...sae.config, modelName: 'gpt2-small' } });
    const out = path.join(dir, 'foreign.json');
    const written: string[] = [];
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
      written.push(String(chunk));
      return true;
    });
    try {
      await baselineRecord(['--sae', foreign, '--corpus', corpus, '--out', out, '--max-tokens', '8', ...model]);
    } finally {
      spy.mockRestore();
    }
    expect(readBaseline(out).provenance.model).toBe('stories260K');
    expect(written.join('')).toContain("warning: the SAE's cfg.json names model 'gpt2-small' but the model server calls itself 'stories260K'");
  }, 60_000);

  describe('bad inputs', () => {
    const args = (overrides: Record<string, string>): string[] => {
      const flags = { sae: saeDir, corpus, out: path.join(dir, 'unused.json'), ...overrides };
      return [...Object.entries(flags).flatMap(([k, v]) => [`--${k}`, v]), ...model];
    };

    it('refuses an empty or one-document corpus before starting the model', async () => {
      const empty = path.join(dir, 'empty.jsonl');
      fs.writeFileSync(empty, '');
      await expectSaegateRejection(() => baselineRecord(args({ corpus: empty })), 'SAEGATE_ERR_CORPUS_FILE', empty, 'no documents');
      const single = path.join(dir, 'single.jsonl');
      fs.writeFileSync(single, `${JSON.stringify({ text: STORIES[0] })}\n`);
      await expectSaegateRejection(() => baselineRecord(args({ corpus: single })), 'SAEGATE_ERR_CORPUS_FILE', single, 'one document', 'at least 2');
    });

    it('refuses an unreadable corpus, a missing SAE and an unwritable output, naming the file', async () => {
      const missing = path.join(dir, 'missing.jsonl');
      await expectSaegateRejection(() => baselineRecord(args({ corpus: missing })), 'SAEGATE_ERR_CORPUS_FILE', missing);
      await expectSaegateRejection(() => baselineRecord(args({ sae: path.join(dir, 'no-sae') })), 'SAEGATE_ERR_SAE_FILE', 'no-sae', 'does not exist');
      const out = path.join(dir, 'no-such-dir', 'baseline.json');
      await expectSaegateRejection(() => baselineRecord(args({ out })), 'SAEGATE_ERR_BASELINE_FILE', out, 'cannot write');
    });

    it("refuses an SAE whose d_in is not the model's d_model", async () => {
      const wide = path.join(dir, 'sae-wide');
      writeSaeLensDirectory(wide, topKSae(96, HOOK, 7));
      await expectSaegateRejection(() => baselineRecord(args({ sae: wide })), 'SAEGATE_ERR_SAE_FILE', 'd_in 96', "d_model 64");
    }, 60_000);

    it('refuses an SAE on a hook the model lacks', async () => {
      const deep = path.join(dir, 'sae-deep');
      writeSaeLensDirectory(deep, topKSae(64, 'blocks.9.hook_resid_post', 8));
      await expectSaegateRejection(() => baselineRecord(args({ sae: deep })), 'SAEGATE_ERR_COLLECT_SERVER', 'blocks.9.hook_resid_post');
    }, 60_000);
  });
});
