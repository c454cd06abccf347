/**
 * Policy benchmarks (issue 11), all in one run so the ratios mean something on a shared machine:
 *
 * 1. Plan resolution per request with 50 policies loaded (PolicyManager.resolve, the proxy's
 *    PlanResolver): µs p50/p99 for a request matching no policy, one matching two steering
 *    policies, and, as the baseline, the same requests against a set of 1 policy.
 * 2. Reload time: PolicyManager.loadNow() on a directory of 50 files (read, parse, validate,
 *    compile, swap), against 1 file.
 * 3. Proxy throughput through the reference model server (a seeded synthetic model, tapped, so
 *    plans really go down the tap): the same proxy with its resolver switched, round by round,
 *    between no policies, 50 policies none of which match, and 50 policies two of which steer the
 *    request. Modes are interleaved (rotated each round); each round's ratio is against that
 *    round's no-policy run and the median ratio over rounds is reported. Completion tokens/s are
 *    reported too, since steering can change when a model stops.
 *
 *   npx tsx test/bench/policies.ts [--rounds N] [--seconds S] [--concurrency C] [--quick]
 *
 * Prints tables; asserts nothing about time.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import OpenAI from 'openai';
import { PolicyManager } from '../../src/policies/manager.js';
import type { MatchRequest } from '../../src/policies/resolve.js';
import { startModelServer } from '../../src/model/server.js';
import { EMPTY_PLAN, type PlanResolver } from '../../src/proxy/plan.js';
import { startProxy } from '../../src/proxy/server.js';
import { writeVectorFile } from '../../src/steering/formats.js';
import { VectorStore } from '../../src/steering/store.js';
import { makeSteeringVector } from '../../src/steering/vector.js';
import { freePort } from '../helpers/ports.js';

const { values } = parseArgs({ options: { rounds: { type: 'string' }, seconds: { type: 'string' }, concurrency: { type: 'string' }, quick: { type: 'boolean' } } });
const rounds = Number(values.rounds ?? (values.quick ? 2 : 5));
const seconds = Number(values.seconds ?? (values.quick ? 1 : 3));
const concurrency = Number(values.concurrency ?? 8);

const D_MODEL = 64;
const MODEL_ARG = `synthetic:dim=${D_MODEL},layers=2,heads=4,kv=2,hidden=128,vocab=300,ctx=256,seed=5`;
const HOOKS = ['blocks.0.hook_resid_post', 'blocks.1.hook_resid_post'];

/** 50 policies the way a multi-tenant deployment might have them: 45 per-tenant, 5 global. */
function writePolicyDir(count: number): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `saegate-bench-policies-${count}-`));
  HOOKS.forEach((hook, h) => {
    const direction = Float32Array.from({ length: D_MODEL }, (_, i) => Math.sin(0.7 * i + h));
    writeVectorFile(path.join(dir, `v${h}.safetensors`), makeSteeringVector('<memory>', new Map([[hook, direction]])));
  });
  for (let i = 0; i < count; i++) {
    const global = i >= count - 5;
    const match = global
      ? i === count - 1
        ? `  match: {models: ['synthetic*'], headers: {x-tenant: [t7]}}\n` // the one global policy that steers t7
        : `  match: {models: ['other-${i}*'], percent: 50}\n`
      : `  match:\n    headers: {x-tenant: [t${i}]}\n    routes: [completions, chat_completions]\n`;
    const text =
      `apiVersion: saegate/v1\nkind: Policy\nmetadata: {name: p${String(i).padStart(2, '0')}}\nspec:\n  priority: ${i}\n${match}  actions:\n` +
      `    - steer: {vector: v${i % 2}.safetensors, scale: 0.05, positions: {from: 1}}\n` +
      `    - flag: {name: tenant-${i}}\n`;
    fs.writeFileSync(path.join(dir, `p${String(i).padStart(2, '0')}.yaml`), text);
  }
  return dir;
}

