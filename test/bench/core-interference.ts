/**
 * Does work on the other core slow the model server down? The end-to-end bench pins model servers
 * to core 0 and saegate to core 1; if the cores share a cache, memory bandwidth or a physical core
 * (a VM's vCPUs may be hyperthreads of one), saegate's own work shows up as model-server cost.
 *
 * stories260K's engine (decode worker, onnxruntime, one intra-op thread) runs 8 streams in this
 * process; rounds alternate between an idle core 1 and core 1 busy with a memory-streaming loop in
 * another process. Reported: time inside onnxruntime per generated token, both ways, and the ratio
 * per round (busy / idle), median over rounds. Run it pinned to core 0:
 *
 *   taskset -c 0 npx tsx test/bench/core-interference.ts [--rounds 6] [--seconds 1.5]
 *
 * Prints a table; asserts nothing about time.
 */
import { spawn } from 'node:child_process';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { LocalEngine } from '../../src/model/engine.js';
import { loadModel } from '../../src/model/load.js';
import { median } from '../helpers/bench-stats.js';
import { hasSharedModels, stories260K } from '../helpers/fixtures.js';

const { values } = parseArgs({ options: { rounds: { type: 'string' }, seconds: { type: 'string' } } });
const rounds = Number(values.rounds ?? 6);
const seconds = Number(values.seconds ?? 1.5);

async function main(): Promise<void> {
  if (!hasSharedModels || os.cpus().length < 2) {
    process.stdout.write('needs stories260K under ../shared/models and 2 cores: nothing to measure\n');
    return;
  }
  const loaded = await loadModel({ model: stories260K.model });
  const engine = await LocalEngine.create({ weights: loaded.weights, maxBatch: 32, intraOpThreads: 1 });
  const prompt = loaded.tokenizer!.encode('Once upon a time there was a little girl.', { addBos: true });
  let id = 0;
  /** Onnxruntime µs per generated token over `seconds` of 8 streams. */
  const run = async (): Promise<number> => {
    const ort0 = engine.stats.runMs;
    let tokens = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (performance.now() - t0 < seconds * 1000) {
          const r = await engine.generate({ requestId: `r${id++}`, promptTokens: prompt, maxTokens: 128, sampling: { temperature: 0.8, topP: 1, seed: null }, stopTokenIds: [], steering: [] }, () => {});
          tokens += r.completionTokens;
        }
      }),
    );
    return ((engine.stats.runMs - ort0) * 1e3) / tokens;
  };
  /** Starts the neighbour: a loop streaming through 8 MiB on core 1; resolves once it runs. */
  const busyNeighbour = async (): Promise<() => Promise<void>> => {
    const code = 'const a = new Float64Array(1 << 20); process.stdout.write("on\\n"); for (;;) for (let i = 0; i < a.length; i++) a[i] = a[i] * 1.0001 + 1;';
    const child = spawn('taskset', ['-c', '1', process.execPath, '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise((resolve) => child.stdout.once('data', resolve));
    return () =>
      new Promise<void>((resolve) => {
        child.once('exit', () => resolve());
        child.kill();
      });
  };
  await run(); // warm-up
  const rows: string[] = [];
  const ratios: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const idle = await run();
    const stop = await busyNeighbour();
    const busy = await run();
    await stop();
    ratios.push(busy / idle);
    rows.push(`| ${r + 1} | ${idle.toFixed(1)} | ${busy.toFixed(1)} | ${(busy / idle).toFixed(3)} |`);
  }
  await engine.close();
  const sorted = [...ratios].sort((a, b) => a - b);
  process.stdout.write(
    [
      '\n## onnxruntime time per token on core 0, core 1 idle and busy (stories260K, 8 streams)\n',
      '| round | idle µs/tok | busy µs/tok | busy / idle |',
      '|---|---|---|---|',
      ...rows,
      `\nmedian busy / idle: ${median(ratios).toFixed(3)} (range ${sorted[0].toFixed(3)}–${sorted[sorted.length - 1].toFixed(3)})\n`,
    ].join('\n'),
  );
}

await main();
