/**
 * Model server throughput: tokens/s for one stream and 8 concurrent streams, on stories260K and on
 * a synthetic model near d_model 512 / 8 layers; and the cost of tapping every hook point (f32 and
 * f16, streamed over a real WebSocket to a TapServer) and of steering one hook, as ratios to the
 * plain run measured in the same process. Variants are interleaved round by round and each
 * variant's ratio is taken against the mean of the plain runs just before and after it in the same
 * round, then the median over rounds is reported, so drifting load from other processes on a shared
 * machine cancels out. A second ratio compares tokens per CPU-second of this process (all threads,
 * the in-process TapServer included), which other processes on the machine disturb far less than
 * wall time. Prints a table; asserts nothing about time.
 *
 *   npx tsx test/bench/model-throughput.ts [--rounds N] [--tokens N] [--threads N] [--quick]
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import { LocalEngine } from '../../src/model/engine.js';
import type { GenerateRequest } from '../../src/model/engine-types.js';
import { loadModel } from '../../src/model/load.js';
import { TapBridge } from '../../src/model/tap-bridge.js';
import { allHookPoints, type ModelWeights } from '../../src/model/types.js';
import { syntheticWeights } from '../../src/model/weights/synthetic.js';
import { TapServer } from '../../src/tap/server.js';
import { hasSharedModels, stories260K } from '../helpers/fixtures.js';
import { median } from '../helpers/bench-stats.js';

const { values } = parseArgs({ options: { rounds: { type: 'string' }, tokens: { type: 'string' }, threads: { type: 'string' }, quick: { type: 'boolean' } } });
const rounds = Number(values.rounds ?? (values.quick ? 2 : 7));
const threads = values.threads === undefined ? undefined : Number(values.threads);
const tokensPerStream = Number(values.tokens ?? (values.quick ? 32 : 96));

type Variant = 'plain' | 'tap all f32' | 'tap all f16' | 'steer 1 hook';
const variants: Variant[] = ['plain', 'tap all f32', 'tap all f16', 'steer 1 hook'];

/** Waits until the model server has received a subscription to `hookCount` hooks. */
async function subscribed(bridge: TapBridge, hookCount: number): Promise<void> {
  while ((bridge.client.subscription?.hooks.length ?? 0) !== hookCount) await new Promise((r) => setTimeout(r, 1));
}

interface Sample {
  /** Generated tokens per wall-clock second. */
  tps: number;
  /** Process CPU time (every thread: worker, onnxruntime, main, the in-process TapServer) per token, µs. */
  cpuPerToken: number;
}

async function measure(engine: LocalEngine, streams: number, variant: Variant, weights: ModelWeights, tag: string): Promise<Sample> {
  const D = weights.config.dim;
  const vector = Float32Array.from({ length: D }, (_, i) => Math.cos(i) * 0.5);
  const requests: GenerateRequest[] = Array.from({ length: streams }, (_, i) => ({
    requestId: `${tag}-${i}`,
    promptTokens: [1, 10 + i, 20 + i, 30 + i],
    maxTokens: tokensPerStream,
    sampling: { temperature: 0, topP: 1, seed: null },
    stopTokenIds: [],
    steering: variant === 'steer 1 hook' ? [{ hook: `blocks.${Math.floor(weights.config.nLayers / 2)}.hook_resid_post`, vector, scale: 2, fromPosition: 0, untilPosition: null }] : [],
  }));
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const results = await Promise.all(requests.map((r) => engine.generate(r, () => undefined)));
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const tokens = results.reduce((a, r) => a + r.completionTokens, 0);
  return { tps: tokens / seconds, cpuPerToken: (cpu.user + cpu.system) / tokens };
}

