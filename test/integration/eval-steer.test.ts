/**
 * `saegate eval steer` on stories260K, the whole workflow at CI scale: a happy-minus-sad vector
 * built from the example sets (vectors build), then the negative-emotion rate on the held-out
 * lost-or-broken prompts with and without it, control CE and greedy agreement. Asserts the
 * direction of the effect through the intervals (not a fixed rate), determinism (same seed, same
 * report bytes), the same numbers through --upstream, and the typed errors.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { evalSteer, type EvalSteerResult } from '../../src/cli/eval-steer.js';
import { vectorsBuild } from '../../src/cli/vectors-build.js';
import { startModelServer } from '../../src/model/server.js';
import { expectSaegateRejection } from '../helpers/errors.js';
import { hasSharedModels, makeTempDir, needsSharedModels, stories260K } from '../helpers/fixtures.js';
import { freePort } from '../helpers/ports.js';

const examples = path.resolve(import.meta.dirname, '../../examples');
const model = ['--model', stories260K.model, '--tokenizer', stories260K.tokenizer];
const HOOK = 'blocks.2.hook_resid_post';

describe.skipIf(!hasSharedModels)(needsSharedModels('saegate eval steer on stories260K'), () => {
  let dir: string;
  let vectorFile: string;
  let first: EvalSteerResult;
  let flags: string[];

  beforeAll(async () => {
    dir = makeTempDir('eval-steer-');
    vectorFile = path.join(dir, 'happy.safetensors');
    await vectorsBuild(['--positive', path.join(examples, 'prompts/happy.txt'), '--negative', path.join(examples, 'prompts/sad.txt'), '--hooks', HOOK, '--position', 'mean', '--out', vectorFile, ...model]);
    flags = [
      '--prompts', path.join(examples, 'prompts/lost-or-broken.txt'),
      '--control', path.join(examples, 'prompts/control.txt'),
      '--retain', path.join(examples, 'prompts/sad.txt'),
      '--behaviour', path.join(examples, 'behaviours/negative-emotion.txt'),
      '--vector', vectorFile, '--hook', HOOK, '--scale', '4', '--samples', '2', '--max-tokens', '32', '--seed', '3',
      // Bit-identical reruns need one request at a time: batch composition changes float rounding (docs/steering.md).
      '--concurrency', '1',
    ];
    first = await evalSteer([...flags, '--out', path.join(dir, 'a'), ...model]);
  }, 300_000);

  afterAll(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('steering towards happy lowers the negative-emotion rate: the steered interval lies below the unsteered rate', () => {
    const [r] = first.report.results;
    expect(r.target.before.n).toBe(80);
    expect(r.target.before.hits).toBeGreaterThan(0);
    expect(r.target.after.high).toBeLessThan(r.target.before.value);
    expect(r.target.relativeReduction!).toBeGreaterThan(0);
  });

  it('costs control cross-entropy (the paired interval is above 0) and changes greedy continuations', () => {
    const control = first.report.results[0].control!;
    expect(control.ceBefore).toBeGreaterThan(0);
    expect(control.deltaCe.low).toBeGreaterThan(0);
    expect(control.ceAfter - control.ceBefore).toBeCloseTo(control.deltaCe.value, 5);
    expect(control.agreement.n).toBe(30);
    expect(control.agreement.value).toBeLessThan(1);
  });

  it('writes the reports with the command, seed and hashes, and one samples line per completion', () => {
    const json = JSON.parse(fs.readFileSync(path.join(dir, 'a', 'report.json'), 'utf8')) as typeof first.report;
    expect(json).toEqual(first.report);
    expect(json.command).toContain(`eval steer --prompts`);
    expect(json.seed).toBe(3);
    expect(json.model.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(json.vector.id).toMatch(/^[0-9a-f]{64}$/);
    expect(json.vector.sha256).toMatch(/^[0-9a-f]{64}$/);
    const md = fs.readFileSync(path.join(dir, 'a', 'report.md'), 'utf8');
    expect(md).toContain(json.command);
    expect(md).toContain(json.vector.id);
    const lines = fs.readFileSync(path.join(dir, 'a', 'samples.jsonl'), 'utf8').trim().split('\n');
    // 40 target and 40 retain prompts, 2 samples each, in two arms.
    expect(lines).toHaveLength(320);
    const samples = lines.map((l) => JSON.parse(l) as { setting: string; set: string; match: boolean });
    const hits = (setting: string, set: string): number => samples.filter((s) => s.setting === setting && s.set === set && s.match).length;
    const [r] = first.report.results;
    expect(hits('unsteered', 'prompts')).toBe(r.target.before.hits);
    expect(hits(`${HOOK} × 4`, 'prompts')).toBe(r.target.after.hits);
    expect(hits('unsteered', 'retain')).toBe(r.retain!.before.hits);
    expect(hits(`${HOOK} × 4`, 'retain')).toBe(r.retain!.after.hits);
    expect(r.retain!.before.n).toBe(80);
    expect(r.retain!.held).toBe(r.retain!.after.high >= r.retain!.before.value);
  });

  it('gives the same report bytes for the same seed, and the same numbers from a running server through --upstream', async () => {
    await evalSteer([...flags, '--out', path.join(dir, 'b'), ...model]);
    expect(fs.readFileSync(path.join(dir, 'b', 'report.json'), 'utf8')).toBe(fs.readFileSync(path.join(dir, 'a', 'report.json'), 'utf8').replace(path.join(dir, 'a'), path.join(dir, 'b')));
    expect(fs.readFileSync(path.join(dir, 'b', 'samples.jsonl'), 'utf8')).toBe(fs.readFileSync(path.join(dir, 'a', 'samples.jsonl'), 'utf8'));
    const server = await startModelServer({ model: stories260K.model, tokenizer: stories260K.tokenizer, port: 0 });
    try {
      const viaUpstream = await evalSteer([...flags, '--out', path.join(dir, 'c'), '--upstream', server.url]);
      expect(viaUpstream.report.results).toEqual(first.report.results);
      expect(viaUpstream.report.model).toEqual({ name: 'stories260K', sha256: null });
    } finally {
      await server.close();
    }
  }, 300_000);

  it('refuses a hook the vector lacks and a server that does not answer, naming them', async () => {
    const otherHook = flags.map((f) => (f === HOOK ? 'blocks.4.hook_resid_post' : f));
    await expectSaegateRejection(() => evalSteer([...otherHook, '--out', path.join(dir, 'd'), ...model]), 'SAEGATE_ERR_VECTOR_FILE', 'no direction at blocks.4.hook_resid_post', HOOK);
    const url = `http://127.0.0.1:${await freePort()}`;
    await expectSaegateRejection(() => evalSteer([...flags, '--out', path.join(dir, 'e'), '--upstream', url]), 'SAEGATE_ERR_EVAL_UPSTREAM', url);
  });
});
