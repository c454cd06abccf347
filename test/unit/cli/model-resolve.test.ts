import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fallbackNotice, resolveDefaultModel, STORIES260K, SYNTHETIC_DEFAULT_MODEL } from '../../../src/cli/model-resolve.js';

const sharedModels = path.resolve(import.meta.dirname, '..', '..', '..', '..', 'shared', 'models');
const hasShared = fs.existsSync(path.join(sharedModels, 'stories260K', 'stories260K.bin'));
let server: http.Server;
let base: string;
let requests = 0;

beforeAll(async () => {
  server = http.createServer((req, res) => {
    requests++;
    const name = path.basename(req.url ?? '');
    const file = path.join(sharedModels, 'stories260K', name);
    if (req.url !== `/stories260K/${name}` || !(name in STORIES260K.files) || !fs.existsSync(file)) {
      res.writeHead(404);
      res.end();
      return;
    }
    const bytes = fs.readFileSync(file);
    res.writeHead(200, { 'content-length': bytes.length });
    res.end(bytes);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/stories260K`;
});
afterAll(() => new Promise((resolve) => server.close(resolve)));

const tmpCache = () => fs.mkdtempSync(path.join(os.tmpdir(), 'saegate-cache-'));

describe('default model resolution', () => {
  it('prefers the flag, then the environment, then a models folder', async () => {
    const cacheDir = tmpCache();
    expect(await resolveDefaultModel({ flag: 'a.bin', env: { SAEGATE_MODEL: 'b.bin' }, cacheDir })).toMatchObject({ model: 'a.bin', origin: 'flag' });
    expect(await resolveDefaultModel({ env: { SAEGATE_MODEL: 'b.bin' }, cacheDir })).toMatchObject({ model: 'b.bin', origin: 'env' });
    const dir = tmpCache();
    fs.mkdirSync(path.join(dir, 'stories260K'));
    fs.writeFileSync(path.join(dir, 'stories260K', 'stories260K.bin'), 'x');
    fs.writeFileSync(path.join(dir, 'stories260K', 'tok512.bin'), 'y');
    expect(await resolveDefaultModel({ env: { SAEGATE_MODELS_DIR: dir }, cacheDir, sharedModelsDir: null })).toMatchObject({
      model: path.join(dir, 'stories260K', 'stories260K.bin'),
      tokenizer: path.join(dir, 'stories260K', 'tok512.bin'),
      origin: 'models-dir',
    });
  });

  it.skipIf(!hasShared)('downloads stories260K into the cache once, verified, then uses the cache', async () => {
    const cacheDir = tmpCache();
    const before = requests;
    const seen: string[] = [];
    const first = await resolveDefaultModel({ env: {}, cacheDir, sharedModelsDir: null, baseUrl: base, onProgress: (file) => seen.push(file) });
    expect(first).toMatchObject({ origin: 'download', synthetic: false, model: path.join(cacheDir, 'models', 'stories260K', 'stories260K.bin') });
    expect(new Set(seen)).toEqual(new Set(['stories260K.bin', 'tok512.bin']));
    expect(requests - before).toBe(2);
    const second = await resolveDefaultModel({ env: {}, cacheDir, sharedModelsDir: null, baseUrl: base });
    expect(second).toMatchObject({ origin: 'cache', model: first.model, tokenizer: first.tokenizer });
    expect(requests - before).toBe(2);
  });

  it('falls back to the labelled synthetic model, saying why, when the download fails', async () => {
    const cacheDir = tmpCache();
    const result = await resolveDefaultModel({ env: {}, cacheDir, sharedModelsDir: null, baseUrl: `${base}/nowhere` });
    expect(result).toMatchObject({ model: SYNTHETIC_DEFAULT_MODEL, synthetic: true, origin: 'synthetic' });
    expect(result.note).toMatch(/HTTP 404/);
    expect(fs.readdirSync(path.join(cacheDir, 'models', 'stories260K')).filter((f) => f.endsWith('.bin'))).toEqual([]);
  });

  it('says so in one line: why, that it is synthetic, and how to run stories260K offline; nothing for another model', async () => {
    const result = await resolveDefaultModel({ env: {}, cacheDir: tmpCache(), sharedModelsDir: null, baseUrl: `${base}/nowhere` });
    const line = fallbackNotice(result);
    expect(line).toMatch(/^no real model \(.*HTTP 404.*\); using a seeded synthetic model that writes gibberish, labelled SYNTHETIC\. .*SAEGATE_MODELS_DIR=DIR$/);
    expect(line).not.toMatch(/[\r\n]/);
    // A multi-line error message still makes one line.
    expect(fallbackNotice({ ...result, note: 'first\n  second' })).toContain('(first second)');
    expect(fallbackNotice(await resolveDefaultModel({ env: { SAEGATE_MODEL: 'synthetic:dim=8' }, cacheDir: tmpCache() }))).toBeNull();
  });
});
