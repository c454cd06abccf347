import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { compilePolicySet, type PolicyContext } from '../../../src/policies/compile.js';
import { formatProblem, parsePolicyText, readPolicyFiles } from '../../../src/policies/load.js';
import { PolicyManager, type PolicyLoadResult } from '../../../src/policies/manager.js';
import { apiKeyHash, PolicyResolver, rolloutPoint, type MatchRequest } from '../../../src/policies/resolve.js';
import { writeVectorFile } from '../../../src/steering/formats.js';
import { VectorStore } from '../../../src/steering/store.js';
import { makeSteeringVector } from '../../../src/steering/vector.js';

const D_MODEL = 8;
let dir: string;

function vector(seed: number, hooks = ['blocks.2.hook_resid_post']) {
  return makeSteeringVector('<memory>', new Map(hooks.map((hook, h) => [hook, Float32Array.from({ length: D_MODEL }, (_, i) => Math.sin(seed + i + h))])));
}

function context(): PolicyContext {
  return {
    vectors: new VectorStore({ baseDir: dir }),
    model: { dModel: D_MODEL, hookPoints: new Set(['blocks.1.hook_resid_post', 'blocks.2.hook_resid_post', 'blocks.2.hook_resid_pre']) },
    saes: new Map([['demo', { dSae: 64, hook: 'blocks.2.hook_resid_post', labels: new Map([[7, { label: 'sadness' }]]) }]]),
  };
}

const steerPolicy = (name: string, extra = '') => `apiVersion: saegate/v1
kind: Policy
metadata:
  name: ${name}
spec:${extra}
  actions:
    - steer:
        vector: sad.safetensors
        scale: -0.5
`;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'saegate-policies-'));
  writeVectorFile(path.join(dir, 'sad.safetensors'), vector(1));
  writeVectorFile(path.join(dir, 'wide.safetensors'), makeSteeringVector('<memory>', new Map([['blocks.2.hook_resid_post', new Float32Array(D_MODEL + 1)]])));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

function problemsOf(text: string): string[] {
  const file = path.join(dir, 'p.yaml');
  fs.writeFileSync(file, text);
  const read = readPolicyFiles(file);
  if (read.problems.length > 0) return read.problems.map(formatProblem);
  return compilePolicySet(read.sources, context(), 1, read.files).problems.map(formatProblem);
}

