/**
 * `saegate serve --policies DIR` semantics (startProxyWithSaes with a policy directory) against the
 * reference model server (a seeded synthetic model), read by the real `openai` client:
 *
 * - `failClosed`: with no tap-connected model server, a fail-closed steering policy gets 503
 *   SAEGATE_ERR_STEERING_UNAVAILABLE; a fail-open one is answered unsteered (exactly the direct
 *   answer) and says `steering=skipped`.
 * - Hot reload under load: 16 clients stream continuously while the directory changes several
 *   times, an invalid file included; no request fails, every response names the set version it
 *   was resolved against (never older than the set in use when it was sent, never newer than the
 *   set in use when it ended), and the invalid file keeps the previous set.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProxyWithSaes } from '../../src/cli/serve.js';
import { startModelServer, type ModelServer } from '../../src/model/server.js';
import type { PolicyLoadResult, PolicyManager } from '../../src/policies/manager.js';
import type { ProxyServer } from '../../src/proxy/server.js';
import { writeVectorFile } from '../../src/steering/formats.js';
import { makeSteeringVector } from '../../src/steering/vector.js';
import { freePort } from '../helpers/ports.js';
import { waitFor } from '../helpers/wait.js';

const MODEL_ARG = 'synthetic:dim=64,layers=2,heads=4,kv=2,hidden=128,vocab=300,ctx=256,seed=11';
const HOOK = 'blocks.1.hook_resid_post';

function writeVector(dir: string): void {
  const direction = Float32Array.from({ length: 64 }, (_, i) => Math.cos(0.9 * i + 0.1));
  writeVectorFile(path.join(dir, 'push.safetensors'), makeSteeringVector('<memory>', new Map([[HOOK, direction]])));
}

function steerPolicy(name: string, scale: number, extra = ''): string {
  return `apiVersion: saegate/v1\nkind: Policy\nmetadata: {name: ${name}}\nspec:\n${extra}  actions:\n    - steer: {vector: push.safetensors, scale: ${scale}}\n`;
}

/** Writes a file the way editors and ConfigMaps do: a hidden temporary, then one rename. */
function replaceFile(file: string, text: string): void {
  const temp = path.join(path.dirname(file), `.${path.basename(file)}.tmp`);
  fs.writeFileSync(temp, text);
  fs.renameSync(temp, file);
}

async function metric(proxy: ProxyServer, name: string): Promise<number> {
  const text = await (await fetch(`${proxy.url}/metrics`)).text();
  const match = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  if (!match) throw new Error(`${name} not exported`);
  return Number(match[1]);
}

