/**
 * The live view end to end in headless Chromium: stories260K behind the real proxy with a seeded
 * SAE (its directory holds a labels file and a feature page) and a policy matched by a header that
 * steers and flags. The page is opened first; a request made after it (the real `openai` client)
 * must appear with its text, highlighted tokens with labels on hover, a link to the feature page,
 * its policy, steering and trigger position; the chart's canvas must have drawn its series; the
 * page must run under its CSP with no console errors; a screenshot is saved to
 * test-results/live-view.png. Without the model, a second suite checks that the page reconnects to
 * a restarted saegate and replaces what it showed with the new snapshot.
 */
import fs from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProxyWithSaes } from '../../src/cli/serve.js';
import { startModelServer, type ModelServer } from '../../src/model/server.js';
import { LiveHub } from '../../src/proxy/live/hub.js';
import { LiveView, liveViewCsp } from '../../src/proxy/live/routes.js';
import { startProxy, type ProxyServer } from '../../src/proxy/server.js';
import { writeVectorFile } from '../../src/steering/formats.js';
import { makeSteeringVector } from '../../src/steering/vector.js';
import { launchChromium, needsChromium, skipBrowserTests } from '../helpers/chromium.js';
import { makeTempDir, removeTempDir } from '../helpers/fixtures.js';
import { freePort } from '../helpers/ports.js';
import { seededStandardSae } from '../helpers/sae.js';
import { waitFor } from '../helpers/wait.js';

const MODEL = path.resolve(import.meta.dirname, '..', '..', '..', 'shared', 'models', 'stories260K', 'stories260K.bin');
const hasModel = fs.existsSync(MODEL);
const HOOK = 'blocks.2.hook_resid_post';
const D_MODEL = 64;
const D_SAE = 256;
const ARTIFACTS = path.resolve(import.meta.dirname, '..', '..', 'test-results');

