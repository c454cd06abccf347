/**
 * Conditional-trigger lag on stories260K through the real proxy: how many decode steps pass from
 * the token whose SAE row fires a conditional steer to the first step the model server steered,
 * with 1 stream (the baseline, measured in the same run) and with `--streams` concurrent streams.
 *
 *   npx tsx test/bench/policy-trigger-lag.ts [--streams 16] [--rounds 3] [--max-tokens 128]
 *
 * Set-up as in test/integration/policy-conditional.test.ts: a seeded SAE at the steered hook, a
 * feature and threshold calibrated on an unsteered run so that the prompt first crosses it at an
 * early generated position, and a policy steering from the step after the crossing. Every stream
 * uses the same prompt at temperature 0, so until its first steered step each stream's rows are
 * the calibration run's: the **true** first steered position is the first whose tapped row differs
 * from the calibration's. Prints p50/p99 of the lag in steps, both true (from the rows) and as
 * `saegate_policy_trigger_lag_steps` estimates it (from tokens and plan_ack), the lag in seconds,
 * the estimate's error, and the ratio of the concurrent p50/p99 to the single stream's. Asserts
 * nothing about time.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { startProxyWithSaes } from '../../src/cli/serve.js';
import { startModelServer } from '../../src/model/server.js';
import type { LagRecord } from '../../src/policies/runtime.js';
import type { SaeResultBatch } from '../../src/sae/batcher.js';
import { writeVectorFile } from '../../src/steering/formats.js';
import { makeSteeringVector } from '../../src/steering/vector.js';
import type { ActivationsFrame } from '../../src/tap/server.js';
import { freePort } from '../helpers/ports.js';
import { addDenseFeatures, addTappedRows } from '../helpers/tapped.js';
import { seededStandardSae } from '../helpers/sae.js';
import { waitFor } from '../helpers/wait.js';

const { values: args } = parseArgs({ options: { streams: { type: 'string', default: '16' }, rounds: { type: 'string', default: '3' }, 'max-tokens': { type: 'string', default: '128' } } });
const STREAMS = Number(args.streams);
const ROUNDS = Number(args.rounds);
const MAX_TOKENS = Number(args['max-tokens']);
const MODEL = path.resolve(import.meta.dirname, '..', '..', '..', 'shared', 'models', 'stories260K', 'stories260K.bin');
const HOOK = 'blocks.2.hook_resid_post';
const D_MODEL = 64;
const D_SAE = 256;
const PROMPT = 'Once upon a time, there was a little girl';
const TOLERANCE = 0.05;

const featureValues = new Map<string, Map<number, Float32Array>>();
const rows = new Map<string, Map<number, Float32Array>>();
const lags = new Map<string, LagRecord>();

function onResult(batch: SaeResultBatch): void {
  addDenseFeatures(featureValues, batch, D_SAE, (id) => id.startsWith('cal')); // only the calibration run's features are needed
}

function onRows(frame: ActivationsFrame): void {
  addTappedRows(rows, frame, HOOK);
}

/** Streams one completion; returns the rows the model computed and the prompt's token count. */
async function stream(base: string, id: string, headers: Record<string, string> = {}): Promise<{ fed: number; promptTokens: number }> {
  const res = await fetch(`${base}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-request-id': id, ...headers },
    body: JSON.stringify({ model: 'stories260K', prompt: PROMPT, max_tokens: MAX_TOKENS, temperature: 0, stream: true, stream_options: { include_usage: true } }),
  });
  if (res.status !== 200) throw new Error(`${id}: status ${res.status}`);
  const raw = await res.text();
  const usage = /"usage":\{"prompt_tokens":(\d+),"completion_tokens":(\d+)/.exec(raw);
  if (!usage) throw new Error(`${id}: no usage in the stream`);
  return { fed: Number(usage[1]) + Number(usage[2]) - 1, promptTokens: Number(usage[1]) };
}

function trueFirstSteered(id: string): number {
  const mine = rows.get(id);
  const reference = rows.get('cal')!;
  if (!mine) return -1;
  for (const p of [...mine.keys()].sort((a, b) => a - b)) {
    const ref = reference.get(p);
    if (!ref) continue;
    const row = mine.get(p)!;
    for (let i = 0; i < D_MODEL; i++) if (Math.abs(row[i] - ref[i]) > TOLERANCE) return p;
  }
  return -1;
}

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
}

interface Summary {
  n: number;
  missed: number;
  trueSteps: number[];
  estSteps: number[];
  seconds: number[];
  fired: number[];
  acked: number[];
  error: number[];
}

function summarize(ids: string[], trigger: number): Summary {
  const s: Summary = { n: ids.length, missed: 0, trueSteps: [], estSteps: [], seconds: [], fired: [], acked: [], error: [] };
  for (const id of ids) {
    const lag = lags.get(id);
    const first = trueFirstSteered(id);
    if (first < 0 || !lag) {
      s.missed++;
      continue;
    }
    s.trueSteps.push(first - trigger);
    s.estSteps.push(lag.steps);
    if (lag.seconds !== null) s.seconds.push(lag.seconds);
    s.fired.push(lag.firedSeconds);
    s.acked.push(lag.ackedSeconds);
    s.error.push(lag.firstSteeredPosition - first);
  }
  for (const list of [s.trueSteps, s.estSteps, s.seconds, s.fired, s.acked, s.error]) list.sort((a, b) => a - b);
  return s;
}

function line(label: string, s: Summary): string {
  const f = (list: number[], digits = 0) => `p50 ${quantile(list, 0.5).toFixed(digits)} p99 ${quantile(list, 0.99).toFixed(digits)}`;
  return (
    `${label.padEnd(12)} n=${s.n} (not steered before the end, or no lag record: ${s.missed})  steps true ${f(s.trueSteps)}  estimated ${f(s.estSteps)}` +
    `  seconds ${f(s.seconds.map((x) => x * 1000), 1)} ms (rule fired ${f(s.fired.map((x) => x * 1000), 1)} ms, acked ${f(s.acked.map((x) => x * 1000), 1)} ms)` +
    `  estimate − true: min ${s.error[0] ?? NaN} max ${s.error.at(-1) ?? NaN}`
  );
}

async function main(): Promise<void> {
  if (!fs.existsSync(MODEL)) throw new Error(`stories260K not found at ${MODEL}`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'saegate-bench-lag-'));
  const vector = Float32Array.from({ length: D_MODEL }, (_, i) => Math.sin(1.7 * i + 0.3));
  writeVectorFile(path.join(dir, 'a.safetensors'), makeSteeringVector('<memory>', new Map([[HOOK, vector]])));
  fs.writeFileSync(path.join(dir, 'watch.yaml'), 'apiVersion: saegate/v1\nkind: Policy\nmetadata: {name: watch}\nspec:\n  actions:\n    - monitor: {sae: test, features: [{index: 0}]}\n');
  const sae = seededStandardSae({ dIn: D_MODEL, dSae: D_SAE, hook: HOOK, seed: 11, scales: { W_enc: 1, b_enc: 0.2, W_dec: 0.5, b_dec: 0.1 } });
  const modelPort = await freePort();
  const { server: proxy, sink, policies, conditions } = await startProxyWithSaes({ upstream: `http://127.0.0.1:${modelPort}`, port: 0, saeTopK: D_SAE, saeMaxDelayMs: 1 }, [sae], dir);
  sink!.onResult(onResult);
  conditions!.onRecord((record) => {
    if (record.type === 'lag' && record.seconds !== null) lags.set(record.requestId, record);
  });
  const connected = proxy.tap.server.nextConnection();
  const model = await startModelServer({ model: MODEL, port: modelPort, tapUrl: proxy.tapUrl, planWaitTimeoutMs: 2000 });
  try {
    (await connected).on('activations', onRows);
    await waitFor('the tap subscription', () => model.tap?.client.subscription !== null && model.tap?.client.subscription !== undefined);

    // Calibration: the first crossing at an early generated position with the widest margin.
    const { fed, promptTokens } = await stream(proxy.url, 'cal');
    await waitFor('the calibration rows', () => (featureValues.get('cal')?.size ?? 0) >= fed && (rows.get('cal')?.size ?? 0) >= fed);
    const cal = featureValues.get('cal')!;
    let best = { margin: 0, feature: -1, threshold: 0, trigger: -1 };
    for (let f = 0; f < D_SAE; f++) {
      let before = 0;
      for (let p = 0; p < promptTokens + 12; p++) {
        const value = cal.get(p)![f];
        if (p >= promptTokens && (value - before) / 2 > best.margin) best = { margin: (value - before) / 2, feature: f, threshold: Math.fround((value + before) / 2), trigger: p };
        before = Math.max(before, value);
      }
    }
    if (best.feature < 0) throw new Error('no feature crosses at a generated position');
    const loaded = new Promise<void>((resolve) => policies!.onLoad((result) => result.ok && resolve()));
    fs.writeFileSync(
      path.join(dir, 'cond.yaml'),
      `apiVersion: saegate/v1\nkind: Policy\nmetadata: {name: cond}\nspec:\n  match:\n    headers: {x-tenant: [a]}\n  actions:\n` +
        `    - steer: {vector: a.safetensors, scale: 4, when: {feature: {sae: test, index: ${best.feature}, above: ${best.threshold}}}}\n`,
    );
    await loaded;
    console.log(`stories260K, SAE ${D_MODEL}×${D_SAE} at ${HOOK}; feature ${best.feature} above ${best.threshold.toFixed(3)} fires at position ${best.trigger} (prompt ${promptTokens} tokens), ${MAX_TOKENS} tokens per stream`);

    const run = async (label: string, concurrent: number, rounds: number): Promise<Summary> => {
      const ids: string[] = [];
      for (let round = 0; round < rounds; round++) {
        const batch = Array.from({ length: concurrent }, (_, i) => `${label}-${round}-${i}`);
        ids.push(...batch);
        const fedRows = await Promise.all(batch.map((id) => stream(proxy.url, id, { 'x-tenant': 'a' })));
        await waitFor(`rows of ${label} round ${round}`, () => batch.every((id, i) => (rows.get(id)?.size ?? 0) >= fedRows[i].fed));
      }
      return summarize(ids, best.trigger);
    };
    const single = await run('single', 1, Math.max(4, ROUNDS * 2));
    const many = await run('concurrent', STREAMS, ROUNDS);
    console.log(line('1 stream', single));
    console.log(line(`${STREAMS} streams`, many));
    const dropped = sink!.stats()[HOOK].batcher.rowsDropped;
    console.log(`SAE rows dropped under overload: ${JSON.stringify(dropped)}; lag records: ${lags.size}`);
    const ratio = (a: number[], b: number[], q: number) => (quantile(a, q) / quantile(b, q)).toFixed(2);
    console.log(`ratio ${STREAMS} streams / 1 stream, true steps: p50 ${ratio(many.trueSteps, single.trueSteps, 0.5)}×, p99 ${ratio(many.trueSteps, single.trueSteps, 0.99)}×`);
  } finally {
    await model.close();
    await proxy.close({ timeoutMs: 0 });
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

await main();
