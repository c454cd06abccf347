/**
 * Conditional steering and flags on live traffic, stories260K through the real proxy: an SAE at
 * the steered hook (`blocks.2.hook_resid_post`) runs over the tapped rows, policies steer when one
 * of its features crosses a threshold, and the test watches the same SAE results and the same
 * tapped rows the proxy gets.
 *
 * The trigger is made deterministic by calibration: unsteered runs of two prompts pick a feature
 * and a threshold that prompt A crosses at a generated position (first crossing) and prompt B never
 * does. Then, for each request, the trigger position must be the first position whose tapped
 * value is above the threshold; the rows at the steered hook must equal the unsteered run's until
 * the first steered position, which comes after the trigger and differs by exactly
 * `scale × vector`; a request whose condition never fired must get the direct model server's text.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProxyWithSaes } from '../../src/cli/serve.js';
import { startModelServer, type ModelServer } from '../../src/model/server.js';
import type { PolicyManager } from '../../src/policies/manager.js';
import type { ConditionRuntime, RuntimeRecord } from '../../src/policies/runtime.js';
import type { ProxyServer } from '../../src/proxy/server.js';
import type { SaeResultBatch } from '../../src/sae/batcher.js';
import type { SaeSink } from '../../src/sae/sink.js';
import { writeVectorFile } from '../../src/steering/formats.js';
import { makeSteeringVector } from '../../src/steering/vector.js';
import type { ActivationsFrame } from '../../src/tap/server.js';
import { freePort } from '../helpers/ports.js';
import { addDenseFeatures, addTappedRows } from '../helpers/tapped.js';
import { seededStandardSae } from '../helpers/sae.js';
import { waitFor } from '../helpers/wait.js';

const MODEL = path.resolve(import.meta.dirname, '..', '..', '..', 'shared', 'models', 'stories260K', 'stories260K.bin');
const hasModel = fs.existsSync(MODEL);
const HOOK = 'blocks.2.hook_resid_post';
const D_MODEL = 64;
const D_SAE = 256;
/** Long enough that a plan update lands well before the end, even on a loaded machine. */
const MAX_TOKENS = 160;
const PROMPT_A = 'Once upon a time, there was a little girl';
const PROMPT_B = 'The dog ran to the park';
const SCALE_A = 4;
const SCALE_B = -3;
/** Row comparisons: f16 rounding of residual values of a few units, plus batch-composition noise. */
const TOLERANCE = 0.05;

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'saegate-policy-cond-'));
const vectorA = Float32Array.from({ length: D_MODEL }, (_, i) => Math.sin(1.7 * i + 0.3));
const vectorB = Float32Array.from({ length: D_MODEL }, (_, i) => Math.cos(0.9 * i + 1.1));

let model: ModelServer;
let proxy: ProxyServer;
let sink: SaeSink;
let policies: PolicyManager;
let runtime: ConditionRuntime;
/** requestId → position → all D_SAE feature values (topK = d_sae, so nothing is cut off). */
const features = new Map<string, Map<number, Float32Array>>();
/** requestId → position → the tapped row at HOOK. */
const rows = new Map<string, Map<number, Float32Array>>();
const records: RuntimeRecord[] = [];
/** The calibrated condition. */
let feature = -1;
let threshold = 0;
/** First position of prompt A above the threshold, unsteered. */
let triggerA = -1;
/** The calibrated projection condition (on unit(vectorA) at HOOK) and prompt A's first crossing of it. */
let projectionThreshold = 0;
let triggerProjection = -1;
let projectionDirection = new Float32Array(D_MODEL);

function collectResults(batch: SaeResultBatch): void {
  addDenseFeatures(features, batch, D_SAE);
}

function collectRows(frame: ActivationsFrame): void {
  addTappedRows(rows, frame, HOOK);
}

interface Completion {
  text: string;
  applied: string | null;
  /** Streams: the value in the final SSE comment. */
  trailer: string | null;
  /** Rows the model computed: every prompt token and every generated token but the last. */
  fed: number;
  promptTokens: number;
}

