/**
 * `saegate vectors build` on stories260K with the example prompt sets (examples/prompts/happy.txt
 * against sad.txt): the command as a process once (file, metadata, separation report), then the
 * command's function in-process for determinism, PCA and the typed errors. Directions are checked
 * against centroids computed from the float64 reference forward pass, not from the collector.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { vectorsBuild } from '../../src/cli/vectors-build.js';
import { loadModel } from '../../src/model/load.js';
import { startModelServer } from '../../src/model/server.js';
import type { LoadedModel } from '../../src/model/types.js';
import { VectorStore } from '../../src/steering/store.js';
import type { SteeringVector } from '../../src/steering/vector.js';
import { runCliToExit } from '../helpers/cli.js';
import { expectSaegateRejection } from '../helpers/errors.js';
import { hasSharedModels, makeTempDir, needsSharedModels, stories260K } from '../helpers/fixtures.js';
import { freePort } from '../helpers/ports.js';
import { referenceForward } from '../helpers/reference-forward.js';

const examples = path.resolve(import.meta.dirname, '../../examples/prompts');
const happy = path.join(examples, 'happy.txt');
const sad = path.join(examples, 'sad.txt');
const model = ['--model', stories260K.model, '--tokenizer', stories260K.tokenizer];
const HOOKS = ['blocks.1.hook_resid_post', 'blocks.3.hook_resid_post'];

interface ReportJson {
  model: string;
  counts: { positive: number; negative: number };
  heldOut: { positive: number; negative: number };
  hooks: Array<{ hook: string; norm: number; evaluatedOn: string; cohensD: number | null; auroc: number; positive: { mean: number; std: number; count: number }; negative: { mean: number; std: number; count: number } }>;
}

function prompts(file: string): string[] {
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line.trim() !== '');
}

describe.skipIf(!hasSharedModels)(needsSharedModels('saegate vectors build on stories260K'), () => {
  let dir: string;
  let out: string;
  let stdout: string;
  let report: ReportJson;
  let vector: SteeringVector;
  let loaded: LoadedModel;

  beforeAll(async () => {
    dir = makeTempDir('vectors-build-');
    out = path.join(dir, 'happy.safetensors');
    const reportFile = path.join(dir, 'report.json');
    const run = await runCliToExit(['vectors', 'build', '--positive', happy, '--negative', sad, '--hooks', HOOKS.join(','), '--out', out, '--report', reportFile, ...model], { deadlineMs: 240_000 });
    expect(run.code, run.err).toBe(0);
    stdout = run.out;
    report = JSON.parse(fs.readFileSync(reportFile, 'utf8')) as ReportJson;
    vector = new VectorStore({ baseDir: dir }).resolve('happy.safetensors');
    loaded = await loadModel({ model: stories260K.model, tokenizer: stories260K.tokenizer });
  }, 300_000);

  afterAll(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('writes a file the vector store loads, with one direction per hook and the build metadata', () => {
    expect([...vector.hooks.keys()]).toEqual(HOOKS);
    expect(vector.dModel).toBe(64);
    expect(vector.metadata).toMatchObject({
      model: 'stories260K',
      method: 'mean-diff',
      position: 'last',
      counts: { positive: 40, negative: 40 },
      seed: 0,
      saegateVersion: JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version,
    });
    expect(vector.metadata.createdAt).toBeUndefined();
  });

  it("makes each direction the raw difference of the last-token centroids, and records that difference's norm", () => {
    const tokenizer = loaded.tokenizer!;
    const rows = (file: string) => prompts(file).map((text) => referenceForward(loaded.weights, tokenizer.encode(text, { addBos: true })).hooks);
    const [pos, neg] = [rows(happy), rows(sad)];
    for (const hook of HOOKS) {
      const diff = new Float64Array(64);
      for (const h of pos) h[hook].at(-1)!.forEach((v, d) => (diff[d] += v / pos.length));
      for (const h of neg) h[hook].at(-1)!.forEach((v, d) => (diff[d] -= v / neg.length));
      const direction = vector.hooks.get(hook)!;
      let maxError = 0;
      diff.forEach((v, d) => (maxError = Math.max(maxError, Math.abs(v - direction[d]))));
      expect(maxError, hook).toBeLessThan(1e-4);
      const norm = Math.hypot(...diff);
      expect(norm).toBeGreaterThan(0.1);
      expect(vector.metadata.norms[hook]).toBeCloseTo(norm, 4);
      expect(report.hooks.find((h) => h.hook === hook)!.norm).toBeCloseTo(norm, 4);
    }
  });

  it("prints and writes the separation report per hook: held-out projections, Cohen's d > 0, AUROC in [0, 1]", () => {
    expect(stdout).toContain('10 positive and 10 negative held-out prompts');
    expect(report.heldOut).toEqual({ positive: 10, negative: 10 });
    expect(report.hooks.map((h) => h.hook)).toEqual(HOOKS);
    for (const h of report.hooks) {
      expect(h.evaluatedOn).toBe('held-out');
      expect(h.positive.count).toBe(10);
      expect(h.cohensD!).toBeGreaterThan(0);
      expect(h.auroc).toBeGreaterThanOrEqual(0);
      expect(h.auroc).toBeLessThanOrEqual(1);
      expect(h.positive.mean).toBeGreaterThan(h.negative.mean);
      const line = stdout.split('\n').find((l) => l.startsWith(h.hook))!;
      expect(line.trim().split(/\s+/).at(-1)).toBe(h.auroc.toFixed(3));
      expect(line.trim().split(/\s+/).at(-2)).toBe(h.cohensD!.toFixed(3));
    }
  });

  it('writes the same bytes for the same seed (pca), and a direction along the centroid difference', async () => {
    const build = async (name: string, seed: number): Promise<Buffer> => {
      const file = path.join(dir, name);
      await vectorsBuild(['--positive', happy, '--negative', sad, '--hooks', HOOKS[1], '--method', 'pca', '--position', 'mean', '--seed', String(seed), '--out', file, ...model]);
      return fs.readFileSync(file);
    };
    const [a, b] = [await build('pca-a.safetensors', 5), await build('pca-b.safetensors', 5)];
    expect(a.equals(b)).toBe(true);
    const pca = new VectorStore({ baseDir: dir }).resolve('pca-a.safetensors');
    expect(pca.metadata).toMatchObject({ method: 'pca', position: 'mean', seed: 5 });
    const u = pca.hooks.get(HOOKS[1])!;
    expect(u.reduce((s, v, d) => s + v * vector.hooks.get(HOOKS[1])![d], 0)).toBeGreaterThan(0);
  }, 120_000);

  it('runs through an external server with --upstream, which reconnects its tap for every pass, giving the in-process directions', async () => {
    const tapPort = await freePort();
    const server = await startModelServer({ model: stories260K.model, tokenizer: stories260K.tokenizer, port: 0, tapUrl: `ws://127.0.0.1:${tapPort}/v1/tap` });
    try {
      const file = path.join(dir, 'upstream.safetensors');
      await vectorsBuild(['--positive', happy, '--negative', sad, '--hooks', HOOKS.join(','), '--upstream', server.url, '--tap-port', String(tapPort), '--out', file]);
      const upstream = new VectorStore({ baseDir: dir }).resolve('upstream.safetensors');
      expect(upstream.metadata.model).toBe('stories260K');
      for (const hook of HOOKS) {
        const a = upstream.hooks.get(hook)!;
        const b = vector.hooks.get(hook)!;
        a.forEach((v, d) => expect(Math.abs(v - b[d]), `${hook}[${d}]`).toBeLessThan(1e-5));
      }
    } finally {
      await server.close();
    }
  }, 120_000);

  it('refuses an empty prompt set with SAEGATE_ERR_PROMPT_SET_EMPTY naming the file', async () => {
    const empty = path.join(dir, 'empty.txt');
    fs.writeFileSync(empty, '\n\n');
    await expectSaegateRejection(() => vectorsBuild(['--positive', happy, '--negative', empty, '--hooks', HOOKS[0], '--out', path.join(dir, 'x.safetensors'), ...model]), 'SAEGATE_ERR_PROMPT_SET_EMPTY', empty);
    expect(fs.existsSync(path.join(dir, 'x.safetensors'))).toBe(false);
  });

  it('refuses a hook the model lacks with SAEGATE_ERR_UNKNOWN_HOOK before running any prompt', async () => {
    await expectSaegateRejection(
      () => vectorsBuild(['--positive', happy, '--negative', sad, '--hooks', `${HOOKS[0]},blocks.9.hook_resid_post`, '--out', path.join(dir, 'x.safetensors'), ...model]),
      'SAEGATE_ERR_UNKNOWN_HOOK',
      "'blocks.9.hook_resid_post'",
      'blocks.4.hook_resid_post',
    );
  });

  it('refuses prompts over the context with SAEGATE_ERR_PROMPT_TOO_LONG naming the file and the prompt', async () => {
    const long = path.join(dir, 'long.txt');
    fs.writeFileSync(long, `A short happy prompt.\n\n${'the dog ran and '.repeat(200)}\n\nAnother one.\n`);
    await expectSaegateRejection(
      () => vectorsBuild(['--positive', long, '--negative', sad, '--hooks', HOOKS[0], '--out', path.join(dir, 'x.safetensors'), ...model]),
      'SAEGATE_ERR_PROMPT_TOO_LONG',
      long,
      "1 positive prompt(s) do not fit the model's context: '1'",
    );
  }, 60_000);
});
