/**
 * The SAE training workflow as a user runs it, on stories260K: `model sample` writes a corpus,
 * `sae train` collects activations through the reference server's tap and trains a small TopK SAE
 * (SAELens output + report), `sae features` writes the feature report and page, and the page is
 * opened in headless Chromium. The SAE is small and briefly trained (this runs in CI on 2 cores);
 * the full-size numbers are in the closing note and docs/sae-training.md.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SeededRandom } from '../../src/common/random.js';
import { writeSafetensors } from '../../src/common/safetensors.js';
import { loadSae } from '../../src/sae/load.js';
import { readFeatureReport, type FeatureReport } from '../../src/lab/features/report.js';
import type { TrainReport } from '../../src/lab/train/report.js';
import { launchChromium, needsChromium, skipBrowserTests } from '../helpers/chromium.js';
import { runCliToExit } from '../helpers/cli.js';

/** Runs the CLI to completion (killed if it outlives the beforeAll's budget); returns its exit code and stderr. */
async function run(args: string[]): Promise<{ code: number | null; stderr: string }> {
  const { code, err } = await runCliToExit(args, { deadlineMs: 590_000 });
  return { code, stderr: err };
}
import { hasSharedModels, makeTempDir, needsSharedModels, stories260K } from '../helpers/fixtures.js';

const model = ['--model', stories260K.model, '--tokenizer', stories260K.tokenizer];

