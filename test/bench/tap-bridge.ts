/**
 * The model server's side of the tap, alone: what the bridge (src/model/tap-bridge.ts) costs the
 * model server's event loop per decode step, with the decode worker and HTTP taken out.
 *
 * Recorded-shape steps (8 requests of 128 generated tokens with their prompts, stories260K's
 * tokenizer and d_model 64, one step per millisecond as stories260K decodes at 8 streams) are fed
 * to a real TapBridge whose TapClient streams them over a real WebSocket to a TapServer in a child
 * process on the other core (so the receiver's CPU is not this process's). Variants, interleaved round by round:
 *
 *   untapped   the same steps, no bridge: the baseline
 *   tokens     bridge connected, subscribed to no hook: tokens and request ends only
 *   rows       subscribed to one hook with prompts (f32): what `saegate serve --sae` asks for
 *
 * Reported: this process's CPU per step and per token (process.cpuUsage: user + system, every
 * thread), and the bridge's cost as the difference to `untapped` in the same round, median over
 * rounds. Run it pinned to one core for the model server's situation:
 *
 *   taskset -c 0 npx tsx test/bench/tap-bridge.ts [--rounds N] [--steps N] [--streams N] [--flush-ms N] [--variants untapped,tokens,rows]
 *
 * Prints a table; asserts nothing about time.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { setInterval } from 'node:timers/promises';
import { loadModel } from '../../src/model/load.js';
import { TapBridge } from '../../src/model/tap-bridge.js';
import { StepSource } from '../helpers/step-source.js';
import type { ActivationBatch, RuntimeStep } from '../../src/model/runtime-protocol.js';
import type { Tokenizer } from '../../src/model/types.js';
import { TapServer, type TapConnection } from '../../src/tap/server.js';
import { seededUniform } from '../../src/common/random.js';
import { hasSharedModels, stories260K } from '../helpers/fixtures.js';
import { waitFor } from '../helpers/wait.js';
import { median } from '../helpers/bench-stats.js';

const { values } = parseArgs({ options: { rounds: { type: 'string' }, steps: { type: 'string' }, streams: { type: 'string' }, 'flush-ms': { type: 'string' }, variants: { type: 'string' }, sink: { type: 'string' } } });
const HOOK = 'blocks.3.hook_resid_post';

// ---------------------------------------------------------------------------------------------

/** CPU time of this process's main thread so far, µs (/proc/self/task/PID/schedstat, on-CPU ns first). */
function mainThreadCpuUs(): number {
  return Number(fs.readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').split(' ')[0]) / 1e3;
}

async function main(): Promise<void> {
  if (!hasSharedModels) {
    process.stdout.write('stories260K not found under ../shared/models: nothing to measure\n');
    return;
  }
  const rounds = Number(values.rounds ?? 9);
  const stepsPerRound = Number(values.steps ?? 1500);
  const streams = Number(values.streams ?? 8);
  const { weights, tokenizer } = await loadModel({ model: stories260K.model });
  const tok = tokenizer as Tokenizer;
  const D = weights.config.dim;
  // Text-like token ids: the example prompts, encoded, cycled with an offset per request.
  const text = tok.encode('Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her dog. One day, she saw a big red ball.', { addBos: false });
  const prompt = tok.encode('Once upon a time there was a little boy who wanted to fly.', { addBos: true });
  const u = seededUniform(3);
  const rowData = Float32Array.from({ length: 1024 * D }, () => u() - 0.5);

  // The receiver runs on the other core where there is one, as saegate does beside a model server.
  const sinkArgs = [process.execPath, '--import', 'tsx', fileURLToPath(import.meta.url), '--sink', '1'];
  const pinSink = os.availableParallelism() >= 2;
  const sink = spawn(pinSink ? 'taskset' : sinkArgs[0], pinSink ? ['-c', '1', ...sinkArgs] : sinkArgs.slice(1), { stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  sink.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const waitOut = async (pattern: RegExp): Promise<RegExpExecArray> => {
    for (;;) {
      const m = pattern.exec(out);
      if (m) return m;
      await new Promise((r) => sink.stdout.once('data', r));
    }
  };
  const port = Number((await waitOut(/port (\d+)/))[1]);
  const source = new StepSource(weights.config);
  let bridge: TapBridge | null = null;
  let connections = 0;

  let requestSeq = 0;
  /**
   * Runs `count` steps at one step per millisecond, the decode clock of stories260K at 8 streams (a
   * 1 ms interval: the steps' own work does not stretch the period): `streams` requests, each 128
   * tokens after a prefill.
   */
  async function run(count: number): Promise<number> {
    const live: { id: string; generated: number; position: number }[] = [];
    let tokens = 0;
    const clock = setInterval(1)[Symbol.asyncIterator]();
    for (let step = 0; step < count; step++) {
      await clock.next();
      // Requests that finished make room for new ones, which arrive as one prefill step.
      const admitted: typeof live = [];
      while (live.length + admitted.length < streams) admitted.push({ id: `cmpl-bench-${String(requestSeq++).padStart(24, '0')}`, generated: 0, position: prompt.length });
      const phases: [RuntimeStep['phase'], typeof live][] = admitted.length > 0 ? [['prefill', admitted], ['decode', live]] : [['decode', live]];
      for (const [phase, batch] of phases) {
        if (batch.length === 0) continue;
        const activations: ActivationBatch[] = [];
        const tap = source.tap;
        if (tap !== null && tap.hooks.length > 0 && (phase === 'decode' || tap.includePrompt)) {
          const requestIds: string[] = [];
          const positions: number[] = [];
          for (const r of batch) {
            // A prefill taps the prompt's positions, a decode step the fed token's.
            const [first, end] = phase === 'prefill' ? [0, r.position] : [r.position, r.position + 1];
            for (let p = first; p < end; p++) {
              requestIds.push(r.id);
              positions.push(p);
            }
          }
          activations.push({ hook: HOOK, dtype: 'f32', dModel: D, requestIds, positions: Int32Array.from(positions), data: rowData.slice(0, requestIds.length * D) });
        }
        const ids = batch.map((r) => r.id);
        const emitted: RuntimeStep = {
          phase,
          batchSize: batch.length,
          runMs: 0,
          tokens: { requestIds: ids, positions: Int32Array.from(batch, (r) => r.position), tokenIds: Int32Array.from(batch, (r, i) => text[(r.generated + i * 7) % text.length]) },
          activations,
        };
        source.step(emitted);
        tokens += batch.length;
        for (const r of batch) {
          r.generated++;
          r.position++;
        }
      }
      live.push(...admitted);
      for (let i = live.length - 1; i >= 0; i--) {
        if (live[i].generated < 128) continue;
        const [done] = live.splice(i, 1);
        source.end(done.id, { finishReason: 'length', promptTokens: prompt.length, completionTokens: 128 });
      }
    }
    await clock.return?.();
    for (const r of live) source.end(r.id, { finishReason: 'abort', promptTokens: prompt.length, completionTokens: r.generated });
    return tokens;
  }

  async function variant(name: 'untapped' | 'tokens' | 'rows'): Promise<{ cpuPerStep: number; cpuPerToken: number; sysPerToken: number; writesPerStep: number; mainPerToken: number }> {
    if (name !== 'untapped' && bridge === null) {
      bridge = new TapBridge({ url: `ws://127.0.0.1:${port}/v1/tap`, engine: source, tokenizer: tok, modelId: 'bench', flushMs: values['flush-ms'] === undefined ? undefined : Number(values['flush-ms']) });
      bridge.start();
      await waitOut(new RegExp(`connected ${++connections}\\b`));
    }
    if (name === 'untapped' && bridge !== null) {
      await bridge.close();
      bridge = null;
    }
    if (bridge !== null) {
      const want = name === 'rows' ? 1 : 0;
      const client = bridge.client;
      sink.stdin.write(`${name === 'rows' ? HOOK : 'none'}\n`);
      await waitFor(`the ${name} subscription (${want} hook)`, () => (client.subscription?.hooks.length ?? -1) === want, { observed: () => client.subscription });
    }
    await run(500); // warm-up: JIT-compiles this variant's paths before the measured steps
    const writes0 = bridge?.stats().writes ?? 0;
    const c0 = process.cpuUsage();
    const main0 = mainThreadCpuUs();
    const tokens = await run(stepsPerRound);
    const c = process.cpuUsage(c0);
    const mainUs = mainThreadCpuUs() - main0;
    return { cpuPerStep: (c.user + c.system) / stepsPerRound, cpuPerToken: (c.user + c.system) / tokens, sysPerToken: c.system / tokens, writesPerStep: ((bridge?.stats().writes ?? 0) - writes0) / stepsPerRound, mainPerToken: mainUs / tokens };
  }

  const names = (values.variants?.split(',') ?? ['untapped', 'tokens', 'rows']) as ('untapped' | 'tokens' | 'rows')[];
  if (!names.includes('untapped')) names.unshift('untapped');
  const perStep = new Map<string, number[]>();
  const perToken = new Map<string, number[]>();
  const extraPerToken = new Map<string, number[]>();
  const sysPerToken = new Map<string, number[]>();
  const writesPerStep = new Map<string, number[]>();
  const mainPerToken = new Map<string, number[]>();
  for (let r = 0; r < rounds; r++) {
    const results = new Map<string, { cpuPerStep: number; cpuPerToken: number; sysPerToken: number; writesPerStep: number; mainPerToken: number }>();
    for (let i = 0; i < names.length; i++) {
      const name = names[(i + r) % names.length];
      results.set(name, await variant(name));
    }
    for (const name of names) {
      const x = results.get(name)!;
      perStep.set(name, [...(perStep.get(name) ?? []), x.cpuPerStep]);
      perToken.set(name, [...(perToken.get(name) ?? []), x.cpuPerToken]);
      sysPerToken.set(name, [...(sysPerToken.get(name) ?? []), x.sysPerToken]);
      writesPerStep.set(name, [...(writesPerStep.get(name) ?? []), x.writesPerStep]);
      mainPerToken.set(name, [...(mainPerToken.get(name) ?? []), x.mainPerToken]);
      extraPerToken.set(name, [...(extraPerToken.get(name) ?? []), x.cpuPerToken - results.get('untapped')!.cpuPerToken]);
    }
  }
  if (bridge !== null) await (bridge as TapBridge).close();
  sink.stdin.write('count\n');
  const [, rows, tokens] = await waitOut(/count (\d+) (\d+)/);
  sink.stdin.end();
  process.stdout.write(`\n## Tap bridge on the model server's event loop: ${streams} streams, one step per ms, ${stepsPerRound} steps per round, median of ${rounds} rounds\n\n`);
  process.stdout.write('| variant | writes/step | CPU µs/step | CPU µs/token | of it, main thread | of it, kernel | bridge µs/token (over untapped, same round) |\n|---|---|---|---|---|---|---|\n');
  for (const name of names) {
    process.stdout.write(`| ${name} | ${median(writesPerStep.get(name)!).toFixed(3)} | ${median(perStep.get(name)!).toFixed(1)} | ${median(perToken.get(name)!).toFixed(2)} | ${median(mainPerToken.get(name)!).toFixed(2)} | ${median(sysPerToken.get(name)!).toFixed(2)} | ${name === 'untapped' ? '–' : median(extraPerToken.get(name)!).toFixed(2)} |\n`);
  }
  process.stdout.write(`\nreceived by the TapServer: ${rows} rows, ${tokens} tokens\n`);
}

// ---------------------------------------------------------------------------------------------
/** The receiving end, in its own process: subscribes as told on stdin, counts rows and tokens. */
function sinkMain(): void {
  const server = http.createServer();
  const tap = new TapServer({});
  tap.attach(server);
  let rows = 0;
  let tokens = 0;
  let connections = 0;
  let current: TapConnection | null = null;
  tap.onConnection((conn) => {
    current = conn;
    conn.on('activations', (frame) => (rows += frame.rowCount));
    conn.on('tokens', (msg) => (tokens += msg.tokenIds.length));
    process.stdout.write(`connected ${++connections}\n`);
  });
  process.stdin.on('data', (d: Buffer) => {
    for (const line of d.toString().split('\n').filter((l) => l !== '')) {
      if (line === 'count') process.stdout.write(`count ${rows} ${tokens}\n`);
      else current?.subscribe({ hooks: line === 'none' ? [] : [line], dtype: 'f32', includePrompt: true });
    }
  });
  // The bench closes stdin when it is done (or dies): so does the sink.
  process.stdin.on('end', () => process.exit(0));
  server.listen(0, '127.0.0.1', () => process.stdout.write(`port ${(server.address() as AddressInfo).port}\n`));
}


if (values.sink !== undefined) sinkMain();
else await main();
