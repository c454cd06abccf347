/**
 * `saegate eval steer --when-projection-above` on stories260K at CI scale: a sad-minus-happy vector
 * (vectors build), then the same steer evaluated unconditionally and as a conditional policy
 * (steering from the position after the projection onto the vector first exceeds a threshold on
 * the unsteered pass). Asserts the direction of the effect through the intervals, that the
 * conditional policy's control ΔCE lies below the unconditional one's (intervals apart), that the
 * trigger fired on some control texts and not all, that steering from a position leaves the
 * predictions before it unchanged (the emulation's premise), and that the same steer written as a
 * policy file gives the same numbers and completions byte for byte (determinism under the seed).
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { evalSteer, type EvalSteerResult } from '../../src/cli/eval-steer.js';
import { vectorsBuild } from '../../src/cli/vectors-build.js';
import { EvalClient } from '../../src/lab/eval/client.js';
import { ProjectionTrace } from '../../src/lab/eval/condition.js';
import { startModelServer } from '../../src/model/server.js';
import { readVectorFile } from '../../src/steering/formats.js';
import { hasSharedModels, makeTempDir, needsSharedModels, stories260K } from '../helpers/fixtures.js';

const examples = path.resolve(import.meta.dirname, '../../examples');
const model = ['--model', stories260K.model, '--tokenizer', stories260K.tokenizer];
const HOOK = 'blocks.3.hook_resid_post';

describe.skipIf(!hasSharedModels)(needsSharedModels('saegate eval steer with a projection condition on stories260K'), () => {
  let dir: string;
  let flags: string[];
  let unconditional: EvalSteerResult;
  let conditional: EvalSteerResult;

  beforeAll(async () => {
    dir = makeTempDir('eval-conditional-');
    const vectorFile = path.join(dir, 'sad.safetensors');
    await vectorsBuild(['--positive', path.join(examples, 'prompts/sad.txt'), '--negative', path.join(examples, 'prompts/happy.txt'), '--hooks', HOOK, '--position', 'last', '--out', vectorFile, ...model]);
    flags = [
      '--prompts', path.join(examples, 'prompts/lost-or-broken.txt'),
      '--control', path.join(examples, 'prompts/control.txt'),
      '--behaviour', path.join(examples, 'behaviours/negative-emotion.txt'),
      '--vector', vectorFile, '--hook', HOOK, '--scale=-3', '--samples', '2', '--max-tokens', '64', '--seed', '0',
      // One request at a time: the engine right-pads the sequences it batches together, so which
      // requests share a batch (timing, load) can move a logit in the last bits and, rarely, flip a
      // sampled token; the comparisons below are exact.
      '--concurrency', '1',
      ...model,
    ];
    unconditional = await evalSteer([...flags, '--out', path.join(dir, 'u')]);
    conditional = await evalSteer([...flags, '--when-projection-above', '0.9', '--out', path.join(dir, 'a')]);
  }, 300_000);

  afterAll(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('steering away from sad only after the trigger still lowers the negative-emotion rate: the steered interval lies below the unsteered rate', () => {
    const [r] = conditional.report.results;
    expect(r.target.before).toEqual(unconditional.report.results[0].target.before);
    expect(r.target.before.hits).toBeGreaterThan(0);
    expect(r.target.after.high).toBeLessThan(r.target.before.value);
    expect(r.triggered!.prompts.hits).toBeGreaterThan(0);
  });

  it('costs less control cross-entropy than the same steer everywhere: the intervals do not overlap', () => {
    const c = conditional.report.results[0].control!;
    const u = unconditional.report.results[0].control!;
    expect(c.ceBefore).toBe(u.ceBefore);
    expect(u.deltaCe.low).toBeGreaterThan(0);
    expect(c.deltaCe.high).toBeLessThan(u.deltaCe.low);
    // Some control requests never trigger (their CE is the unsteered one), some do.
    const fired = conditional.report.results[0].triggered!.control;
    expect(fired.n).toBe(60);
    expect(fired.hits).toBeGreaterThan(0);
    expect(fired.hits).toBeLessThan(60);
    expect(unconditional.report.results[0].triggered).toBeUndefined();
  });

  it('records the condition in the reports', () => {
    expect(conditional.report.condition).toEqual({ projectionAbove: 0.9, forTokens: 1, hook: null, steerTokens: null });
    expect(unconditional.report.condition).toBeNull();
    const md = fs.readFileSync(path.join(dir, 'a', 'report.md'), 'utf8');
    expect(md).toContain('projection onto the setting\'s vector above 0.9 for 1 token(s)');
    expect(md).toContain('fired: completions / control');
  });

  it('steering from position q leaves every prediction made from rows before q unchanged (what the two-pass emulation relies on)', async () => {
    const vector = readVectorFile(path.join(dir, 'sad.safetensors')).hooks.get(HOOK)!;
    const server = await startModelServer({ model: stories260K.model, tokenizer: stories260K.tokenizer, port: 0 });
    const client = new EvalClient({ upstream: server.url, model: 'stories260K', connections: 2 });
    try {
      const text = 'Once upon a time, a little girl named Lily went to the park with her mom. They played on the swings.';
      const trace = new ProjectionTrace(server.engine, new Map([[HOOK, vector]]));
      trace.watch('eval-exactness');
      const plain = await client.promptLogprobs(text, [], 'unsteered', 'eval-exactness');
      const projections = trace.take('eval-exactness').get(HOOK)!;
      trace.close();
      // One row per prompt position (BOS included), one log-probability per position after BOS.
      expect(projections.length).toBe(plain.length + 1);
      expect(projections.every(Number.isFinite)).toBe(true);
      const q = 10;
      const steered = await client.promptLogprobs(text, [{ hook: HOOK, scale: -4, vector, positions: { from: q } }], 'steered from q');
      // Entry i predicts position i + 1 from the rows up to position i.
      expect(steered.slice(0, q)).toEqual(plain.slice(0, q));
      expect(steered[q]).not.toBe(plain[q]);
    } finally {
      await client.close();
      await server.close();
    }
  });

  it('evaluates the same conditional steer written as a policy file (--policies) to the same numbers and completions (deterministic under the seed)', async () => {
    const policies = path.join(dir, 'policies');
    fs.mkdirSync(policies);
    fs.writeFileSync(
      path.join(policies, 'calm.yaml'),
      [
        'apiVersion: saegate/v1',
        'kind: Policy',
        'metadata: {name: calm}',
        'spec:',
        '  actions:',
        '    - steer:',
        '        vector: ../sad.safetensors',
        `        hooks: [${HOOK}]`,
        '        scale: -3',
        `        when: {projection: {vector: ../sad.safetensors, hook: ${HOOK}, above: 0.9}}`,
        '',
      ].join('\n'),
    );
    const withoutSetting = flags.filter((f, i) => !['--vector', '--hook'].includes(f) && !['--vector', '--hook'].includes(flags[i - 1]) && f !== '--scale=-3');
    const viaPolicy = await evalSteer([...withoutSetting, '--policies', policies, '--out', path.join(dir, 'p')]);
    // Same seed, same numbers and the same completions, byte for byte.
    expect(viaPolicy.report.results).toEqual(conditional.report.results);
    expect(fs.readFileSync(path.join(dir, 'p', 'samples.jsonl'), 'utf8')).toBe(fs.readFileSync(path.join(dir, 'a', 'samples.jsonl'), 'utf8'));
    expect(viaPolicy.report.policy).toMatchObject({ name: 'calm@1' });
    expect(viaPolicy.report.condition).toEqual({ projectionAbove: 0.9, forTokens: 1, hook: HOOK, steerTokens: null });
  }, 300_000);

});
