import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FeatureAccumulator } from '../../../../src/lab/features/accumulator.js';
import { featurePageCsp, jsonForScriptBlock, renderFeaturePage } from '../../../../src/lab/features/html.js';
import { applyLabels } from '../../../../src/lab/features/labels.js';
import { pageScript, pageStyle } from '../../../../src/lab/features/page-assets.js';
import type { FeatureReport } from '../../../../src/lab/features/report.js';
import { launchChromium, needsChromium, skipBrowserTests } from '../../../helpers/chromium.js';
import { expectSaegateError } from '../../../helpers/errors.js';
import { makeTempDir, removeTempDir } from '../../../helpers/fixtures.js';
import { reportMeta, sparseDocument } from './fixtures.js';

// Untrusted text in every place the page shows data: each tries to end the JSON block, open a
// comment, or inject markup, and sets a global if it ever runs.
const hostileTokens = [
  '</script><script>window.__pwned = 1</script>',
  '<!--<script>window.__pwned = 2</script>',
  '</SCRIPT ><script>window.__pwned = 3</script>',
  ' \u2028&amp;\u2029 ',
];
const hostileLabel = '<img src=x onerror="window.__pwned = 4">';
const hostileDocument = '"><script>window.__pwned = 5</script>';

function hostileReport(): FeatureReport {
  const acc = new FeatureAccumulator({ dSae: 2 });
  acc.addDocument(sparseDocument(hostileDocument, [{ 0: 1 }, { 0: 2 }, { 0: 3, 1: 1 }, { 0: 4 }], { texts: hostileTokens }));
  const report = acc.finish({ ...reportMeta(2), model: '<b>model</b>' });
  return applyLabels(report, new Map([[0, { label: hostileLabel, notes: '</style><style>body{display:none}</style>', tags: ['<i>tag</i>'] }]]));
}

/** The text of the first element `<tag …attributes>…</tag>` in `html`. */
function elementText(html: string, open: string, tag: string): string {
  const start = html.indexOf(open);
  expect(start).toBeGreaterThanOrEqual(0);
  const from = start + open.length;
  return html.slice(from, html.indexOf(`</${tag}>`, from));
}

describe('renderFeaturePage (markup)', () => {
  const report = hostileReport();
  const html = renderFeaturePage(report);

  it('embeds JSON with no character that could end the script block or open a comment', () => {
    const json = jsonForScriptBlock(report);
    expect(json).not.toMatch(/[<>&\u2028\u2029]/);
    expect(JSON.parse(json)).toEqual(report);
  });

  it('has exactly two script elements, and the data block parses back to the report', () => {
    expect(html.match(/<script/gi)).toHaveLength(2);
    const data = elementText(html, '<script type="application/json" id="report">', 'script');
    expect(JSON.parse(data)).toEqual(report);
  });

  it('allows only its own inline script and style by hash, and nothing from the network', () => {
    const meta = /<meta http-equiv="Content-Security-Policy" content="([^"]*)">/.exec(html);
    expect(meta).not.toBeNull();
    const csp = (meta as RegExpExecArray)[1].replace(/&#39;/g, "'");
    expect(csp).toBe(featurePageCsp);
    const hash = (text: string): string => createHash('sha256').update(text).digest('base64');
    expect(csp).toContain(`script-src 'sha256-${hash(elementText(html, '<script>', 'script'))}'`);
    expect(csp).toContain(`style-src 'sha256-${hash(elementText(html, '<style>', 'style'))}'`);
    expect(csp).toContain("default-src 'none'");
    expect(html).not.toMatch(/https?:\/\//);
  });

  it('keeps its inline assets free of sequences that would end them early', () => {
    for (const asset of [pageScript, pageStyle]) expect(asset).not.toMatch(/<\/script|<\/style|<!--/i);
  });

  it('escapes the title', () => {
    const titled = renderFeaturePage({ ...report, sae: { ...report.sae, hookName: '<b>&hook' } });
    expect(titled).toContain('<title>saegate features \u00b7 &#60;b&#62;&#38;hook</title>');
  });

  it('refuses a page size that is not a positive integer', () => {
    expectSaegateError(() => renderFeaturePage(report, { pageSize: 0 }), 'SAEGATE_ERR_FEATURE_ARGUMENT', 'pageSize');
  });
});

