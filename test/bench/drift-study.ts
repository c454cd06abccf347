/**
 * The stories260K drift study (issue 10): a baseline recorded on stories prompts with a trained
 * SAE, then held-out stories windows (the null: how often each calibrated threshold is crossed)
 * and shifted windows (random-token prompts, aidreams260K text, the stories prompts steered at an
 * earlier hook). Prints, per case and score, p5/p50/p95, the calibrated threshold at the window
 * size and the fraction of windows above it. Run: `npx tsx test/bench/drift-study.ts [--quick] [--dump DIR]` (`--dump` writes the
 * baseline and each case's recorded documents as baseline files into DIR, for a closer look).
 * What it does step by step: test/helpers/drift-study.ts. Needs ../shared/models.
 */
import { formatDriftStudy, runDriftStudy, type DriftStudyOptions } from '../helpers/drift-study.js';
import { hasSharedModels, sharedModelsSkipReason } from '../helpers/fixtures.js';

if (!hasSharedModels) {
  process.stderr.write(`drift study skipped: ${sharedModelsSkipReason}\n`);
  process.exit(0);
}

const quick = process.argv.includes('--quick');
const dumpAt = process.argv.indexOf('--dump');
const options: DriftStudyOptions = {
  hook: 'blocks.3.hook_resid_post',
  steerHook: 'blocks.1.hook_resid_post',
  steerScales: [0.1, 0.25, 0.5],
  trainDocuments: quick ? 150 : 600,
  baselineDocuments: quick ? 300 : 1200,
  heldOutDocuments: quick ? 150 : 600,
  shiftedDocuments: quick ? 60 : 200,
  documentTokens: 64,
  windowTokens: 256,
  windows: quick ? 100 : 400,
  nullRepeats: quick ? 2 : 5,
  nullResplits: quick ? 10 : 50,
  alpha: 0.01,
  sae: { dSae: 512, k: 8, steps: quick ? 200 : 1000, batch: 1024, lr: 4e-3 },
  seed: 7,
  log: (line) => process.stderr.write(`${line}\n`),
  ...(dumpAt > 0 && process.argv[dumpAt + 1] !== undefined && { dumpDir: process.argv[dumpAt + 1] }),
};

const result = await runDriftStudy(options);
process.stdout.write(`${formatDriftStudy(result, options)}\n`);
