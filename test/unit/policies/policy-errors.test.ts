/**
 * Bad policies beyond `steer` (policies.test.ts covers its unknown keys, types, missing vector,
 * hook, width, d_sae and unwatched-SAE cases): the same checks on the conditions of `flag` and
 * `abort` actions and on `projection` conditions, and type errors in `match`. Every problem must
 * name the file, the line and column of the offending value (or key) and its path.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { compilePolicySet, type PolicyContext } from '../../../src/policies/compile.js';
import { formatProblem, readPolicyFiles } from '../../../src/policies/load.js';
import { writeVectorFile } from '../../../src/steering/formats.js';
import { VectorStore } from '../../../src/steering/store.js';
import { makeSteeringVector } from '../../../src/steering/vector.js';

const D_MODEL = 8;
let dir: string;
let file: string;

function context(): PolicyContext {
  return {
    vectors: new VectorStore({ baseDir: dir }),
    model: { dModel: D_MODEL, hookPoints: new Set(['blocks.1.hook_resid_post', 'blocks.2.hook_resid_post']) },
    saes: new Map([['demo', { dSae: 64, hook: 'blocks.2.hook_resid_post' }]]),
  };
}

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'saegate-policy-errors-'));
  file = path.join(dir, 'p.yaml');
  const direction = (n: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i));
  writeVectorFile(path.join(dir, 'dir.safetensors'), makeSteeringVector('<memory>', new Map([['blocks.2.hook_resid_post', direction(D_MODEL)], ['blocks.7.hook_resid_post', direction(D_MODEL)]])));
  writeVectorFile(path.join(dir, 'wide.safetensors'), makeSteeringVector('<memory>', new Map([['blocks.2.hook_resid_post', direction(D_MODEL + 1)]])));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

function problemsOf(text: string): string[] {
  fs.writeFileSync(file, text);
  const read = readPolicyFiles(file);
  if (read.problems.length > 0) return read.problems.map(formatProblem);
  return compilePolicySet(read.sources, context(), 1, read.files).problems.map(formatProblem);
}

/** A policy whose actions are the given YAML lines (indented under `actions:`). */
function policy(actions: string, spec = ''): string {
  return `apiVersion: saegate/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n${spec}  actions:\n${actions}`;
}

const WATCH = '    - monitor: {sae: demo, features: [{index: 3}]}\n';

describe('policy errors in flag, abort and projection conditions name file, line, column and path', () => {
  const at = (where: string, rest: string): string => `${file}:${where}: ${rest}`;

  it('refuses an abort without a condition (a wrong type), at the abort', () => {
    expect(problemsOf(policy('    - abort: {reason: x}\n'))).toEqual([at('6:14', 'spec.actions[0].abort.when: a condition is {feature: {sae, index, above, forTokens?}} or {projection: {vector, hook, above, forTokens?}}')]);
  });

  it('refuses unknown keys and out-of-range values inside a condition, each at its own position', () => {
    expect(problemsOf(policy(`${WATCH}    - abort:\n        when: {feature: {sae: demo, index: 3, abvoe: 1}}\n`))).toEqual([
      at('8:25', 'spec.actions[1].abort.when.feature.above: Invalid input: expected number, received undefined'),
      at('8:47', "spec.actions[1].abort.when.feature.abvoe: unknown key 'abvoe'"),
    ]);
    expect(problemsOf(policy(`${WATCH}    - abort:\n        when: {feature: {sae: demo, index: 3, above: 1, forTokens: 0}}\n`))).toEqual([
      at('8:68', 'spec.actions[1].abort.when.feature.forTokens: Too small: expected number to be >=1'),
    ]);
  });

  it('refuses a wrong type in match', () => {
    expect(problemsOf(policy(WATCH, '  match: {percent: half}\n'))).toEqual([at('5:20', 'spec.match.percent: Invalid input: expected number, received string')]);
  });

  it('refuses an abort condition on an unwatched SAE', () => {
    expect(problemsOf(policy('    - abort:\n        when: {feature: {sae: demo, index: 3, above: 1}}\n'))).toEqual([
      at('7:31', "spec.actions[0].abort.when.feature.sae: SAE 'demo' is not watched by any monitor action of the policy set, so its features are not evaluated per request; add a monitor action for it"),
    ]);
  });

  it('refuses a flag condition on a feature past d_sae, and on an SAE that is not loaded', () => {
    expect(problemsOf(policy(`${WATCH}    - flag:\n        name: hot\n        when: {feature: {sae: demo, index: 99, above: 1}}\n`))).toEqual([
      at('9:44', "spec.actions[1].flag.when.feature.index: feature 99 is past the SAE's d_sae 64"),
    ]);
    expect(problemsOf(policy(`${WATCH}    - flag: {name: hot, when: {feature: {sae: nope, index: 3, above: 1}}}\n`))).toEqual([
      at('7:47', "spec.actions[1].flag.when.feature.sae: SAE 'nope' is not watched by any monitor action of the policy set, so its features are not evaluated per request; add a monitor action for it"),
      at('7:47', "spec.actions[1].flag.when.feature.sae: no SAE named 'nope' is loaded (loaded: demo)"),
    ]);
  });

  it('refuses inResponse on an unconditional flag and a non-boolean one, at the value; takes it on a conditional flag', () => {
    expect(problemsOf(policy(`${WATCH}    - flag: {name: hot, inResponse: false}\n`))).toEqual([
      at('7:37', 'spec.actions[1].flag.inResponse: inResponse applies to a conditional flag (one with when); an unconditional flag is always in the response'),
    ]);
    expect(problemsOf(policy(`${WATCH}    - flag: {name: hot, when: {feature: {sae: demo, index: 3, above: 1}}, inResponse: later}\n`))).toEqual([
      at('7:87', 'spec.actions[1].flag.inResponse: Invalid input: expected boolean, received string'),
    ]);
    expect(problemsOf(policy(`${WATCH}    - flag: {name: hot, when: {feature: {sae: demo, index: 3, above: 1}}, inResponse: false}\n`))).toEqual([]);
  });

  it('refuses a projection on a hook the model lacks (at the hook) and a vector of the wrong width (at the vector)', () => {
    expect(problemsOf(policy('    - abort:\n        when: {projection: {vector: dir.safetensors, hook: blocks.7.hook_resid_post, above: 1}}\n'))).toEqual([
      at('7:60', "spec.actions[0].abort.when.projection.hook: the model has no hook point 'blocks.7.hook_resid_post'"),
    ]);
    expect(problemsOf(policy('    - abort:\n        when: {projection: {vector: wide.safetensors, hook: blocks.2.hook_resid_post, above: 1}}\n'))).toEqual([
      at('7:37', "spec.actions[0].abort.when.projection.vector: the vector has 9 values per hook but the model's d_model is 8"),
    ]);
  });

  it('points a hook the model lacks at the steer.hooks entry that names it', () => {
    const text = policy('    - steer:\n        vector: dir.safetensors\n        scale: 1\n        hooks: [blocks.2.hook_resid_post, blocks.7.hook_resid_post]\n');
    expect(problemsOf(text)).toEqual([at('9:43', "spec.actions[0].steer.hooks[1]: the model has no hook point 'blocks.7.hook_resid_post'")]);
  });
});