describe.skipIf(skipBrowserTests)(needsChromium('renderFeaturePage in Chromium: untrusted text stays text'), () => {
  let browser: Browser;
  const dir = makeTempDir('saegate-html-');
  const report = hostileReport();

  beforeAll(async () => {
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
    removeTempDir(dir);
  });

  /** Opens `html` from a file and returns the page plus the errors it logged. */
  async function open(name: string, html: string): Promise<{ page: Page; errors: string[] }> {
    const file = path.join(dir, name);
    fs.writeFileSync(file, html);
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (error) => errors.push(error.message));
    page.on('console', (message) => {
      if (message.type() === 'error') errors.push(message.text());
    });
    await page.goto(pathToFileURL(file).href);
    await page.waitForSelector('body[data-ready="true"]', { timeout: 10_000 });
    return { page, errors };
  }

  // Without the CSP the escaping alone must hold: a script that got out would run there.
  const variants: [string, string][] = [
    ['with its Content-Security-Policy', renderFeaturePage(report)],
    ['with the Content-Security-Policy removed', renderFeaturePage(report).replace(/<meta http-equiv="Content-Security-Policy"[^>]*>/, '')],
  ];

  it.each(variants)('runs no injected script and shows hostile text verbatim, %s', async (variant, html) => {
    if (variant.includes('removed')) expect(html).not.toContain('Content-Security-Policy');
    const { page, errors } = await open(`${variant.replace(/\W+/g, '-')}.html`, html);
    try {
      const seen = await page.evaluate(() => {
        const w = window as unknown as { __pwned?: unknown };
        const card = document.querySelector('section.feature[data-index="0"]') as HTMLElement;
        const example = card.querySelector('.example') as HTMLElement;
        return {
          pwned: w.__pwned,
          scripts: document.scripts.length,
          images: document.querySelectorAll('img').length,
          styles: document.querySelectorAll('style').length,
          label: card.querySelector('.label')?.textContent,
          notes: card.querySelector('.notes')?.textContent,
          tag: card.querySelector('.tag')?.textContent,
          document: example.dataset.document,
          tokens: [...example.querySelectorAll('.tok')].map((tok) => tok.textContent),
          marked: example.querySelector('.tok.marked')?.textContent,
          markedTitle: (example.querySelector('.tok.marked') as HTMLElement).title,
          model: document.querySelector('[data-field="model"] dd')?.textContent,
          bodyVisible: getComputedStyle(document.body).display !== 'none',
        };
      });
      expect(seen.pwned).toBeUndefined();
      expect(seen.scripts).toBe(2);
      expect(seen.images).toBe(0);
      expect(seen.styles).toBe(1);
      expect(seen.bodyVisible).toBe(true);
      expect(seen.label).toBe(hostileLabel);
      expect(seen.notes).toBe('</style><style>body{display:none}</style>');
      expect(seen.tag).toBe('<i>tag</i>');
      expect(seen.document).toBe(hostileDocument);
      expect(seen.model).toBe('<b>model</b>');
      // Feature 0's best example is token 3; its window is the whole 4-token document. Line
      // separators show as ↵ so the line stays one line; everything else is verbatim.
      expect(seen.tokens).toEqual([...hostileTokens.slice(0, 3), ' \u21b5&amp;\u21b5 ']);
      expect(seen.marked).toBe(' \u21b5&amp;\u21b5 ');
      expect(seen.markedTitle).toBe(`activation 4 \u00b7 ${JSON.stringify(hostileTokens[3])}`);
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  });
});