describe.skipIf(!hasSharedModels)(needsSharedModels('saegate sae train / sae features on stories260K'), () => {
  let dir: string;
  let corpus: string;
  let saeDir: string;
  let report: TrainReport;
  let features: FeatureReport;

  beforeAll(async () => {
    dir = makeTempDir('sae-train-cli-');
    corpus = path.join(dir, 'corpus.jsonl');
    saeDir = path.join(dir, 'sae');
    const sample = await run(['model', 'sample', '--n', '160', '--max-tokens', '160', '--seed', '3', '--out', corpus, ...model]);
    expect(sample.code, sample.stderr).toBe(0);
    const train = await run(['sae', 'train', '--corpus', corpus, '--out', saeDir, '--hook', 'blocks.2.hook_resid_post', '--k', '8', '--steps', '300', '--batch', '1024', '--lr', '4e-3', '--splice-documents', '8', '--checkpoint-every', '100', ...model]);
    expect(train.code, train.stderr).toBe(0);
    report = JSON.parse(fs.readFileSync(path.join(saeDir, 'report.json'), 'utf8')) as TrainReport;
    const feats = await run(['sae', 'features', '--sae', saeDir, '--corpus', corpus, '--max-documents', '80', ...model]);
    expect(feats.code, feats.stderr).toBe(0);
    features = readFeatureReport(path.join(saeDir, 'features.json'));
  }, 600_000);

  afterAll(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('writes a SAELens directory the SAE engine loads, bound to the hook, with a checkpoint', () => {
    const sae = loadSae(saeDir);
    expect(sae.config).toMatchObject({ architecture: 'topk', k: 8, dIn: 64, dSae: 1024, hookName: 'blocks.2.hook_resid_post', modelName: 'stories260K' });
    expect(fs.existsSync(path.join(saeDir, 'checkpoint.safetensors'))).toBe(true);
  });

  it('reports held-out FVU, L0, dead latents and CE loss recovered, and the SAE explains most of the variance', () => {
    expect(report.data.trainDocuments! + report.data.heldOutDocuments!).toBe(160);
    expect(report.data.heldOutRows).toBeGreaterThan(0);
    expect(report.heldOut.l0).toBeGreaterThan(7);
    expect(report.heldOut.l0).toBeLessThanOrEqual(8);
    // 300 short steps: far from converged, but far from an untrained SAE (FVU ≈ 1).
    expect(report.heldOut.fvu).toBeLessThan(0.3);
    expect(report.splice).not.toBeNull();
    expect(report.splice!.ceAblated).toBeGreaterThan(report.splice!.ceSpliced);
    expect(report.splice!.ceSpliced).toBeGreaterThan(report.splice!.ceClean - 0.05);
    expect(report.splice!.ceRecovered).toBeGreaterThan(0.8);
    const md = fs.readFileSync(path.join(saeDir, 'report.md'), 'utf8');
    expect(md).toContain('CE loss recovered');
    expect(md).toContain(report.heldOut.fvu.toFixed(4));
  });

  it('finds features whose top contexts share one activating token', () => {
    expect(features.features).toHaveLength(1024);
    expect(features.corpus.documents).toBe(80);
    // A feature is "token-like" when at least 8 of its 10 top examples mark the same token text.
    const tokenLike = features.features.filter((f) => {
      if (f.examples.length < 10) return false;
      const counts = new Map<string, number>();
      for (const e of f.examples) counts.set(e.tokens[e.marked], (counts.get(e.tokens[e.marked]) ?? 0) + 1);
      return Math.max(...counts.values()) >= 8;
    });
    expect(tokenLike.length).toBeGreaterThanOrEqual(5);
    for (const f of features.features) {
      expect(f.dead).toBe(f.firing === 0);
      for (const e of f.examples) expect(e.activations[e.marked]).toBeCloseTo(e.activation, 4);
    }
  });

  it.skipIf(skipBrowserTests)(needsChromium('the feature page renders in headless Chromium with feature cards, marked tokens and paging'), async () => {
    const browser = await launchChromium();
    try {
      const page = await browser.newPage();
      const errors: string[] = [];
      page.on('console', (m) => {
        if (m.type() === 'error') errors.push(m.text());
      });
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(`file://${path.join(saeDir, 'features.html')}`);
      await page.waitForSelector('section.feature');
      expect(await page.locator('section.feature').count()).toBe(50);
      const firstLive = features.features.find((f) => f.examples.length > 0)!;
      const card = page.locator(`section.feature[data-index="${firstLive.index}"]`);
      await expect(card.locator('.tok.marked').first().textContent()).resolves.toBe(firstLive.examples[0].tokens[firstLive.examples[0].marked].replace(/\n/g, '↵'));
      expect(await page.textContent('body')).toContain('blocks.2.hook_resid_post');
      expect(errors).toEqual([]);
    } finally {
      await browser.close();
    }
  });
});

describe('saegate sae train from an activations file', () => {
  it('trains one SAE per k with a frontier report, splits rows, and says why CE loss recovered was not measured', async () => {
    const dir = makeTempDir('sae-train-rows-');
    try {
      const random = new SeededRandom(5);
      const dirs = Array.from({ length: 24 }, () => Float32Array.from({ length: 16 }, () => random.next() - 0.5));
      const rows = new Float32Array(3000 * 16);
      for (let r = 0; r < 3000; r++) for (let a = 0; a < 2; a++) {
        const d = dirs[Math.floor(random.next() * dirs.length)];
        const w = 1 + random.next();
        for (let i = 0; i < 16; i++) rows[r * 16 + i] += w * d[i];
      }
      writeSafetensors(path.join(dir, 'rows.safetensors'), { acts: { dtype: 'F32', shape: [3000, 16], data: rows } });
      const out = path.join(dir, 'sae');
      const train = await run(['sae', 'train', '--activations', path.join(dir, 'rows.safetensors'), '--out', out, '--hook', 'blocks.1.hook_resid_post', '--k', '2,4', '--d-sae', '48', '--steps', '60', '--batch', '256', '--lr', '1e-2']);
      expect(train.code, train.stderr).toBe(0);
      for (const k of [2, 4]) {
        const sae = loadSae(path.join(out, `k${k}`));
        expect(sae.config).toMatchObject({ k, dIn: 16, dSae: 48, hookName: 'blocks.1.hook_resid_post' });
        const report = JSON.parse(fs.readFileSync(path.join(out, `k${k}`, 'report.json'), 'utf8')) as TrainReport;
        expect(report.data).toMatchObject({ trainRows: 2700, heldOutRows: 300, trainDocuments: null });
        expect(report.splice).toBeNull();
        expect(report.spliceSkipped).toContain('activations file');
        expect(report.heldOut.fvu).toBeLessThan(0.5);
      }
      const frontier = fs.readFileSync(path.join(out, 'report.md'), 'utf8');
      expect(frontier).toContain('FVU–L0 frontier');
      expect(frontier).toMatch(/\| 2 \| 0\.\d{4} \|/);
      expect(frontier).toMatch(/\| 4 \| 0\.\d{4} \|/);

      const both = await run(['sae', 'train', '--activations', path.join(dir, 'rows.safetensors'), '--corpus', 'x.jsonl', '--out', out]);
      expect(both.code).toBe(2);
      expect(both.stderr).toContain('exactly one of --corpus and --activations');
      const resume = await run(['sae', 'train', '--activations', path.join(dir, 'rows.safetensors'), '--out', path.join(dir, 'fresh'), '--resume', '--checkpoint-every', '10']);
      expect(resume.code).toBe(1);
      expect(resume.stderr).toMatch(/SAEGATE_ERR_TRAIN_CHECKPOINT.*no checkpoint to resume from/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 180_000);
});