describe.skipIf(skipBrowserTests || !hasModel)(needsChromium(`live view in Chromium${hasModel ? '' : ' [skipped: no stories260K]'}`), () => {
  const dir = makeTempDir('saegate-live-view-');
  // The SAE's directory is named `test`: policies name an SAE by its directory.
  const saeDir = path.join(dir, 'test');
  const policyDir = path.join(dir, 'policies');
  let model: ModelServer;
  let proxy: ProxyServer;
  let browser: Browser;
  let live: LiveView;

  beforeAll(async () => {
    fs.mkdirSync(saeDir);
    fs.mkdirSync(policyDir);
    fs.writeFileSync(path.join(saeDir, 'features.yaml'), Array.from({ length: D_SAE }, (_, i) => `${i}: unit ${i}\n`).join(''));
    fs.writeFileSync(path.join(saeDir, 'features.html'), '<!doctype html><title>features</title><p id="page">feature page of test</p>');
    const vector = Float32Array.from({ length: D_MODEL }, (_, i) => Math.sin(1.7 * i + 0.3));
    writeVectorFile(path.join(policyDir, 'a.safetensors'), makeSteeringVector('<memory>', new Map([[HOOK, vector]])));
    // An unconditional steer, and a flag whose condition holds at the first position evaluated.
    fs.writeFileSync(
      path.join(policyDir, 'live.yaml'),
      'apiVersion: saegate/v1\nkind: Policy\nmetadata: {name: live}\nspec:\n  match:\n    headers: {x-tenant: [live]}\n  actions:\n' +
        '    - monitor: {sae: test, features: [{index: 0}]}\n' +
        '    - steer: {vector: a.safetensors, scale: 2}\n' +
        '    - flag: {name: seen, when: {feature: {sae: test, index: 0, above: -1}}}\n',
    );
    const sae = seededStandardSae({ dIn: D_MODEL, dSae: D_SAE, hook: HOOK, seed: 11, scales: { W_enc: 1, b_enc: 0.2, W_dec: 0.5, b_dec: 0.1 } });
    sae.config.source = saeDir;
    const modelPort = await freePort();
    ({ server: proxy, live } = await startProxyWithSaes({ upstream: `http://127.0.0.1:${modelPort}`, port: 0, saeMaxDelayMs: 1 }, [sae], policyDir));
    model = await startModelServer({ model: MODEL, port: modelPort, tapUrl: proxy.tapUrl, planWaitTimeoutMs: 2000 });
    await waitFor('the model server subscribed to the SAE hook', () => model.tap?.client.subscription !== null && model.tap?.client.subscription !== undefined);
    browser = await launchChromium();
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await model?.close();
    await proxy?.close({ timeoutMs: 0 });
    removeTempDir(dir);
  });

  /** Opens /ui; `problems` collects page errors, console errors and warnings (CSP violations are console errors). */
  async function openLiveView(): Promise<{ page: Page; problems: string[]; csp: string | undefined }> {
    const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
    const problems: string[] = [];
    page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
    page.on('console', (message) => {
      if (message.type() === 'error' || message.type() === 'warning') problems.push(`console ${message.type()}: ${message.text()}`);
    });
    const response = await page.goto(`${proxy.url}/ui`);
    await page.waitForSelector('#status.live', { timeout: 15_000 });
    return { page, problems, csp: response?.headers()['content-security-policy'] };
  }

  it('shows a request made after it opened, with highlighted labelled tokens, its steering and trigger, and a drawn chart', async () => {
    const { page, problems, csp } = await openLiveView();
    expect(csp).toBe(liveViewCsp);
    expect(await page.$$('article.request')).toHaveLength(0);

    const client = new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const { data: completion, response } = await client.completions
      .create({ model: 'stories260K', prompt: 'Once upon a time, there was a little girl', max_tokens: 24, temperature: 0 }, { headers: { 'x-tenant': 'live', 'x-request-id': 'live-1' } })
      .withResponse();
    const applied = response.headers.get('x-saegate-applied') ?? '';
    expect(applied).toMatch(/^policy=live@1, steering=plan-/);
    const text = completion.choices[0].text;
    expect(text.length).toBeGreaterThan(0);

    const card = 'article.request[data-request-id="live-1"]';
    await page.waitForSelector(card, { timeout: 15_000 });
    // Done, with every generated token's text on the page.
    await waitFor('the request done on the page with its generated text', async () => {
      const state = await page.$eval(`${card} .state`, (el) => el.textContent ?? '');
      const generated = await page.$$eval(`${card} .tok:not(.prompt)`, (spans) => spans.map((s) => s.textContent ?? '').join(''));
      return state.startsWith('done') && generated.includes(text.trim());
    }, { deadlineMs: 15_000 });
    // The SAE results (features, the flag's trigger) may land after the model server's end.
    let seen = '';
    await waitFor('the flag trigger and highlighted tokens on the page', async () => {
      const steeringText = await page.$eval(`${card} .steering`, (el) => el.textContent ?? '');
      const highlighted = (await page.$$(`${card} .tok.hl`)).length;
      seen = `steering: ${steeringText}; highlighted tokens: ${highlighted} of ${(await page.$$(`${card} .tok`)).length}`;
      return /flag seen live@1 at position \d+/.test(steeringText) && highlighted > 10;
    }, { deadlineMs: 15_000, observed: () => seen });

    // Policy, steering, applied value and the flag's trigger position.
    const steering = await page.$eval(`${card} .steering`, (el) => el.textContent ?? '');
    expect(steering).toContain('live@1');
    expect(steering).toContain('1 steering term');
    expect(steering).toContain(`x-saegate-applied: ${applied.split(', flag=')[0]}`);
    expect(steering).toMatch(/flag seen live@1 at position \d+/);
    expect(await page.$$(`${card} .tok.trigger`)).toHaveLength(1);

    // Tokens highlighted by their strongest feature, with its label on hover.
    const highlighted = await page.$$eval(`${card} .tok.hl`, (spans) => spans.map((s) => ({ feature: (s as HTMLElement).dataset.feature, title: s.getAttribute('title') ?? '', bg: (s as HTMLElement).style.backgroundColor })));
    expect(highlighted.length).toBeGreaterThan(10);
    for (const token of highlighted) {
      expect(token.title).toContain(`#${token.feature} `);
      expect(token.title).toContain(`unit ${token.feature}`);
      expect(token.bg).toMatch(/^rgba?\(/);
    }
    // Clicking a token lists its features with links to the SAE's feature page, which is served.
    await page.locator(`${card} .tok.hl`).filter({ hasText: /\S/ }).first().click();
    const href = await page.$eval(`${card} .details a`, (a) => a.getAttribute('href'));
    expect(href).toBe('/ui/features/0');
    const featurePage = await fetch(`${proxy.url}${href}`);
    expect(await featurePage.text()).toContain('feature page of test');

    // The chart: samples arrived and the canvas holds pixels of the series colours. Both series
    // count from the request's tokens and rows, so wait for a sample taken after they all arrived
    // (on a loaded machine the first samples can all fall before the request).
    const chartSamples = async (): Promise<number> => Number(await page.$eval('#chart', (el) => (el as HTMLCanvasElement).dataset.samples ?? '0'));
    const samplesBefore = await chartSamples();
    await waitFor('two chart samples, one after the request', async () => (await chartSamples()) >= Math.max(2, samplesBefore + 1), { deadlineMs: 10_000 });
    const seriesPixels = await page.$eval('#chart', (el) => {
      const canvas = el as HTMLCanvasElement;
      const data = canvas.getContext('2d')!.getImageData(0, 0, canvas.width, canvas.height).data;
      let orange = 0;
      let blue = 0;
      for (let i = 0; i < data.length; i += 4) {
        if (Math.abs(data[i] - 0xff) < 24 && Math.abs(data[i + 1] - 0x7a) < 24 && data[i + 2] < 40) orange++;
        if (Math.abs(data[i] - 0x24) < 24 && Math.abs(data[i + 1] - 0x50) < 24 && Math.abs(data[i + 2] - 0xc8) < 24) blue++;
      }
      return { orange, blue };
    });
    expect(seriesPixels.orange).toBeGreaterThan(50);
    expect(seriesPixels.blue).toBeGreaterThan(50);
    expect(await page.$$eval('#legend li', (items) => items.map((li) => li.textContent ?? ''))).toEqual([expect.stringMatching(/^tokens\/s /), expect.stringMatching(/^SAE rows\/s /)]);

    fs.mkdirSync(ARTIFACTS, { recursive: true });
    const shot = path.join(ARTIFACTS, 'live-view.png');
    await page.screenshot({ path: shot, fullPage: true });
    expect(fs.statSync(shot).size).toBeGreaterThan(10_000);
    expect(problems).toEqual([]);
    await page.close();
  }, 90_000);

  it('renders generated text as text: markup in a token never becomes an element', async () => {
    const { page, problems } = await openLiveView();
    live.hub.started({ requestId: 'hostile', route: 'completions', model: '<i>m</i>', policies: ['<b>p</b>'], steeringTerms: 0 });
    const texts = ['<img src=x id=pwned>', '<script>window.pwned=1</script>', '&amp;'];
    live.hub.tokens({ type: 'tokens', requestIds: ['hostile'], rowRequestIndexes: new Uint16Array(3), positions: Int32Array.from([0, 1, 2]), tokenIds: new Int32Array(3), texts });
    const card = 'article.request[data-request-id="hostile"]';
    await page.waitForSelector(card, { timeout: 15_000 });
    await waitFor('the hostile tokens on the page', async () => (await page.$$(`${card} .tok`)).length === 3);
    expect(await page.$$eval(`${card} .tok`, (spans) => spans.map((s) => s.textContent))).toEqual(texts);
    expect(await page.$$(`${card} img, ${card} script, ${card} b, ${card} i`)).toHaveLength(0);
    expect(await page.$('#pwned')).toBeNull();
    expect(await page.evaluate(() => (window as unknown as { pwned?: number }).pwned)).toBeUndefined();
    await page.close();
    expect(problems).toEqual([]);
  });
});

describe.skipIf(skipBrowserTests)(needsChromium('live view reconnects in Chromium'), () => {
  let browser: Browser;
  const proxies: ProxyServer[] = [];

  beforeAll(async () => {
    browser = await launchChromium();
  });

  afterAll(async () => {
    await browser?.close();
    await Promise.all(proxies.map((p) => p.close({ timeoutMs: 0 })));
  });

  async function startOn(port: number, hub: LiveHub): Promise<ProxyServer> {
    const proxy = await startProxy({ upstream: 'http://127.0.0.1:9', port, liveView: new LiveView({ hub, flushIntervalMs: 20 }) });
    proxies.push(proxy);
    return proxy;
  }

  it('names the served model in the header, with a SYNTHETIC badge while it is the synthetic fallback', async () => {
    const hub = new LiveHub({ servedModel: { name: 'synthetic', synthetic: true, detail: 'seeded random weights, not trained (synthetic:dim=64): offline' } });
    const proxy = await startOn(0, hub);
    const page = await browser.newPage();
    const problems: string[] = [];
    page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
    page.on('console', (message) => {
      if (message.type() === 'error' || message.type() === 'warning') problems.push(`console ${message.type()}: ${message.text()}`);
    });
    await page.goto(`${proxy.url}/ui`);
    await page.waitForSelector('#model .badge.synthetic', { state: 'visible', timeout: 15_000 });
    expect(await page.$eval('#model', (el) => el.textContent)).toBe('model syntheticSYNTHETIC: untrained, writes gibberish');
    expect(await page.$eval('#model', (el) => el.getAttribute('title'))).toContain('offline');
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, 'live-view-synthetic.png') });

    // A real model replaces it live (names are text: markup stays text).
    hub.setServedModel({ name: '<b>stories260K</b>', synthetic: false, detail: null });
    await page.waitForSelector('#model .badge', { state: 'detached', timeout: 15_000 });
    expect(await page.$eval('#model', (el) => el.textContent)).toBe('model <b>stories260K</b>');
    expect(await page.$$('#model b')).toHaveLength(0);
    hub.setServedModel(null);
    await page.waitForSelector('#model', { state: 'hidden', timeout: 15_000 });
    await page.close();
    expect(problems).toEqual([]);
  }, 60_000);

  it('reconnects after saegate restarts and shows the new process\'s snapshot instead of the old one', async () => {
    const port = await freePort();
    const first = new LiveHub();
    first.started({ requestId: 'before-restart', route: 'completions', model: null, policies: [], steeringTerms: 0 });
    const proxy = await startOn(port, first);
    const page = await browser.newPage();
    await page.goto(`${proxy.url}/ui`);
    await page.waitForSelector('#status.live', { timeout: 15_000 });
    await page.waitForSelector('article.request[data-request-id="before-restart"]', { timeout: 15_000 });

    await proxy.close({ timeoutMs: 0 });
    await page.waitForSelector('#status.down', { timeout: 15_000 });

    const second = new LiveHub();
    second.started({ requestId: 'after-restart', route: 'completions', model: null, policies: [], steeringTerms: 0 });
    await startOn(port, second);
    await page.waitForSelector('article.request[data-request-id="after-restart"]', { timeout: 15_000 });
    await page.waitForSelector('#status.live', { timeout: 15_000 });
    expect(await page.$$eval('article.request', (cards) => cards.map((c) => (c as HTMLElement).dataset.requestId))).toEqual(['after-restart']);
    await page.close();
  }, 60_000);
});
