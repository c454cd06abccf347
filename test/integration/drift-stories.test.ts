/**
 * The drift study at CI size (the full-size numbers: `npx tsx test/bench/drift-study.ts`, quoted in
 * docs/monitor.md): a TopK SAE trained on stories260K at blocks.3, a baseline recorded on stories
 * prompts with the code `saegate baseline record` runs, then windows of held-out stories (the
 * null), random-token text, aidreams260K text and steered stories prompts, each judged against the
 * calibrated thresholds. Held-out windows may exceed a threshold at the stated false-alarm rate α,
 * with a binomial margin (not a fixed count); shifted windows must exceed one.
 */
import { describe, expect, it } from 'vitest';
import { runDriftStudy, SCORE_NAMES, type CaseResult, type DriftStudyOptions, type DriftStudyResult } from '../helpers/drift-study.js';
import { hasSharedModels, needsSharedModels } from '../helpers/fixtures.js';

const options: DriftStudyOptions = {
  hook: 'blocks.3.hook_resid_post',
  steerHook: 'blocks.1.hook_resid_post',
  steerScales: [0.25],
  trainDocuments: 100,
  baselineDocuments: 240,
  heldOutDocuments: 120,
  shiftedDocuments: 40,
  documentTokens: 48,
  windowTokens: 192,
  windows: 100,
  alpha: 0.01,
  sae: { dSae: 256, k: 8, steps: 150, batch: 512, lr: 4e-3 },
  seed: 11,
};

/** P(X > c) for X ~ Binomial(n, p). */
function binomialTail(n: number, p: number, c: number): number {
  let term = (1 - p) ** n;
  let cdf = term;
  for (let k = 1; k <= c; k++) {
    term *= ((n - k + 1) / k) * (p / (1 - p));
    cdf += term;
  }
  return Math.max(0, 1 - cdf);
}

/** The most alarms among n null windows that a false-alarm rate of α explains, at a one-in-a-thousand margin. */
function allowedAlarms(n: number, alpha: number): number {
  let c = 0;
  while (binomialTail(n, alpha, c) > 0.001) c++;
  return c;
}

function byName(result: DriftStudyResult, prefix: string): CaseResult {
  const found = result.cases.find((c) => c.name.startsWith(prefix));
  if (!found) throw new Error(`no case '${prefix}' in ${result.cases.map((c) => c.name).join(', ')}`);
  return found;
}

describe.skipIf(!hasSharedModels)(needsSharedModels('drift on stories260K with a trained SAE'), () => {
  let result: DriftStudyResult;

  it('runs the study', async () => {
    result = await runDriftStudy(options);
    expect(result.baseline.documents).toBe(options.baselineDocuments);
    // The SAE learned something (an untrained one has FVU ≈ 1), or drift scores would mean little.
    expect(result.baseline.meanFvu).toBeLessThan(0.3);
  }, 240_000);

  it('keeps held-out stories windows under each threshold but for the stated false-alarm rate', () => {
    const heldOut = byName(result, 'held-out');
    const allowed = allowedAlarms(heldOut.windows, options.alpha);
    expect(allowed).toBe(5); // 100 windows at α = 1 %: P(more than 5) < 0.001
    for (const score of SCORE_NAMES) expect(heldOut.scores[score].above, `${score}: ${JSON.stringify(heldOut.scores[score])}`).toBeLessThanOrEqual(allowed);
    // The family-wise any holds the same α for all scores together.
    expect(heldOut.familyAbove).toBeLessThanOrEqual(allowed);
    // And well under on the whole: the median held-out window sits below every threshold.
    for (const score of SCORE_NAMES) expect(heldOut.scores[score].p50).toBeLessThanOrEqual(heldOut.scores[score].threshold);
  });

  it.each(['random tokens', 'aidreams260K text', 'steered'])('raises %s windows above the thresholds', (name) => {
    const shifted = byName(result, name);
    expect(shifted.anyAbove).toBe(shifted.windows);
    expect(shifted.familyAbove).toBeGreaterThanOrEqual(0.95 * shifted.windows);
    expect(shifted.scores.jsd.above).toBeGreaterThanOrEqual(0.95 * shifted.windows);
    expect(shifted.scores.meanFvu.above).toBeGreaterThanOrEqual(0.95 * shifted.windows);
  });
});
