/**
 * Does work on the other core slow the model server down? The end-to-end bench pins model servers
 * to core 0 and saegate to core 1; if the cores share a cache, memory bandwidth or a physical core
 * (a VM's vCPUs may be hyperthreads of one), saegate's own work shows up as model-server cost.
 *
 * stories260K's engine (decode worker, onnxruntime, one intra-op thread) runs 8 streams in this
 * process; each round measures it with core 1 idle and then with each kind of neighbour running
 * on core 1 in another process:
 *
 * - `memory`: a loop streaming through 8 MiB (memory bandwidth and the shared cache);
 * - `sae`: onnxruntime running a seeded 64 → 1024 TopK SAE (the e2e bench's, on stories260K) at
 *   batch 256, one thread: what saegate's SAE worker does;
 * - `spin`: arithmetic on 64 numbers (registers and L1 only: the core's execution units).
 *
 * A neighbour is busy for `--duty` of every 10 ms and sleeps the rest (1 = always busy). In the e2e
 * bench's monitoring arm at 8 streams, saegate's SAE worker ran about 15% of the time. Reported:
 * time inside onnxruntime per generated token, idle and per neighbour, and the ratio per round
 * (busy / idle), median over rounds. Run it pinned to core 0:
 *
 *   taskset -c 0 npx tsx test/bench/core-interference.ts [--rounds 6] [--seconds 1.5] [--duty 1] [--neighbours memory,sae,spin]
 *
 * Prints a table; asserts nothing about time.
 */
import { spawn } from 'node:child_process';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createSession, loadOrt } from '../../src/common/ort.js';
import { seededUniform } from '../../src/common/random.js';
import { LocalEngine } from '../../src/model/engine.js';
import { loadModel } from '../../src/model/load.js';
import { buildSaeEncoderGraph, SaeEncoderNames, saeEncoderOutputNames } from '../../src/sae/graph.js';
import { median } from '../helpers/bench-stats.js';
import { hasSharedModels, stories260K } from '../helpers/fixtures.js';
import { seededTopKSae } from '../helpers/sae.js';

const NEIGHBOURS = ['memory', 'sae', 'spin'] as const;
type Neighbour = (typeof NEIGHBOURS)[number];
const PERIOD_MS = 10;

const { values } = parseArgs({
  options: { rounds: { type: 'string' }, seconds: { type: 'string' }, duty: { type: 'string' }, neighbours: { type: 'string' }, child: { type: 'string' } },
});
const rounds = Number(values.rounds ?? 6);
const seconds = Number(values.seconds ?? 1.5);
const duty = Number(values.duty ?? 1);
const neighbours = (values.neighbours ?? NEIGHBOURS.join(',')).split(',').map((n) => {
  if (!(NEIGHBOURS as readonly string[]).includes(n)) throw new Error(`--neighbours: unknown neighbour "${n}" (known: ${NEIGHBOURS.join(', ')})`);
  return n as Neighbour;
});
if (!(duty > 0 && duty <= 1)) throw new Error(`--duty must be in (0, 1], got ${values.duty}`);

/** The neighbour process: one unit of its kind of work, repeated for `duty` of every period. */
async function childMain(kind: Neighbour): Promise<void> {
  let unit: () => Promise<void> | void;
  if (kind === 'memory') {
    const a = new Float64Array(1 << 20);
    unit = () => {
      for (let i = 0; i < a.length; i += 1) a[i] = a[i] * 1.0001 + 1;
    };
  } else if (kind === 'spin') {
    const a = new Float64Array(64);
    unit = () => {
      for (let r = 0; r < 2000; r++) for (let i = 0; i < a.length; i++) a[i] = a[i] * 1.0001 + 1;
    };
  } else {
    const sae = seededTopKSae({ dIn: 64, dSae: 1024, hook: 'blocks.3.hook_resid_post', k: 32, seed: 11, scales: { W_enc: 2 / 8, b_enc: 0.01, W_dec: 2 / 32, b_dec: 0.01 } });
    const ort = await loadOrt();
    const session = await createSession(buildSaeEncoderGraph(sae), { device: 'cpu', intraOpThreads: 1, spinning: false });
    const u = seededUniform(5);
    const feeds = { [SaeEncoderNames.input]: new ort.Tensor('float32', Float32Array.from({ length: 256 * 64 }, () => u() - 0.5), [256, 64]) };
    const outputs = [...saeEncoderOutputNames];
    unit = async () => {
      await session.run(feeds, outputs);
    };
  }
  /** One period's work: units until `duty` of the period has passed. */
  const burst = async (): Promise<void> => {
    const start = performance.now();
    do await unit();
    while (performance.now() - start < duty * PERIOD_MS);
  };
  process.stdout.write('on\n');
  if (duty < 1) {
    // A paced load: a burst at the start of every period, idle until the next tick.
    let running = false;
    setInterval(() => {
      if (running) return;
      running = true;
      void burst().finally(() => (running = false));
    }, PERIOD_MS);
    return;
  }
  for (;;) await burst();
}

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
  /** Starts a neighbour of `kind` on core 1; resolves once it runs, to a function stopping it. */
  const startNeighbour = async (kind: Neighbour): Promise<() => Promise<void>> => {
    const args = [process.execPath, '--import', 'tsx', fileURLToPath(import.meta.url), '--child', kind, '--duty', String(duty)];
    const child = spawn('taskset', ['-c', '1', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise((resolve) => child.stdout.once('data', resolve));
    return () =>
      new Promise<void>((resolve) => {
        child.once('exit', () => resolve());
        child.kill();
      });
  };
  await run(); // warm-up
  const rows: string[] = [];
  const ratios = new Map<Neighbour, number[]>(neighbours.map((n) => [n, []]));
  for (let r = 0; r < rounds; r++) {
    const idle = await run();
    const cells = [idle.toFixed(1)];
    for (const kind of neighbours) {
      const stop = await startNeighbour(kind);
      const busy = await run();
      await stop();
      ratios.get(kind)!.push(busy / idle);
      cells.push(`${busy.toFixed(1)} (${(busy / idle).toFixed(3)})`);
    }
    rows.push(`| ${r + 1} | ${cells.join(' | ')} |`);
  }
  await engine.close();
  const summary = neighbours.map((kind) => {
    const sorted = [...ratios.get(kind)!].sort((a, b) => a - b);
    return `${kind}: median ${median(sorted).toFixed(3)} (range ${sorted[0].toFixed(3)}–${sorted[sorted.length - 1].toFixed(3)})`;
  });
  process.stdout.write(
    [
      `\n## onnxruntime µs per token on core 0 (stories260K, 8 streams), core 1 idle and busy ${Math.round(duty * 100)}% of the time (× idle)\n`,
      `| round | idle | ${neighbours.join(' | ')} |`,
      `|---|---|${neighbours.map(() => '---|').join('')}`,
      ...rows,
      `\nbusy / idle, over ${rounds} rounds: ${summary.join('; ')}\n`,
    ].join('\n'),
  );
}

if (values.child !== undefined) {
  if (!(NEIGHBOURS as readonly string[]).includes(values.child)) throw new Error(`--child: unknown neighbour "${values.child}"`);
  await childMain(values.child as Neighbour);
} else {
  await main();
}
