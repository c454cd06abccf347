/**
 * Policies under `serve --upstream-steering` with a server without the tap: conditions are refused
 * at load, naming the policy (nothing streams the activations they read), and a steer the server's
 * field cannot express is refused with the reason; the tap accepts both.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compilePolicySet } from '../../../src/policies/compile.js';
import { formatProblem, readPolicyFiles } from '../../../src/policies/load.js';
import { writeVectorFile } from '../../../src/steering/formats.js';
import { VectorStore } from '../../../src/steering/store.js';
import type { UpstreamSteeringMode } from '../../../src/steering/upstream.js';
import { makeSteeringVector } from '../../../src/steering/vector.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'saegate-policies-upstream-'));
const direction = Float32Array.from({ length: 8 }, (_, i) => Math.cos(i));
writeVectorFile(path.join(dir, 'post.safetensors'), makeSteeringVector('<memory>', new Map([['blocks.2.hook_resid_post', direction]])));
writeVectorFile(path.join(dir, 'pre.safetensors'), makeSteeringVector('<memory>', new Map([['blocks.2.hook_resid_pre', direction]])));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function problemsOf(mode: UpstreamSteeringMode, actions: string): string[] {
  const file = path.join(dir, 'p.yaml');
  fs.writeFileSync(file, `apiVersion: saegate/v1\nkind: Policy\nmetadata: {name: calm}\nspec:\n  actions:\n${actions}`);
  const read = readPolicyFiles(file);
  expect(read.problems).toEqual([]);
  return compilePolicySet(read.sources, { vectors: new VectorStore({ baseDir: dir }), upstreamSteering: mode }, 1, read.files).problems.map(formatProblem);
}

const conditional = `    - monitor: {sae: demo, features: [{index: 3}]}
    - steer: {vector: post.safetensors, scale: 1, when: {feature: {sae: demo, index: 3, above: 1}}}
    - flag: {name: seen, when: {feature: {sae: demo, index: 3, above: 1}}}
    - abort: {when: {feature: {sae: demo, index: 3, above: 9}}}
`;

describe('policies for a server without the tap', () => {
  it.each(['reference', 'easysteer', 'vllm-xargs'] as const)('%s: refuses every condition, naming the policy and the mode', (mode) => {
    const problems = problemsOf(mode, conditional);
    expect(problems).toHaveLength(3);
    for (const [i, action] of [[1, 'steer'], [2, 'flag'], [3, 'abort']] as const) {
      expect(problems).toContainEqual(expect.stringMatching(new RegExp(`p\\.yaml:\\d+:\\d+: spec\\.actions\\[${i}\\]\\.${action}\\.when: policy 'calm': conditions need activations from the tap, but --upstream-steering ${mode}`)));
    }
  });

  it.each(['tap', 'none'] as const)('%s: accepts conditions', (mode) => {
    expect(problemsOf(mode, conditional)).toEqual([]);
  });

  it('easysteer: refuses a hook or position range its field cannot express; reference accepts them', () => {
    const steers = `    - steer: {vector: pre.safetensors, scale: 1}
    - steer: {vector: post.safetensors, scale: 1, positions: {from: 2, until: 5}}
    - steer: {vector: post.safetensors, scale: 1}
`;
    expect(problemsOf('easysteer', steers)).toEqual([
      expect.stringMatching(/spec\.actions\[0\]\.steer: policy 'calm': EasySteer's direct algorithm adds to decoder-layer outputs \(blocks\.N\.hook_resid_post\), not 'blocks\.2\.hook_resid_pre'$/),
      expect.stringMatching(/spec\.actions\[1\]\.steer: policy 'calm': EasySteer takes prompt and generation selectors, not absolute positions/),
    ]);
    expect(problemsOf('reference', steers)).toEqual([]);
  });
});
