/**
 * `eval steer` throughput: completions per second of the command on stories260K and on a synthetic
 * 512-wide model (8 layers, the same spec as test/bench/vectors-build.ts), end to end through its
 * own function (`evalSteer`: model load, one reference server in-process, the unsteered arm and one
 * steered arm over examples/prompts/lost-or-broken.txt, the control texts' log-probabilities and
 * greedy continuations, the reports). The baseline, measured in the same process and round, is the
 * same completions (same prompts, seeds, --max-tokens and temperature, no steering) sent straight
 * to a server of the same model that is already running, at the same concurrency: the ratio is what
 * the steering field, the control scoring and start-up cost on top of generation. Two rates for the
 * command: over its arms only (the number it prints), and end to end (wall time of the whole call).
 * Rounds interleave baseline and command; medians are reported. Prints a table; asserts nothing
 * about time. Without ../shared/models only the synthetic row is measured.
 *
 *   npx tsx test/bench/eval-steer.ts [--rounds N] [--quick] 2>/dev/null
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { evalSteer } from '../../src/cli/eval-steer.js';
import { readCorpus } from '../../src/lab/corpus/read.js';
import { startModelServer } from '../../src/model/server.js';
import { writeVectorFile } from '../../src/steering/formats.js';
import { makeSteeringVector } from '../../src/steering/vector.js';
import { SeededRandom } from '../../src/common/random.js';
import { hasSharedModels, makeTempDir, stories260K } from '../helpers/fixtures.js';

const { values } = parseArgs({ options: { rounds: { type: 'string' }, quick: { type: 'boolean' } } });
const rounds = Number(values.rounds ?? (values.quick ? 1 : 3));
const CONCURRENCY = 8;
const SAMPLES = 2;
const MAX_TOKENS = 32;

interface BenchModel {
  name: string;
  /** `--model`: a file or a `synthetic:` spec. */
  spec: string;
  tokenizer: string | undefined;
  dim: number;
  layers: number;
}

const models: BenchModel[] = [
  ...(hasSharedModels ? [{ name: 'stories260K (d 64, 5 layers)', spec: stories260K.model, tokenizer: stories260K.tokenizer as string | undefined, dim: 64, layers: 5 }] : []),
  { name: 'synthetic (d 512, 8 layers)', spec: 'synthetic:dim=512,layers=8,heads=8,kv=8,hidden=1376,vocab=4096,ctx=512,seed=1', tokenizer: undefined, dim: 512, layers: 8 },
];
if (!hasSharedModels) process.stdout.write('stories260K not found under ../shared/models: synthetic model only\n');

const examples = path.resolve(import.meta.dirname, '../../examples/prompts');
const outDir = makeTempDir('eval-steer-bench-');

/** A small seeded direction at the model's middle block, written as a vector file; returns its path and hook. */
function vectorFor(model: BenchModel): { file: string; hook: string } {
  const hook = `blocks.${Math.floor(model.layers / 2)}.hook_resid_post`;
  const random = new SeededRandom(1);
  const direction = Float32Array.from({ length: model.dim }, () => (random.next() - 0.5) * 0.1);
  const file = path.join(outDir, `v-${model.dim}.safetensors`);
  writeVectorFile(file, makeSteeringVector(file, new Map([[hook, direction]]), { method: 'manual' }));
  return { file, hook };
}

const prompts = await readCorpus(path.join(examples, 'lost-or-broken.txt'));

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** The unsteered arm's completions as plain requests (the first `limit` of them); returns completions/s. */
async function baseline(url: string, model: string, limit = Infinity): Promise<number> {
  const jobs = prompts.flatMap((doc, i) => Array.from({ length: SAMPLES }, (_, j) => ({ prompt: doc.text, seed: i * SAMPLES + j }))).slice(0, limit);
  let next = 0;
  const t0 = performance.now();
  const worker = async (): Promise<void> => {
    while (next < jobs.length) {
      const job = jobs[next++];
      const response = await fetch(`${url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model, prompt: job.prompt, max_tokens: MAX_TOKENS, temperature: 1, seed: job.seed }),
      });
      if (!response.ok) throw new Error(`baseline request failed: ${response.status} ${await response.text()}`);
      await response.json();
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return jobs.length / ((performance.now() - t0) / 1000);
}

async function command(model: BenchModel, vector: { file: string; hook: string }): Promise<{ arms: number; endToEnd: number }> {
  const t0 = performance.now();
  const result = await evalSteer([
    '--prompts', path.join(examples, 'lost-or-broken.txt'),
    '--control', path.join(examples, 'control.txt'),
    '--vector', vector.file, '--hook', vector.hook, '--scale', '2',
    '--samples', String(SAMPLES), '--max-tokens', String(MAX_TOKENS), '--concurrency', String(CONCURRENCY),
    '--model', model.spec, ...(model.tokenizer === undefined ? [] : ['--tokenizer', model.tokenizer]),
    '--out', path.join(outDir, 'out'),
  ]);
  return { arms: result.generations / result.seconds, endToEnd: result.generations / ((performance.now() - t0) / 1000) };
}

process.stdout.write(`${prompts.length} prompts × ${SAMPLES} samples × 2 arms, ${MAX_TOKENS} tokens, 30 control texts, concurrency ${CONCURRENCY}, ${rounds} round(s), medians\n\n`);
const rows = [['model', 'baseline completions/s', 'eval steer (arms)', 'ratio', 'eval steer (end to end)', 'ratio']];
for (const model of models) {
  const vector = vectorFor(model);
  const server = await startModelServer({ model: model.spec, tokenizer: model.tokenizer, port: 0, maxBatch: CONCURRENCY });
  const base: number[] = [];
  const arms: number[] = [];
  const ends: number[] = [];
  try {
    await baseline(server.url, server.model.name, 2 * CONCURRENCY); // warm-up
    for (let r = 0; r < rounds; r++) {
      base.push(await baseline(server.url, server.model.name));
      const c = await command(model, vector);
      arms.push(c.arms);
      ends.push(c.endToEnd);
    }
  } finally {
    await server.close();
  }
  const b = median(base);
  rows.push([model.name, b.toFixed(1), median(arms).toFixed(1), (median(arms) / b).toFixed(2), median(ends).toFixed(1), (median(ends) / b).toFixed(2)]);
}
const widths = rows[0].map((_, c) => Math.max(...rows.map((row) => row[c].length)));
for (const row of rows) process.stdout.write(`${row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  ')}\n`);
fs.rmSync(outDir, { recursive: true, force: true });