async function complete(base: string, id: string, prompt: string, options: { headers?: Record<string, string>; stream?: boolean } = {}): Promise<Completion> {
  const res = await fetch(`${base}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-request-id': id, ...options.headers },
    body: JSON.stringify({ model: 'stories260K', prompt, max_tokens: MAX_TOKENS, temperature: 0, ...(options.stream && { stream: true, stream_options: { include_usage: true } }) }),
  });
  expect(res.status).toBe(200);
  const applied = res.headers.get('x-saegate-applied');
  if (!options.stream) {
    const body = (await res.json()) as { choices: { text: string }[]; usage: { prompt_tokens: number; completion_tokens: number } };
    return { text: body.choices[0].text, applied, trailer: null, fed: body.usage.prompt_tokens + body.usage.completion_tokens - 1, promptTokens: body.usage.prompt_tokens };
  }
  const raw = await res.text();
  let text = '';
  let fed = 0;
  let promptTokens = 0;
  for (const line of raw.split('\n')) {
    if (!line.startsWith('data: ') || line === 'data: [DONE]') continue;
    const event = JSON.parse(line.slice(6)) as { choices: { text: string }[]; usage?: { prompt_tokens: number; completion_tokens: number } | null };
    text += event.choices[0]?.text ?? '';
    if (event.usage) {
      fed = event.usage.prompt_tokens + event.usage.completion_tokens - 1;
      promptTokens = event.usage.prompt_tokens;
    }
  }
  const trailer = /^: x-saegate-applied=(.*)$/m.exec(raw)?.[1] ?? null;
  return { text, applied, trailer, fed, promptTokens };
}

/** Waits until every fed row of the request has been encoded and tapped. */
async function settled(id: string, fed: number): Promise<void> {
  await waitFor(`all ${fed} rows of ${id} encoded`, () => (features.get(id)?.size ?? 0) >= fed && (rows.get(id)?.size ?? 0) >= fed, {
    observed: () => `${features.get(id)?.size ?? 0} encoded, ${rows.get(id)?.size ?? 0} tapped`,
  });
}

function firstAbove(id: string): number {
  const byPosition = features.get(id)!;
  const positions = [...byPosition.keys()].sort((a, b) => a - b);
  return positions.find((p) => byPosition.get(p)![feature] > threshold) ?? -1;
}

function maxAbs(a: Float32Array, b: Float32Array, scale = 0, v?: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i] - (v ? scale * v[i] : 0)));
  return m;
}

/** The first position whose row differs from the unsteered reference's, and how far it is from `reference + scale × vector` there. */
function firstSteered(id: string, referenceId: string, scale: number, vector: Float32Array): { position: number; error: number } {
  const mine = rows.get(id)!;
  const reference = rows.get(referenceId)!;
  const positions = [...mine.keys()].filter((p) => reference.has(p)).sort((a, b) => a - b);
  for (const p of positions) {
    if (maxAbs(mine.get(p)!, reference.get(p)!) > TOLERANCE) return { position: p, error: maxAbs(mine.get(p)!, reference.get(p)!, scale, vector) };
  }
  return { position: -1, error: Number.NaN };
}

function policyYaml(name: string, tenant: string, vectorFile: string, scale: number, extra = ''): string {
  return (
    `apiVersion: saegate/v1\nkind: Policy\nmetadata: {name: ${name}}\nspec:\n  match:\n    headers: {x-tenant: [${tenant}]}\n  actions:\n` +
    `    - steer: {vector: ${vectorFile}, scale: ${scale}, when: {feature: {sae: test, index: ${feature}, above: ${threshold}}}}\n${extra}`
  );
}

beforeAll(async () => {
  if (!hasModel) return;
  writeVectorFile(path.join(dir, 'a.safetensors'), makeSteeringVector('<memory>', new Map([[HOOK, vectorA]])));
  writeVectorFile(path.join(dir, 'b.safetensors'), makeSteeringVector('<memory>', new Map([[HOOK, vectorB]])));
  fs.writeFileSync(path.join(dir, 'watch.yaml'), 'apiVersion: saegate/v1\nkind: Policy\nmetadata: {name: watch}\nspec:\n  actions:\n    - monitor: {sae: test, features: [{index: 0}]}\n');
  const sae = seededStandardSae({ dIn: D_MODEL, dSae: D_SAE, hook: HOOK, seed: 11, scales: { W_enc: 1, b_enc: 0.2, W_dec: 0.5, b_dec: 0.1 } });
  const modelPort = await freePort();
  const started = await startProxyWithSaes({ upstream: `http://127.0.0.1:${modelPort}`, port: 0, saeTopK: D_SAE, saeMaxDelayMs: 1 }, [sae], dir);
  proxy = started.server;
  sink = started.sink!;
  policies = started.policies!;
  runtime = started.conditions!;
  sink.onResult(collectResults);
  runtime.onRecord((record) => records.push(record));
  const connected = proxy.tap.server.nextConnection();
  model = await startModelServer({ model: MODEL, port: modelPort, tapUrl: proxy.tapUrl, planWaitTimeoutMs: 2000 });
  const connection = await connected;
  connection.on('activations', collectRows);
  await waitFor('the model server subscribed to the SAE hook', () => model.tap?.client.subscription !== null && model.tap?.client.subscription !== undefined);

  // Calibration: unsteered runs (only the monitor policy matches).
  const [a, b] = await Promise.all([complete(proxy.url, 'cal-a', PROMPT_A), complete(proxy.url, 'cal-b', PROMPT_B)]);
  await Promise.all([settled('cal-a', a.fed), settled('cal-b', b.fed)]);
  const promptA = a.promptTokens;
  const valuesA = features.get('cal-a')!;
  const valuesB = features.get('cal-b')!;
  let best = 0;
  for (let f = 0; f < D_SAE; f++) {
    let maxB = 0;
    for (const values of valuesB.values()) maxB = Math.max(maxB, values[f]);
    let before = maxB;
    for (let p = 0; p < promptA + 12; p++) {
      const value = valuesA.get(p)![f];
      // A generated position, early enough to leave steps to steer, that is A's first crossing.
      if (p >= promptA) {
        const margin = (value - before) / 2;
        if (margin > best) {
          best = margin;
          feature = f;
          threshold = Math.fround((value + before) / 2);
          triggerA = p;
        }
      }
      before = Math.max(before, value);
    }
  }
  expect(best, 'a feature that prompt A crosses at a generated position and prompt B never does').toBeGreaterThan(0.05);

  // A projection condition on the tapped rows at HOOK: its direction is one of prompt A's early
  // generated rows minus prompt B's mean row (written as c.safetensors), calibrated the same way.
  const rowsA = rows.get('cal-a')!;
  const rowsB = [...rows.get('cal-b')!.values()];
  const meanB = new Float32Array(D_MODEL);
  for (const row of rowsB) for (let i = 0; i < D_MODEL; i++) meanB[i] += row[i] / rowsB.length;
  let bestProjection = 0;
  for (let candidate = promptA; candidate < promptA + 12; candidate++) {
    const direction = rowsA.get(candidate)!.map((v, i) => v - meanB[i]);
    const norm = Math.hypot(...direction);
    const project = (row: Float32Array): number => row.reduce((sum, v, i) => sum + (v * direction[i]) / norm, 0);
    let before = Math.max(...rowsB.map(project));
    for (let p = 0; p < promptA + 12; p++) {
      const value = project(rowsA.get(p)!);
      if (p >= promptA && (value - before) / 2 > bestProjection) {
        bestProjection = (value - before) / 2;
        projectionThreshold = Math.fround((value + before) / 2);
        triggerProjection = p;
        projectionDirection = direction;
      }
      before = Math.max(before, value);
    }
  }
  expect(bestProjection, 'a projection that prompt A crosses at a generated position and prompt B never does').toBeGreaterThan(0.05);
  writeVectorFile(path.join(dir, 'c.safetensors'), makeSteeringVector('<memory>', new Map([[HOOK, projectionDirection]])));

  // The conditional policies, hot-loaded as set version 2.
  const loaded = new Promise<number>((resolve) => policies.onLoad((result) => result.ok && resolve(result.version)));
  fs.writeFileSync(path.join(dir, 'cond-a.yaml'), policyYaml('cond-a', 'a', 'a.safetensors', SCALE_A, `    - flag: {name: tenant-a}\n    - flag: {name: hit, when: {feature: {sae: test, index: ${feature}, above: ${threshold}}}}\n`));
  fs.writeFileSync(path.join(dir, 'cond-b.yaml'), policyYaml('cond-b', 'b', 'b.safetensors', SCALE_B));
  fs.writeFileSync(
    path.join(dir, 'cond-stop.yaml'),
    `apiVersion: saegate/v1\nkind: Policy\nmetadata: {name: cond-stop}\nspec:\n  match:\n    headers: {x-tenant: [stop]}\n  actions:\n` +
      `    - abort: {reason: calibrated feature, when: {feature: {sae: test, index: ${feature}, above: ${threshold}}}}\n`,
  );
  fs.writeFileSync(
    path.join(dir, 'cond-proj.yaml'),
    `apiVersion: saegate/v1\nkind: Policy\nmetadata: {name: cond-proj}\nspec:\n  match:\n    headers: {x-tenant: [proj]}\n  actions:\n` +
      `    - steer: {vector: a.safetensors, scale: ${SCALE_A}, when: {projection: {vector: c.safetensors, hook: ${HOOK}, above: ${projectionThreshold}}}}\n`,
  );
  expect(await loaded).toBe(2);
  expect(policies.policies().map((p) => p.name).sort()).toEqual(['cond-a', 'cond-b', 'cond-proj', 'cond-stop', 'watch']);
}, 60_000);