describe('policy files: errors name file, line, column and path', () => {
  it('refuses unknown keys, pointing at the key', () => {
    const text = steerPolicy('a').replace('scale: -0.5', 'scale: -0.5\n        scael: 2');
    expect(problemsOf(text)).toEqual([`${path.join(dir, 'p.yaml')}:10:9: spec.actions[0].steer.scael: unknown key 'scael'`]);
  });

  it('refuses wrong types at the value', () => {
    expect(problemsOf(steerPolicy('a').replace('scale: -0.5', 'scale: lots'))).toEqual([
      expect.stringMatching(/p\.yaml:9:16: spec\.actions\[0\]\.steer\.scale: .*expected number/),
    ]);
  });

  it('refuses a missing vector file', () => {
    expect(problemsOf(steerPolicy('a').replace('sad.safetensors', 'gone.safetensors'))).toEqual([
      expect.stringMatching(/p\.yaml:8:17: spec\.actions\[0\]\.steer\.vector: steering vector '.*gone\.safetensors': no such file/),
    ]);
  });

  it('refuses a hook the model lacks and a vector of the wrong width', () => {
    const hook = steerPolicy('a').replace('scale: -0.5', 'scale: -0.5\n        hooks: [blocks.9.hook_resid_post]');
    expect(problemsOf(hook)).toEqual([expect.stringMatching(/:10:17: spec\.actions\[0\]\.steer\.hooks\[0\]: the vector has no direction for 'blocks\.9\.hook_resid_post'/), expect.stringMatching(/the model has no hook point 'blocks\.9\.hook_resid_post'/)]);
    expect(problemsOf(steerPolicy('a').replace('sad.safetensors', 'wide.safetensors'))).toEqual([
      expect.stringMatching(/:8:17: spec\.actions\[0\]\.steer\.vector: the vector has 9 values per hook but the model's d_model is 8/),
    ]);
  });

  it('refuses a feature past d_sae and a threshold on an unwatched SAE', () => {
    const monitor = `apiVersion: saegate/v1
kind: Policy
metadata: {name: m}
spec:
  actions:
    - monitor:
        sae: demo
        features:
          - index: 64
`;
    expect(problemsOf(monitor)).toEqual([expect.stringMatching(/:9:20: spec\.actions\[0\]\.monitor\.features\[0\]\.index: feature 64 is past the SAE's d_sae 64/)]);
    const conditional = steerPolicy('c').replace('scale: -0.5', 'scale: -0.5\n        when:\n          feature: {sae: demo, index: 7, above: 2}');
    expect(problemsOf(conditional)).toEqual([expect.stringMatching(/:11:26: spec\.actions\[0\]\.steer\.when\.feature\.sae: SAE 'demo' is not watched/)]);
  });

  it('reports YAML syntax errors and every problem of a multi-document file', () => {
    expect(problemsOf('apiVersion: saegate/v1\nkind: [Policy\n')).toEqual([expect.stringMatching(/p\.yaml:\d+:\d+: \(document\): YAML syntax error/)]);
    const two = `${steerPolicy('a').replace('scale: -0.5', 'scale: x')}---\n${steerPolicy('b').replace('kind: Policy', 'kind: Polcy')}`;
    const problems = problemsOf(two);
    expect(problems).toHaveLength(2);
    expect(problems[1]).toMatch(/p\.yaml:12:7: kind: /);
  });

  it('refuses the same policy name twice, naming the first definition', () => {
    fs.writeFileSync(path.join(dir, 'a.yaml'), steerPolicy('same'));
    fs.writeFileSync(path.join(dir, 'b.yaml'), steerPolicy('same'));
    const read = readPolicyFiles(dir);
    expect(compilePolicySet(read.sources, context(), 1, read.files).problems.map(formatProblem)).toEqual([
      expect.stringMatching(/b\.yaml:4:9: metadata\.name: policy 'same' is already defined in .*a\.yaml:4/),
    ]);
  });
});

describe('matching and combining', () => {
  function resolverFor(...texts: string[]): PolicyResolver {
    const sources = texts.flatMap((t, i) => parsePolicyText(t, `p${i}.yaml`).sources);
    expect(sources).toHaveLength(texts.length);
    const { set, problems } = compilePolicySet(sources, context(), 3, []);
    expect(problems.map(formatProblem)).toEqual([]);
    return new PolicyResolver(set!);
  }
  const request = (over: Partial<MatchRequest> = {}): MatchRequest => ({ requestId: 'r1', route: 'completions', model: 'stories260K', headers: {}, ...over });

  it('matches on route, model glob, headers and API key hash, and names each policy with its set version', () => {
    const key = 'sk-tenant-a';
    const keyHash = apiKeyHash({ authorization: `Bearer ${key}` })!;
    const r = resolverFor(
      steerPolicy('chat-only', '\n  match: {routes: [chat_completions]}'),
      steerPolicy('stories', "\n  match: {models: ['stories*']}"),
      steerPolicy('tenant', '\n  match: {headers: {X-Tenant: [acme]}}'),
      steerPolicy('keyed', `\n  match: {apiKeySha256: [${keyHash}]}`),
    );
    expect(r.resolve(request()).policies).toEqual(['stories@3']);
    expect(r.resolve(request({ route: 'chat_completions', model: 'other' })).policies).toEqual(['chat-only@3']);
    expect(r.resolve(request({ model: null, headers: { 'x-tenant': 'acme' } })).policies).toEqual(['tenant@3']);
    expect(r.resolve(request({ model: null, headers: { authorization: `Bearer ${key}` } })).policies).toEqual(['keyed@3']);
    expect(r.resolve(request({ model: null, headers: { authorization: 'Bearer sk-other' } })).policies).toEqual([]);
  });

  it('rolls out deterministically by request id to about the stated share', () => {
    const r = resolverFor(steerPolicy('quarter', '\n  match: {percent: 25}'));
    let hits = 0;
    for (let i = 0; i < 4000; i++) {
      const id = `req-${i}`;
      const matched = r.resolve(request({ requestId: id })).policies.length === 1;
      expect(matched).toBe(rolloutPoint(id) < 25);
      expect(r.resolve(request({ requestId: id })).policies.length === 1).toBe(matched);
      if (matched) hits++;
    }
    expect(hits / 4000).toBeGreaterThan(0.22);
    expect(hits / 4000).toBeLessThan(0.28);
  });

  it('applies policies by priority then name, concatenating their terms (which add up in the server), fail-closed if any steering one says so', () => {
    const r = resolverFor(
      steerPolicy('zeta', '\n  priority: 10'),
      steerPolicy('alpha', '\n  priority: 10\n  failClosed: true').replace('scale: -0.5', 'scale: 2\n        positions: {from: 3, until: 9}'),
      steerPolicy('first', '\n  priority: -5'),
    );
    const plan = r.resolve(request());
    expect(plan.policies).toEqual(['first@3', 'alpha@3', 'zeta@3']);
    expect(plan.steering.map((t) => [t.hook, t.scale, t.fromPosition, t.untilPosition])).toEqual([
      ['blocks.2.hook_resid_post', -0.5, 0, null],
      ['blocks.2.hook_resid_post', 2, 3, 9],
      ['blocks.2.hook_resid_post', -0.5, 0, null],
    ]);
    expect(plan.failClosed).toBe(true);
    expect(plan.steering[0].vector).toBe(plan.steering[2].vector);
  });

  it("sends 'prompt' and 'generated' positions as spans the model server resolves", () => {
    const r = resolverFor(
      steerPolicy('gen').replace('scale: -0.5', 'scale: -0.5\n        positions: generated'),
      steerPolicy('pro').replace('scale: -0.5', 'scale: 1\n        positions: prompt'),
    );
    const plan = r.resolve(request());
    expect(plan.steering.map((t) => [t.scale, t.fromPosition, t.untilPosition, t.span])).toEqual([
      [-0.5, 0, null, 'generated'],
      [1, 0, null, 'prompt'],
    ]);
  });

  it('keeps conditional steers out of the initial plan', () => {
    const r = resolverFor(
      `${steerPolicy('cond').replace('scale: -0.5', 'scale: -0.5\n        when:\n          feature: {sae: demo, index: 7, above: 2, forTokens: 2}')}    - monitor:\n        sae: demo\n        features: [{index: 7}]\n`,
    );
    const plan = r.resolve(request());
    expect(plan.policies).toEqual(['cond@3']);
    expect(plan.steering).toEqual([]);
    expect(plan.matched[0].steers[0].when).toEqual({ feature: { sae: 'demo', index: 7, above: 2, forTokens: 2 } });
    expect(plan.matched[0].watches).toEqual([{ sae: 'demo', index: 7, label: 'sadness', alertFiringRateAbove: undefined, alertMeanActivationAbove: undefined }]);
  });
});

describe('hot reload', () => {
  function waitForLoad(manager: PolicyManager): Promise<PolicyLoadResult> {
    return new Promise((resolve) => {
      const off = manager.onLoad((result) => {
        off();
        resolve(result);
      });
    });
  }

  it('swaps in valid changes with a new version and keeps the last good set on an invalid one', async () => {
    const policies = path.join(dir, 'policies');
    fs.mkdirSync(policies);
    fs.copyFileSync(path.join(dir, 'sad.safetensors'), path.join(policies, 'sad.safetensors'));
    fs.writeFileSync(path.join(policies, 'a.yaml'), steerPolicy('a'));
    const registry = new Registry();
    const manager = new PolicyManager({ path: policies, context: () => ({ ...context(), vectors: new VectorStore({ baseDir: policies }) }), debounceMs: 20, registry });
    try {
      expect(manager.start()).toMatchObject({ ok: true, version: 1 });
      const before = manager.resolve({ requestId: 'x', route: 'completions', model: null, headers: {} });

      let loaded = waitForLoad(manager);
      fs.writeFileSync(path.join(policies, 'b.yaml'), steerPolicy('b'));
      expect(await loaded).toMatchObject({ ok: true, version: 2 });
      expect(manager.current?.policies.map((p) => p.name)).toEqual(['a', 'b']);

      loaded = waitForLoad(manager);
      fs.writeFileSync(path.join(policies, 'c.yaml'), steerPolicy('c').replace('scale: -0.5', 'scale: nope'));
      const bad = await loaded;
      expect(bad.ok).toBe(false);
      expect(bad.problems.map(formatProblem)).toEqual([expect.stringMatching(/c\.yaml:9:16: spec\.actions\[0\]\.steer\.scale/)]);
      expect(manager.current?.version).toBe(2);
      expect(manager.resolve({ requestId: 'x', route: 'completions', model: null, headers: {} }).policies).toEqual(['a@2', 'b@2']);
      // A plan resolved before the swaps keeps its own set.
      expect(before.policies).toEqual(['a@1']);
      const metrics = await registry.metrics();
      expect(metrics).toMatch(/saegate_policy_reload_ok 0/);
      expect(metrics).toMatch(/saegate_policy_set_version 2/);
      expect(metrics).toMatch(/saegate_policy_reloads_total\{result="invalid"\} 1/);
    } finally {
      manager.close();
    }
  });

  it('sees a Kubernetes ConfigMap update (the ..data symlink swapped to a new directory)', async () => {
    const mount = path.join(dir, 'mount');
    fs.mkdirSync(mount);
    const v1 = path.join(mount, '..2026_12_02_00_00_00.000000001');
    fs.mkdirSync(v1);
    fs.copyFileSync(path.join(dir, 'sad.safetensors'), path.join(v1, 'sad.safetensors'));
    fs.writeFileSync(path.join(v1, 'policy.yaml'), steerPolicy('v-one'));
    fs.symlinkSync(path.basename(v1), path.join(mount, '..data'));
    fs.symlinkSync('..data/policy.yaml', path.join(mount, 'policy.yaml'));
    fs.symlinkSync('..data/sad.safetensors', path.join(mount, 'sad.safetensors'));
    const manager = new PolicyManager({ path: mount, context: () => ({ ...context(), vectors: new VectorStore({ baseDir: mount }) }), debounceMs: 20 });
    try {
      expect(manager.start()).toMatchObject({ ok: true, version: 1 });
      expect(manager.current?.policies.map((p) => p.name)).toEqual(['v-one']);
      // kubelet's update: write the new timestamped directory, point a temporary link at it, rename it over ..data.
      const v2 = path.join(mount, '..2026_12_02_00_01_00.000000002');
      fs.mkdirSync(v2);
      fs.copyFileSync(path.join(dir, 'sad.safetensors'), path.join(v2, 'sad.safetensors'));
      fs.writeFileSync(path.join(v2, 'policy.yaml'), steerPolicy('v-two'));
      const loaded = waitForLoad(manager);
      fs.symlinkSync(path.basename(v2), path.join(mount, '..data_tmp'));
      fs.renameSync(path.join(mount, '..data_tmp'), path.join(mount, '..data'));
      fs.rmSync(v1, { recursive: true });
      expect(await loaded).toMatchObject({ ok: true });
      expect(manager.current?.policies.map((p) => p.name)).toEqual(['v-two']);
    } finally {
      manager.close();
    }
  });
});