function manager(dir: string): PolicyManager {
  const m = new PolicyManager({ path: dir, watch: false, context: () => ({ vectors: new VectorStore({ baseDir: dir }), model: { dModel: D_MODEL, hookPoints: new Set(HOOKS) } }) });
  const result = m.start();
  if (!result.ok) throw new Error(`bench policies invalid: ${JSON.stringify(result.problems)}`);
  return m;
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function request(tenant: string, i: number): MatchRequest {
  return { requestId: `req-${i}`, route: 'completions', model: 'synthetic', headers: { 'x-tenant': tenant, 'content-type': 'application/json' } };
}

function resolution(): void {
  const dirs = { 1: writePolicyDir(1), 50: writePolicyDir(50) };
  const sets = { 1: manager(dirs[1]), 50: manager(dirs[50]) };
  const n = values.quick ? 20_000 : 100_000;
  console.log(`\n## Plan resolution per request (${n} calls each, µs)`);
  console.log('| policies | request | matched | p50 µs | p99 µs | p50 vs 1 policy (the 1-policy set is the one that steers t7) |');
  console.log('|---|---|---|---|---|---|');
  const p50s = new Map<string, number>();
  for (const tenant of ['nobody', 't7']) {
    for (const size of [1, 50] as const) {
      const m = sets[size];
      for (let i = 0; i < 5000; i++) m.resolve(request(tenant, i)); // warm up
      const times = new Float64Array(n);
      let matched = 0;
      for (let i = 0; i < n; i++) {
        const req = request(tenant, i);
        const t0 = performance.now();
        const plan = m.resolve(req);
        times[i] = performance.now() - t0;
        matched = plan.policies.length;
      }
      const sorted = [...times].sort((a, b) => a - b);
      const p50 = quantile(sorted, 0.5) * 1000;
      const p99 = quantile(sorted, 0.99) * 1000;
      p50s.set(`${tenant}/${size}`, p50);
      const ratio = size === 1 ? '1.00' : (p50 / p50s.get(`${tenant}/1`)!).toFixed(2);
      console.log(`| ${size} | x-tenant: ${tenant} | ${matched} | ${p50.toFixed(2)} | ${p99.toFixed(2)} | ${ratio} |`);
    }
  }
  const reloads = values.quick ? 10 : 30;
  console.log(`\n## Reload (loadNow: read, parse, validate, compile, swap; ${reloads} loads each)`);
  console.log('| files | p50 ms | max ms | p50 vs 1 file |');
  console.log('|---|---|---|---|');
  let base = 0;
  for (const size of [1, 50] as const) {
    const times: number[] = [];
    for (let i = 0; i < reloads; i++) {
      const t0 = performance.now();
      const result = sets[size].loadNow();
      times.push(performance.now() - t0);
      if (!result.ok) throw new Error('reload failed');
    }
    const p50 = median(times);
    if (size === 1) base = p50;
    console.log(`| ${size} | ${p50.toFixed(2)} | ${Math.max(...times).toFixed(2)} | ${(p50 / base).toFixed(2)} |`);
  }
  for (const m of Object.values(sets)) m.close();
  for (const dir of Object.values(dirs)) fs.rmSync(dir, { recursive: true, force: true });
}

type Mode = 'none' | '50, none match' | '50, 2 steer';
const MODES: Mode[] = ['none', '50, none match', '50, 2 steer'];

interface RoundResult {
  rps: number;
  tokensPerSecond: number;
  errors: number;
  applied: string;
}

async function throughput(): Promise<void> {
  const dir = writePolicyDir(50);
  const policies = manager(dir);
  let mode: Mode = 'none';
  // One proxy and one tapped model server for every mode: only the resolver's answer changes.
  const resolver: PlanResolver = { resolve: (r) => (mode === 'none' ? EMPTY_PLAN : policies.resolve(r)) };
  const modelPort = await freePort();
  const proxy = await startProxy({ upstream: `http://127.0.0.1:${modelPort}`, port: 0, planResolver: resolver, logger: false });
  const connected = proxy.tap.server.nextConnection();
  const model = await startModelServer({ model: MODEL_ARG, port: modelPort, tapUrl: proxy.tapUrl, planWaitTimeoutMs: 5000 });
  await connected;
  const client = new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: 'unused', maxRetries: 0 });

  async function round(m: Mode, ms: number): Promise<RoundResult> {
    mode = m;
    const tenant = m === '50, 2 steer' ? 't7' : 'nobody';
    const end = performance.now() + ms;
    let requests = 0;
    let tokens = 0;
    let errors = 0;
    let applied = '';
    const worker = async (k: number): Promise<void> => {
      for (let i = 0; performance.now() < end; i++) {
        try {
          const { data, response } = await client.completions
            .create({ model: 'synthetic', prompt: `Bench ${k} ${i}`, max_tokens: 16, temperature: 0 }, { headers: { 'x-tenant': tenant } })
            .withResponse();
          requests++;
          tokens += data.usage?.completion_tokens ?? 0;
          applied = response.headers.get('x-saegate-applied') ?? '';
        } catch {
          errors++;
        }
      }
    };
    const t0 = performance.now();
    await Promise.all(Array.from({ length: concurrency }, (_, k) => worker(k)));
    const elapsed = (performance.now() - t0) / 1000;
    return { rps: requests / elapsed, tokensPerSecond: tokens / elapsed, errors, applied };
  }

  await round('50, 2 steer', 500); // warm up every path
  await round('none', 500);
  const results = new Map<Mode, RoundResult[]>(MODES.map((m) => [m, []]));
  const ratios = new Map<Mode, { rps: number[]; tps: number[] }>(MODES.map((m) => [m, { rps: [], tps: [] }]));
  for (let r = 0; r < rounds; r++) {
    const order = MODES.map((_, i) => MODES[(i + r) % MODES.length]);
    const got = new Map<Mode, RoundResult>();
    for (const m of order) got.set(m, await round(m, seconds * 1000));
    for (const m of MODES) {
      results.get(m)!.push(got.get(m)!);
      ratios.get(m)!.rps.push(got.get(m)!.rps / got.get('none')!.rps);
      ratios.get(m)!.tps.push(got.get(m)!.tokensPerSecond / got.get('none')!.tokensPerSecond);
    }
  }
  console.log(`\n## Proxy throughput through the reference model server (${MODEL_ARG}, c=${concurrency}, max_tokens 16, ${rounds} rounds × ${seconds} s per mode, interleaved)`);
  console.log('| policies | req/s (median) | tokens/s (median) | req/s vs none (median of per-round ratios) | tokens/s vs none | errors | x-saegate-applied (last) |');
  console.log('|---|---|---|---|---|---|---|');
  for (const m of MODES) {
    const rs = results.get(m)!;
    console.log(
      `| ${m} | ${median(rs.map((x) => x.rps)).toFixed(1)} | ${median(rs.map((x) => x.tokensPerSecond)).toFixed(0)} | ${median(ratios.get(m)!.rps).toFixed(3)} | ${median(ratios.get(m)!.tps).toFixed(3)} | ${rs.reduce((a, x) => a + x.errors, 0)} | ${rs.at(-1)!.applied.slice(0, 60)} |`,
    );
  }
  await proxy.close({ timeoutMs: 0 });
  await model.close();
  policies.close();
  fs.rmSync(dir, { recursive: true, force: true });
}

resolution();
await throughput();
