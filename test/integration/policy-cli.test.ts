import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { policyCheck, vectorsConvert } from '../../src/cli/policy.js';
import { readVectorFile, writeVectorFile } from '../../src/steering/formats.js';
import { makeSteeringVector } from '../../src/steering/vector.js';
import { expectSaegateError } from '../helpers/errors.js';
import { runCliToExit } from '../helpers/cli.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'saegate-policy-cli-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
// A synthetic model: 4 layers, d_model 64.
const MODEL = 'synthetic:dim=64,layers=4,heads=4,kv=2,hidden=172,vocab=512,ctx=512,seed=1';
const vec = (width: number, hook = 'blocks.2.hook_resid_post') => makeSteeringVector('<memory>', new Map([[hook, Float32Array.from({ length: width }, (_, i) => Math.cos(i))]]));

function policy(vector: string, hooks = '') {
  return `apiVersion: saegate/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  actions:\n    - steer:\n        vector: ${vector}\n        scale: -0.5${hooks}\n`;
}

describe('saegate policy check', () => {
  it('accepts a valid directory and reports every problem with file, line, column and path against the model', async () => {
    const good = path.join(dir, 'good');
    fs.mkdirSync(good);
    writeVectorFile(path.join(good, 'v.safetensors'), vec(64));
    fs.writeFileSync(path.join(good, 'p.yaml'), policy('v.safetensors'));
    expect(await policyCheck([good, '--model', MODEL])).toEqual({ code: 0, lines: ['1 policy in 1 file(s): ok'] });

    const bad = path.join(dir, 'bad');
    fs.mkdirSync(bad);
    writeVectorFile(path.join(bad, 'wide.safetensors'), vec(65, 'blocks.9.hook_resid_post'));
    fs.writeFileSync(path.join(bad, 'p.yaml'), policy('wide.safetensors'));
    const result = await policyCheck([bad, '--model', MODEL]);
    expect(result.code).toBe(1);
    expect(result.lines).toEqual([
      `${path.join(bad, 'p.yaml')}:7:17: spec.actions[0].steer.vector: the vector has 65 values per hook but the model's d_model is 64`,
      `${path.join(bad, 'p.yaml')}:7:17: spec.actions[0].steer.vector: the model has no hook point 'blocks.9.hook_resid_post'`,
    ]);
    // Width only: the hook is not checked, the width is.
    expect((await policyCheck([bad, '--d-model', '65'])).code).toBe(0);
  });

  it('exits 1 from the command line and prints the problems on stderr', async () => {
    const bad = path.join(dir, 'cli');
    fs.mkdirSync(bad);
    fs.writeFileSync(path.join(bad, 'p.yaml'), policy('missing.safetensors'));
    const { code, err } = await runCliToExit(['policy', 'check', bad]);
    expect(code).toBe(1);
    expect(err).toMatch(/p\.yaml:7:17: spec\.actions\[0\]\.steer\.vector: steering vector '.*missing\.safetensors': no such file/);
  });
});

describe('saegate vectors import/export', () => {
  it('round-trips a vector through a llama.cpp control vector', () => {
    const source = path.join(dir, 'src.safetensors');
    writeVectorFile(source, vec(64));
    expect(vectorsConvert('export', [source, '--out', path.join(dir, 'cv.gguf')])).toMatch(/cv\.gguf: 1 direction\(s\) of 64 values \(blocks\.2\.hook_resid_post\)/);
    vectorsConvert('import', [path.join(dir, 'cv.gguf'), '--out', path.join(dir, 'back.json')]);
    expect(readVectorFile(path.join(dir, 'back.json')).id).toBe(readVectorFile(source).id);
    expectSaegateError(() => vectorsConvert('export', [source, '--out', path.join(dir, 'x.safetensors')]), 'SAEGATE_ERR_CLI_USAGE', 'must end in .gguf');
  });
});
