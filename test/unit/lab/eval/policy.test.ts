/** `eval steer --policies`: the one steer policy read and compiled, and what cannot be evaluated refused by name. */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readPolicySteer } from '../../../../src/lab/eval/policy.js';
import { writeVectorFile } from '../../../../src/steering/formats.js';
import { makeSteeringVector } from '../../../../src/steering/vector.js';
import { expectSaegateError } from '../../../helpers/errors.js';
import { makeTempDir } from '../../../helpers/fixtures.js';

const H3 = 'blocks.3.hook_resid_post';
const H4 = 'blocks.4.hook_resid_post';

function policy(name: string, steer: string): string {
  return `apiVersion: saegate/v1\nkind: Policy\nmetadata:\n  name: ${name}\nspec:\n  actions:\n    - steer:\n${steer}`;
}

describe('readPolicySteer', () => {
  let dir: string;
  const write = (sub: string, files: Record<string, string>): string => {
    const at = path.join(dir, sub);
    fs.mkdirSync(at, { recursive: true });
    for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(at, name), text);
    return at;
  };

  beforeAll(() => {
    dir = makeTempDir('eval-policy-');
    writeVectorFile(path.join(dir, 'sad.safetensors'), makeSteeringVector('<memory>', new Map([[H3, Float32Array.from({ length: 8 }, (_, i) => i + 1)], [H4, new Float32Array(8).fill(2)]])));
  });

  afterAll(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('reads a conditional steer: hook, scale, direction, the condition with its own direction, and steer.forTokens', () => {
    const at = write('conditional', {
      'p.yaml': policy('calm', `        vector: ../sad.safetensors\n        hooks: [${H3}]\n        scale: -4\n        forTokens: 12\n        when: {projection: {vector: ../sad.safetensors, hook: ${H4}, above: 0.9, forTokens: 2}}\n`),
    });
    const steer = readPolicySteer(at);
    expect(steer).toMatchObject({ policy: 'calm@1', hook: H3, scale: -4, positions: 'all', steerTokens: 12 });
    expect(Array.from(steer.direction)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(steer.condition).toMatchObject({ hook: H4, above: 0.9, forTokens: 2 });
    expect(Array.from(steer.condition!.direction)).toEqual(new Array(8).fill(2));
  });

  it('reads an unconditional steer with its positions', () => {
    const at = write('plain', { 'p.yaml': policy('plain', `        vector: ../sad.safetensors\n        hooks: [${H3}]\n        scale: -2\n        positions: generated\n`) });
    expect(readPolicySteer(at)).toMatchObject({ hook: H3, scale: -2, positions: 'generated', condition: null, steerTokens: null });
  });

  it('refuses what it cannot evaluate, naming the policy: two policies, two hooks, a feature condition, invalid files', () => {
    const one = `        vector: ../sad.safetensors\n        hooks: [${H3}]\n        scale: -2\n`;
    expectSaegateError(() => readPolicySteer(write('two', { 'a.yaml': policy('a', one), 'b.yaml': policy('b', one) })), 'SAEGATE_ERR_CONFIG', '2 policies', 'exactly one');
    expectSaegateError(() => readPolicySteer(write('hooks', { 'p.yaml': policy('wide', `        vector: ../sad.safetensors\n        scale: -2\n`) })), 'SAEGATE_ERR_CONFIG', "policy 'wide'", '2 hooks');
    expectSaegateError(
      () => readPolicySteer(write('feature', { 'p.yaml': policy('feat', `${one}        when: {feature: {sae: demo, index: 3, above: 1}}\n    - monitor: {sae: demo, features: [{index: 3}]}\n`) })),
      'SAEGATE_ERR_CONFIG',
      "policy 'feat'",
      'feature conditions are not evaluated',
    );
    expectSaegateError(() => readPolicySteer(write('bad', { 'p.yaml': policy('bad', `        vector: ../missing.safetensors\n        scale: -2\n`) })), 'SAEGATE_ERR_CONFIG', 'invalid policy files', 'p.yaml');
  });
});
