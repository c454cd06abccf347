/**
 * The feature page end to end: a synthetic corpus through the accumulator, labels from a YAML file,
 * the report written and read back, rendered, and opened from a file:// URL in headless Chromium.
 * One browser for the file; each test opens its own page.
 */
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FeatureAccumulator, type FeatureDocument } from '../../src/lab/features/accumulator.js';
import { renderFeaturePage } from '../../src/lab/features/html.js';
import { applyLabels, readFeatureLabels } from '../../src/lab/features/labels.js';
import { readFeatureReport, writeFeatureReport, type FeatureReport } from '../../src/lab/features/report.js';
import { launchChromium, needsChromium, skipBrowserTests } from '../helpers/chromium.js';
import { makeTempDir, removeTempDir } from '../helpers/fixtures.js';

const D_SAE = 300;

/** [from, to) as an array. */
function range(from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_, i) => from + i);
}
const WORDS = ['Once', ' upon', ' a', ' time', ',', ' there', ' was', ' a', ' little', ' dog', ' named', ' "', 'Max', '"', '.', '\n', 'He', ' liked', ' to', ' run'];

/**
 * Deterministic corpus: 40 documents of 30 tokens, 4 slots per token.
 * - feature 0 fires on every token at 0.25 (dense);
 * - feature 1 + w fires on word w (20 words: features 1 … 20), strongest late in each document;
 * - one of features 40 … 259 fires on each token, rotating (sparse, about 5 tokens each);
 * - features 21 … 39 and 260 … 299 never fire (59 dead).
 */
function corpus(): FeatureDocument[] {
  const docs: FeatureDocument[] = [];
  for (let d = 0; d < 40; d++) {
    const rows = 30;
    const k = 4;
    const indices = new Int32Array(rows * k).fill(-1);
    const values = new Float32Array(rows * k);
    const tokens = [];
    for (let p = 0; p < rows; p++) {
      const word = (p + d) % WORDS.length;
      tokens.push({ id: word, text: WORDS[word] });
      indices[p * k] = 0;
      values[p * k] = 0.25;
      indices[p * k + 1] = 1 + word;
      values[p * k + 1] = 1 + p / 10 + d / 100;
      indices[p * k + 2] = 40 + ((d * rows + p) % 220);
      values[p * k + 2] = 2 + ((d * 7 + p) % 13) / 10;
    }
    docs.push({ id: `story-${d}`, tokens, indices, values, k });
  }
  return docs;
}

const LABELS = `# test labels
17: quotation marks
${1 + WORDS.indexOf(' dog')}:
  label: the word dog
  notes: fires on " dog"
  tags: [animals]
299: never fires
`;