async function benchModel(label: string, weights: ModelWeights): Promise<void> {
  // A real tap: TapServer on port 0, the engine's steps streamed by the model server's bridge.
  const httpServer = http.createServer();
  const tapServer = new TapServer({});
  tapServer.attach(httpServer);
  await new Promise<void>((r) => httpServer.listen(0, '127.0.0.1', r));
  let rowsReceived = 0;
  tapServer.onConnection((conn) => conn.on('activations', (frame) => (rowsReceived += frame.rowCount)));
  const engine = await LocalEngine.create({ weights, maxBatch: 8, intraOpThreads: threads });
  const bridge = new TapBridge({
    url: `ws://127.0.0.1:${(httpServer.address() as AddressInfo).port}/v1/tap`,
    engine,
    tokenizer: null,
    modelId: label,
  });
  bridge.start();
  const conn = await tapServer.nextConnection();
  const hooks = allHookPoints(weights.config);

  const throughput = new Map<string, number[]>();
  const ratios = new Map<string, number[]>();
  const cpuRatios = new Map<string, number[]>();
  const record = (map: Map<string, number[]>, key: string, value: number): void => {
    map.set(key, [...(map.get(key) ?? []), value]);
  };
  const run = async (streams: number, variant: Variant, tag: string): Promise<Sample> => {
    if (variant.startsWith('tap')) {
      conn.subscribe({ hooks, dtype: variant.endsWith('f16') ? 'f16' : 'f32', includePrompt: true });
      await subscribed(bridge, hooks.length);
    }
    const tps = await measure(engine, streams, variant, weights, tag);
    if (variant.startsWith('tap')) {
      conn.subscribe({ hooks: [], dtype: 'f32', includePrompt: false });
      await subscribed(bridge, 0);
    }
    return tps;
  };
  await measure(engine, 8, 'plain', weights, 'warm');
  for (let round = 0; round < rounds; round++) {
    for (const streams of [1, 8]) {
      let before = await run(streams, 'plain', `${label}-${round}-${streams}-p0`);
      record(throughput, `${streams}|plain`, before.tps);
      for (const variant of variants.slice(1)) {
        const sample = await run(streams, variant, `${label}-${round}-${streams}-${variant}`);
        const after = await run(streams, 'plain', `${label}-${round}-${streams}-${variant}-p`);
        record(throughput, `${streams}|${variant}`, sample.tps);
        record(throughput, `${streams}|plain`, after.tps);
        record(ratios, `${streams}|${variant}`, sample.tps / ((before.tps + after.tps) / 2));
        record(cpuRatios, `${streams}|${variant}`, (before.cpuPerToken + after.cpuPerToken) / 2 / sample.cpuPerToken);
        before = after;
      }
    }
  }
  const cfg = weights.config;
  console.log(`\n## ${label}: d_model ${cfg.dim}, ${cfg.nLayers} layers, ${cfg.nHeads} heads / ${cfg.nKvHeads} kv, vocab ${cfg.vocabSize}; ${tokensPerStream} tokens per stream, intra-op threads ${threads ?? 'default'}, median of ${rounds} rounds`);
  console.log('| streams | variant | tokens/s (median) | throughput ratio to plain | tokens per CPU-second ratio to plain |');
  console.log('|---|---|---|---|---|');
  for (const streams of [1, 8]) {
    for (const variant of variants) {
      const tps = median(throughput.get(`${streams}|${variant}`)!);
      const ratio = variant === 'plain' ? 1 : median(ratios.get(`${streams}|${variant}`)!);
      const cpuRatio = variant === 'plain' ? 1 : median(cpuRatios.get(`${streams}|${variant}`)!);
      console.log(`| ${streams} | ${variant} | ${tps.toFixed(0)} | ${ratio.toFixed(3)} | ${cpuRatio.toFixed(3)} |`);
    }
  }
  const stats = bridge.stats();
  console.log(`tap: ${rowsReceived} rows received by the TapServer; rows dropped by the model server: ${JSON.stringify(stats.rowsDropped)}`);
  await bridge.close();
  await engine.close();
  await tapServer.close();
  httpServer.close();
}

const models: [string, () => Promise<ModelWeights>][] = [];
if (hasSharedModels) models.push(['stories260K', async () => (await loadModel({ model: stories260K.model })).weights]);
else console.log('stories260K skipped: ../shared/models not found');
models.push(['synthetic-512x8', async () => syntheticWeights({ dim: 512, hiddenDim: 1376, nLayers: 8, nHeads: 8, nKvHeads: 4, vocabSize: 4096, maxSeqLen: 512, seed: 1 })]);
for (const [label, load] of models) await benchModel(label, await load());