describe('failClosed with no tap-connected model server', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'saegate-failclosed-'));
  let model: ModelServer;
  let proxy: ProxyServer;
  let client: OpenAI;

  beforeAll(async () => {
    writeVector(dir);
    fs.writeFileSync(path.join(dir, 'strict.yaml'), steerPolicy('strict', 2, '  failClosed: true\n  match: {headers: {x-tenant: [strict]}}\n'));
    fs.writeFileSync(path.join(dir, 'lenient.yaml'), steerPolicy('lenient', 2, '  match: {headers: {x-tenant: [lenient]}}\n'));
    model = await startModelServer({ model: MODEL_ARG, port: 0 }); // no tapUrl: nothing can steer
    ({ server: proxy } = await startProxyWithSaes({ upstream: model.url, port: 0 }, [], dir));
    client = new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  });
  afterAll(async () => {
    await proxy?.close({ timeoutMs: 0 });
    await model?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const body = { model: 'synthetic', prompt: 'Once upon a time', max_tokens: 8, temperature: 0 };

  it('refuses a fail-closed steering request with 503 SAEGATE_ERR_STEERING_UNAVAILABLE', async () => {
    const error = await client.completions.create(body, { headers: { 'x-tenant': 'strict', 'x-request-id': 'strict-1' } }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(OpenAI.APIError);
    const apiError = error as InstanceType<typeof OpenAI.APIError>;
    expect(apiError.status).toBe(503);
    expect(apiError.code).toBe('SAEGATE_ERR_STEERING_UNAVAILABLE');
    expect(apiError.message).toContain('strict-1');
    expect(apiError.headers?.get('retry-after')).not.toBeNull();
  });

  it('answers a fail-open one unsteered, exactly as the model server does directly, saying steering=skipped', async () => {
    const direct = await new OpenAI({ baseURL: `${model.url}/v1`, apiKey: 'unused', maxRetries: 0 }).completions.create(body);
    const { data, response } = await client.completions.create(body, { headers: { 'x-tenant': 'lenient' } }).withResponse();
    expect(response.status).toBe(200);
    expect(response.headers.get('x-saegate-applied')).toBe('policy=lenient@1, steering=skipped');
    expect(data.choices[0].text).toBe(direct.choices[0].text);
  });
});

describe('hot reload under 16 concurrent streams', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'saegate-reload-load-'));
  let model: ModelServer;
  let proxy: ProxyServer;
  let policies: PolicyManager;
  let client: OpenAI;

  beforeAll(async () => {
    writeVector(dir);
    fs.writeFileSync(path.join(dir, 'all.yaml'), steerPolicy('all', 1));
    const modelPort = await freePort();
    const started = await startProxyWithSaes({ upstream: `http://127.0.0.1:${modelPort}`, port: 0 }, [], dir);
    proxy = started.server;
    policies = started.policies!;
    const connected = proxy.tap.server.nextConnection();
    model = await startModelServer({ model: MODEL_ARG, port: modelPort, tapUrl: proxy.tapUrl, planWaitTimeoutMs: 5000 });
    await connected;
    client = new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  });
  afterAll(async () => {
    await model?.close();
    await proxy?.close({ timeoutMs: 0 });
    fs.rmSync(dir, { recursive: true, force: true });
  });

  interface Done {
    /** Set version in use when the request was sent / when its stream ended. */
    sentAt: number;
    endedAt: number;
    applied: string;
    finish: string | null;
  }

  it('fails no request, names the version each used, and keeps the last good set on an invalid file', async () => {
    const loads: PolicyLoadResult[] = [];
    policies.onLoad((result) => loads.push(result));
    const done: Done[] = [];
    const failures: unknown[] = [];
    let stop = false;
    const version = (): number => policies.current?.version ?? 0;

    const streamer = async (k: number): Promise<void> => {
      for (let i = 0; !stop; i++) {
        const sentAt = version();
        try {
          const { data: stream, response } = await client.completions
            .create({ model: 'synthetic', prompt: `Story ${k}.${i}`, max_tokens: 24, temperature: 0, stream: true })
            .withResponse();
          let finish: string | null = null;
          for await (const chunk of stream) finish = chunk.choices[0].finish_reason ?? finish;
          done.push({ sentAt, endedAt: version(), applied: response.headers.get('x-saegate-applied') ?? '', finish });
        } catch (error) {
          failures.push(error);
          return;
        }
      }
    };
    const running = Array.from({ length: 16 }, (_, k) => streamer(k));
    const servedWith = (v: number) => () => failures.length > 0 || done.some((d) => d.sentAt >= v);
    const nextLoad = (count: number) => () => failures.length > 0 || loads.length >= count;

    let second = 0;
    let third = 0;
    try {
      await waitFor('a stream on set version 1', servedWith(1), { deadlineMs: 30_000 });

      replaceFile(path.join(dir, 'all.yaml'), steerPolicy('all', -1)); // a good change
      await waitFor('a good reload', () => failures.length > 0 || loads.some((l) => l.ok), { deadlineMs: 30_000 });
      second = version();
      expect(second).toBeGreaterThan(1);
      await waitFor(`a stream sent on version ${second}`, servedWith(second), { deadlineMs: 30_000 });

      // A watcher may report one change twice (two good loads); the set in use right before the
      // invalid file is what must stay.
      const beforeTypo = version();
      const before = loads.length;
      replaceFile(path.join(dir, 'typo.yaml'), 'apiVersion: saegate/v1\nkind: Policy\nmetadata: {name: typo}\nspec:\n  actions:\n    - steer: {vector: push.safetensors, scael: 1}\n');
      await waitFor('the invalid change to be refused', nextLoad(before + 1), { deadlineMs: 30_000 });
      expect(loads.slice(before).every((l) => !l.ok)).toBe(true);
      expect(version()).toBe(beforeTypo); // the previous set stays
      expect(policies.lastProblems.map((p) => `${path.basename(p.file)}:${p.line}: ${p.path}`).sort()).toEqual([
        'typo.yaml:6: spec.actions[0].steer.scael', // the unknown key
        'typo.yaml:6: spec.actions[0].steer.scale', // and the missing one
      ]);
      expect(await metric(proxy, 'saegate_policy_reload_ok')).toBe(0);
      const refusedAt = done.length;
      await waitFor('streams served while the invalid file is refused', () => failures.length > 0 || done.length >= refusedAt + 16, { deadlineMs: 30_000 });

      const beforeFix = loads.length;
      replaceFile(path.join(dir, 'typo.yaml'), steerPolicy('typo', 0.5)); // fixed: two policies now
      await waitFor('the fixed set to load', () => failures.length > 0 || loads.slice(beforeFix).some((l) => l.ok), { deadlineMs: 30_000 });
      third = version();
      expect(third).toBeGreaterThan(beforeTypo);
      await waitFor(`a stream sent on version ${third}`, servedWith(third), { deadlineMs: 30_000 });
      expect(await metric(proxy, 'saegate_policy_reload_ok')).toBe(1);
      expect(await metric(proxy, 'saegate_policy_set_version')).toBe(third);
    } finally {
      stop = true;
      await Promise.all(running);
    }

    expect(failures).toEqual([]);
    const good = new Set(loads.filter((l) => l.ok).map((l) => l.version).concat(1));
    for (const d of done) {
      const match = /^policy=all@(\d+)(, policy=typo@(\d+))?, steering=plan-[0-9a-f]+-[0-9a-z]+$/.exec(d.applied);
      expect(match, d.applied).not.toBeNull();
      const used = Number(match![1]);
      if (match![3] !== undefined) expect(Number(match![3])).toBe(used); // one set per request
      expect(match![3] !== undefined).toBe(used >= third);
      expect(good.has(used)).toBe(true);
      expect(used).toBeGreaterThanOrEqual(d.sentAt);
      expect(used).toBeLessThanOrEqual(d.endedAt);
      expect(['length', 'stop']).toContain(d.finish);
    }
    const usedVersions = new Set(done.map((d) => Number(/@(\d+)/.exec(d.applied)![1])));
    expect(usedVersions.has(1) && usedVersions.has(second) && usedVersions.has(third)).toBe(true);
  });
});