describe.skipIf(skipBrowserTests)(needsChromium('feature page in Chromium'), () => {
  const dir = makeTempDir('saegate-features-page-');
  let browser: Browser;
  let report: FeatureReport;
  let pageUrl: string;

  beforeAll(async () => {
    const accumulator = new FeatureAccumulator({ dSae: D_SAE, denseThreshold: 0.2 });
    for (const doc of corpus()) accumulator.addDocument(doc);
    const labelsFile = path.join(dir, 'features.yaml');
    fs.writeFileSync(labelsFile, LABELS);
    const labelled = applyLabels(
      accumulator.finish({
        sae: { path: '/saes/stories/blocks.4', hookName: 'blocks.4.hook_resid_post', dIn: 64, dSae: D_SAE, architecture: 'topk', k: 4 },
        model: 'stories260K',
        corpus: { path: 'stories.jsonl' },
        createdAt: '2026-01-02T03:04:05.000Z',
      }),
      readFeatureLabels(labelsFile, { dSae: D_SAE }),
    );
    const reportFile = path.join(dir, 'features.json');
    writeFeatureReport(reportFile, labelled);
    report = readFeatureReport(reportFile);
    const htmlFile = path.join(dir, 'features.html');
    fs.writeFileSync(htmlFile, renderFeaturePage(report));
    pageUrl = pathToFileURL(htmlFile).href;
    browser = await launchChromium();
  });

  afterAll(async () => {
    await browser?.close();
    removeTempDir(dir);
  });

  /** Opens the page; the returned list collects console errors, page errors and non-file requests. */
  async function openPage(url = pageUrl): Promise<{ page: Page; problems: string[] }> {
    const page = await browser.newPage();
    const problems: string[] = [];
    page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
    page.on('console', (message) => {
      if (message.type() === 'error' || message.type() === 'warning') problems.push(`console ${message.type()}: ${message.text()}`);
    });
    page.on('request', (request) => {
      if (request.url() !== url) problems.push(`request: ${request.url()}`);
    });
    await page.goto(url);
    await page.waitForSelector('body[data-ready="true"]', { timeout: 15_000 });
    return { page, problems };
  }

  const cardIndices = (page: Page): Promise<number[]> => page.$$eval('section.feature', (cards) => cards.map((card) => Number((card as HTMLElement).dataset.index)));
  const pageInfo = (page: Page): Promise<string> => page.$eval('#page-info', (el) => el.textContent ?? '');

  it('the synthetic report has dead, dense and labelled features to show', () => {
    expect(report.summary.dead).toBe(59);
    expect(report.features.filter((f) => f.dead).map((f) => f.index)).toEqual([...range(21, 40), ...range(260, 300)]);
    expect(report.features.filter((f) => f.dense).map((f) => f.index)).toEqual([0]);
    expect(report.features[17].label).toBe('quotation marks');
  });

  it('shows the summary header and the first 50 features, with no errors or network requests', async () => {
    const { page, problems } = await openPage();
    try {
      const field = (name: string): Promise<string> => page.$eval(`#summary [data-field="${name}"] dd`, (el) => el.textContent ?? '');
      expect(await page.$eval('#summary h1', (el) => el.textContent)).toBe('SAE features \u00b7 blocks.4.hook_resid_post');
      expect(await field('sae')).toBe('/saes/stories/blocks.4');
      expect(await field('model')).toBe('stories260K');
      expect(await field('architecture')).toBe('topk (k = 4)');
      expect(await field('shape')).toBe('64 \u00d7 300');
      expect(await field('corpus')).toBe('stories.jsonl \u00b7 40 documents \u00b7 1200 tokens');
      expect(await field('dead')).toBe('59 (19.7%)');
      expect(await field('dense')).toBe('1 (frequency > 20%)');
      expect(await field('meanL0')).toBe(String(Number(report.summary.meanL0.toPrecision(4))));
      expect(await cardIndices(page)).toEqual(range(0, 50));
      expect(await pageInfo(page)).toBe('page 1 of 6 \u00b7 300 features');
      expect(await page.$eval('#prev', (el) => (el as HTMLButtonElement).disabled)).toBe(true);
      expect(problems).toEqual([]);
    } finally {
      await page.close();
    }
  });

  it('pages forward and back', async () => {
    const { page, problems } = await openPage();
    try {
      await page.click('#next');
      expect(await cardIndices(page)).toEqual(range(50, 100));
      expect(await pageInfo(page)).toBe('page 2 of 6 \u00b7 300 features');
      for (let i = 0; i < 4; i++) await page.click('#next');
      expect(await cardIndices(page)).toEqual(range(250, 300));
      expect(await page.$eval('#next', (el) => (el as HTMLButtonElement).disabled)).toBe(true);
      await page.click('#prev');
      expect((await cardIndices(page))[0]).toBe(200);
      expect(problems).toEqual([]);
    } finally {
      await page.close();
    }
  });

  it('filters by label substring and by index, and hides dead features', async () => {
    const { page, problems } = await openPage();
    try {
      await page.fill('#filter', 'QUOTATION');
      expect(await cardIndices(page)).toEqual([17]);
      expect(await page.$eval('section.feature[data-index="17"] .label', (el) => el.textContent)).toBe('quotation marks');
      expect(await pageInfo(page)).toBe('page 1 of 1 \u00b7 1 of 300 features');

      await page.fill('#filter', 'animals'); // a tag
      expect(await cardIndices(page)).toEqual([1 + WORDS.indexOf(' dog')]);

      await page.fill('#filter', '299');
      expect(await cardIndices(page)).toEqual([299]);
      const dead = await page.$eval('section.feature[data-index="299"]', (card) => ({
        badge: card.querySelector('.badge.dead')?.textContent,
        label: card.querySelector('.label')?.textContent,
        examples: card.querySelectorAll('.example').length,
        note: card.querySelector('.examples .none')?.textContent,
      }));
      expect(dead).toEqual({ badge: 'dead', label: 'never fires', examples: 0, note: 'Never fired on the corpus.' });

      await page.fill('#filter', '');
      await page.check('#hide-dead');
      expect(await pageInfo(page)).toBe('page 1 of 5 \u00b7 241 of 300 features');
      await page.check('#hide-dense');
      expect((await cardIndices(page))[0]).toBe(1);
      expect(problems).toEqual([]);
    } finally {
      await page.close();
    }
  });

  it('sorts by max activation and by frequency', async () => {
    const { page, problems } = await openPage();
    try {
      const byMax = [...report.features].sort((a, b) => b.maxActivation - a.maxActivation || a.index - b.index).map((f) => f.index);
      await page.selectOption('#sort', 'max');
      expect(await cardIndices(page)).toEqual(byMax.slice(0, 50));
      await page.selectOption('#sort', 'frequency');
      expect((await cardIndices(page))[0]).toBe(0);
      expect(problems).toEqual([]);
    } finally {
      await page.close();
    }
  });

  it('marks the activating token and shades tokens by activation', async () => {
    const feature = report.features[1 + WORDS.indexOf(' dog')];
    const best = feature.examples[0];
    const { page, problems } = await openPage();
    try {
      await page.fill('#filter', String(feature.index));
      const seen = await page.$eval(`section.feature[data-index="${feature.index}"]`, (card) => {
        const example = card.querySelector('.example') as HTMLElement;
        const alpha = (el: Element | null): number => {
          const colour = el === null ? '' : getComputedStyle(el).backgroundColor;
          const parts = /rgba?\(([^)]*)\)/.exec(colour)?.[1].split(',').map(Number) ?? [];
          return parts.length === 4 ? parts[3] : parts.length === 3 ? 1 : 0;
        };
        const marked = example.querySelector('.tok.marked');
        const quiet = example.querySelector('.tok[data-act="0"]');
        return {
          markedText: marked?.textContent,
          markedAct: (marked as HTMLElement | null)?.dataset.act,
          markedWeight: marked === null ? '' : getComputedStyle(marked).fontWeight,
          markedAlpha: alpha(marked),
          quietAlpha: alpha(quiet),
          quietExists: quiet !== null,
          tokens: example.querySelectorAll('.tok').length,
          histogramBins: card.querySelectorAll('.hist .bin').length,
          frequency: card.querySelector('[data-field="frequency"] dd')?.textContent,
        };
      });
      expect(seen.markedText).toBe(best.tokens[best.marked]);
      expect(seen.markedText).toBe(' dog');
      expect(Number(seen.markedAct)).toBe(best.activation);
      expect(seen.markedWeight).toBe('700');
      expect(seen.quietExists).toBe(true);
      expect(seen.markedAlpha).toBeGreaterThan(0.5);
      expect(seen.markedAlpha).toBeGreaterThan(seen.quietAlpha);
      expect(seen.quietAlpha).toBe(0);
      expect(seen.tokens).toBe(best.tokens.length);
      expect(seen.histogramBins).toBe(16);
      expect(seen.frequency).toBe(`${Number((feature.frequency * 100).toPrecision(3))}% (${feature.firing} tokens)`);
      // The newline detector's marked token shows the newline as ↵, dimmed as whitespace.
      const newlineFeature = 1 + WORDS.indexOf('\n');
      await page.fill('#filter', String(newlineFeature));
      const newline = await page.$eval(`section.feature[data-index="${newlineFeature}"] .tok.marked`, (tok) => ({ text: tok.textContent, className: tok.className, title: (tok as HTMLElement).title }));
      expect(newline).toEqual({ text: '\u21b5', className: 'tok marked ws', title: expect.stringContaining('"\\n"') as unknown });
      expect(problems).toEqual([]);
    } finally {
      await page.close();
    }
  });

  it('keeps a 16384-feature report to one page of cards', async () => {
    const wide = new FeatureAccumulator({ dSae: 16384 });
    for (const doc of corpus()) wide.addDocument(doc);
    const file = path.join(dir, 'wide.html');
    fs.writeFileSync(file, renderFeaturePage(wide.finish({ sae: { path: 'wide', hookName: 'blocks.0.hook_resid_pre', dIn: 64, dSae: 16384, architecture: 'standard' }, model: 'm', corpus: { path: 'c' } })));
    const { page, problems } = await openPage(pathToFileURL(file).href);
    try {
      expect(await page.$$eval('section.feature', (cards) => cards.length)).toBe(50);
      expect(await pageInfo(page)).toBe('page 1 of 328 \u00b7 16384 features');
      await page.fill('#filter', '16383');
      expect(await cardIndices(page)).toEqual([16383]);
      expect(problems).toEqual([]);
    } finally {
      await page.close();
    }
  });
});