afterAll(async () => {
  await model?.close();
  await proxy?.close({ timeoutMs: 0 });
  fs.rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!hasModel)('conditional steering and flags on live traffic', () => {
  it('steers a request only from the step after its trigger, and leaves one whose condition never fired as a direct request', async () => {
    const direct = await complete(model.url, 'direct-b', PROMPT_B);
    const [fired, quiet] = await Promise.all([
      complete(proxy.url, 'fired-a', PROMPT_A, { headers: { 'x-tenant': 'a' } }),
      complete(proxy.url, 'quiet-b', PROMPT_B, { headers: { 'x-tenant': 'a' } }),
    ]);
    await Promise.all([settled('fired-a', fired.fed), settled('quiet-b', quiet.fed)]);

    // The trigger is the first position whose tapped value crossed the threshold, as calibrated.
    expect(firstAbove('fired-a')).toBe(triggerA);
    const trigger = records.find((r) => r.type === 'trigger' && r.requestId === 'fired-a' && r.kind === 'steer');
    expect(trigger).toMatchObject({ policy: 'cond-a@2', triggerPosition: triggerA, outcome: 'sent' });
    // Non-streaming: the header is written with the complete body, triggers included.
    expect(fired.applied).toMatch(new RegExp(`^policy=cond-a@2, policy=watch@2, flag=tenant-a, (.*, )?trigger=cond-a@2:${triggerA}:plan-[0-9a-f]+-\\d+(, .*)?$`));
    expect(fired.applied).toContain(`flag=hit:${triggerA}`);

    // Unchanged through the trigger, then exactly + scale × vector at the first steered step.
    const steered = firstSteered('fired-a', 'cal-a', SCALE_A, vectorA);
    expect(steered.position).toBeGreaterThan(triggerA);
    expect(steered.error).toBeLessThan(TOLERANCE);
    await waitFor('the lag of fired-a measured', () => records.some((r) => r.type === 'lag' && r.requestId === 'fired-a' && r.seconds !== null));
    const lag = records.find((r) => r.type === 'lag' && r.requestId === 'fired-a');
    expect(lag).toMatchObject({ triggerPosition: triggerA });
    if (lag?.type !== 'lag') throw new Error('no lag record for fired-a');
    expect(lag.steps).toBeGreaterThanOrEqual(1);
    // The estimate (from tokens and plan_ack) is at most one step past the truth (from the rows).
    expect(steered.position).toBeGreaterThanOrEqual(lag.firstSteeredPosition - 1);

    // Matched, never fired: no trigger, and exactly the direct model server's text.
    expect(firstAbove('quiet-b')).toBe(-1);
    expect(quiet.applied).toBe('policy=cond-a@2, policy=watch@2, flag=tenant-a');
    expect(quiet.text).toBe(direct.text);
    expect(records.some((r) => r.requestId === 'quiet-b')).toBe(false);
  });

  it('lists a trigger that fires mid-stream in the final SSE comment', async () => {
    const streamed = await complete(proxy.url, 'stream-a', PROMPT_A, { headers: { 'x-tenant': 'a' }, stream: true });
    await settled('stream-a', streamed.fed);
    expect(firstAbove('stream-a')).toBe(triggerA);
    expect(streamed.applied).toMatch(/^policy=cond-a@2, policy=watch@2, flag=tenant-a/);
    expect(streamed.trailer).toMatch(new RegExp(`trigger=cond-a@2:${triggerA}:plan-[0-9a-f]+-\\d+`));
    expect(streamed.trailer).toContain(`flag=hit:${triggerA}`);
    const steered = firstSteered('stream-a', 'cal-a', SCALE_A, vectorA);
    expect(steered.position).toBeGreaterThan(triggerA);
    expect(steered.error).toBeLessThan(TOLERANCE);
  });

  it('gives two requests of one batch matched by different policies each its own steering only', async () => {
    const [a, b] = await Promise.all([
      complete(proxy.url, 'batch-a', PROMPT_A, { headers: { 'x-tenant': 'a' } }),
      complete(proxy.url, 'batch-b', PROMPT_A, { headers: { 'x-tenant': 'b' } }),
    ]);
    await Promise.all([settled('batch-a', a.fed), settled('batch-b', b.fed)]);
    expect(a.applied).toContain(`trigger=cond-a@2:${triggerA}:`);
    expect(b.applied).toMatch(new RegExp(`^policy=cond-b@2, policy=watch@2, trigger=cond-b@2:${triggerA}:plan-[0-9a-f]+-\\d+$`));
    const steeredA = firstSteered('batch-a', 'cal-a', SCALE_A, vectorA);
    const steeredB = firstSteered('batch-b', 'cal-a', SCALE_B, vectorB);
    expect(steeredA.position).toBeGreaterThan(triggerA);
    expect(steeredB.position).toBeGreaterThan(triggerA);
    expect(steeredA.error).toBeLessThan(TOLERANCE);
    expect(steeredB.error).toBeLessThan(TOLERANCE);
    expect(a.text).not.toBe(b.text);
  });

  it('stops a stream whose abort condition fired, ending it cleanly with content_filter and the trigger position', async () => {
    const res = await fetch(`${proxy.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-request-id': 'stop-a', 'x-tenant': 'stop' },
      body: JSON.stringify({ model: 'stories260K', prompt: PROMPT_A, max_tokens: MAX_TOKENS, temperature: 0, stream: true }),
    });
    expect(res.status).toBe(200);
    const raw = await res.text();
    const events = raw.split('\n').filter((line) => line.startsWith('data: ') && line !== 'data: [DONE]').map((line) => JSON.parse(line.slice(6)) as { choices: { text: string; finish_reason: string | null }[] });
    const finishes = events.flatMap((e) => e.choices.map((c) => c.finish_reason)).filter((f) => f !== null);
    expect(finishes).toEqual(['content_filter']);
    expect(raw).toMatch(/data: \[DONE\]\n\n: x-saegate-applied=[^\n]*\n\n$/);
    const trailer = /^: x-saegate-applied=(.*)$/m.exec(raw)?.[1] ?? '';
    expect(trailer).toContain(`abort=cond-stop@2:${triggerA}`);
    expect(trailer).not.toContain(`abort=cond-stop@2:${triggerA}:skipped`);
    // Generation stopped: far fewer tokens than asked for (the abort comes a few steps after the trigger).
    const generated = events.reduce((n, e) => n + (e.choices[0]?.text ? 1 : 0), 0);
    expect(generated).toBeLessThan(MAX_TOKENS);
    expect(firstAbove('stop-a')).toBe(triggerA);
  });

  it('steers from the step after a projection condition fires on the tapped rows, and leaves a request where it never fires as a direct one', async () => {
    const direct = await complete(model.url, 'direct-proj-b', PROMPT_B);
    const [fired, quiet] = await Promise.all([
      complete(proxy.url, 'proj-a', PROMPT_A, { headers: { 'x-tenant': 'proj' } }),
      complete(proxy.url, 'proj-b', PROMPT_B, { headers: { 'x-tenant': 'proj' } }),
    ]);
    await Promise.all([settled('proj-a', fired.fed), settled('proj-b', quiet.fed)]);
    expect(fired.applied).toMatch(new RegExp(`trigger=cond-proj@2:${triggerProjection}:plan-[0-9a-f]+-\\d+`));
    const steered = firstSteered('proj-a', 'cal-a', SCALE_A, vectorA);
    expect(steered.position).toBeGreaterThan(triggerProjection);
    expect(steered.error).toBeLessThan(TOLERANCE);
    expect(quiet.applied).toBe('policy=cond-proj@2, policy=watch@2');
    expect(quiet.text).toBe(direct.text);
  });

  it('counts flags, plan updates and lags in /metrics', async () => {
    const text = await (await fetch(`${proxy.url}/metrics`)).text();
    const value = (series: string): number => Number(new RegExp(`^${series.replace(/[{}"]/g, '\\$&')} (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
    // tenant-a: every request matched by cond-a (fired-a, quiet-b, stream-a, batch-a); hit: the three that fired.
    expect(value('saegate_policy_flags_total{policy="cond-a",flag="tenant-a"}')).toBe(4);
    expect(value('saegate_policy_flags_total{policy="cond-a",flag="hit"}')).toBe(3);
    expect(value('saegate_policy_triggers_total{policy="cond-b",kind="steer"}')).toBe(1);
    expect(value('saegate_policy_plan_updates_total{outcome="sent"}')).toBe(5);
    expect(value('saegate_policy_trigger_lag_steps_count')).toBe(5);
    expect(value('saegate_policy_triggers_total{policy="cond-stop",kind="abort"}')).toBe(1);
    // Rows of conditional requests left on the short deadline; the calibration requests' rows
    // (only the monitor policy matched them) on the monitoring one.
    const urgent = value(`saegate_sae_urgent_batches_total{hook="${HOOK}"}`);
    expect(urgent).toBeGreaterThan(0);
    expect(urgent).toBeLessThan(value(`saegate_sae_batches_total{hook="${HOOK}"}`));
    // Rows no unfired rule could fire on were settled as they arrived (the feature screen).
    expect(value('saegate_policy_rows_settled_total')).toBeGreaterThan(0);
    expect(value(`saegate_sae_run_seconds_total{hook="${HOOK}"}`)).toBeGreaterThan(0);
    // (saegate_policy_conditional_requests still counts the finished requests here: they stay 10 s
    // for late SAE results; their release is tested in test/unit/policies/runtime.test.ts.)
  });
});
