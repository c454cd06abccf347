/**
 * `vectors build` throughput: prompts per second of building a vector from the example prompt sets
 * (examples/prompts/happy.txt against sad.txt, 80 prompts) on stories260K and on a synthetic
 * 512-wide model (8 layers), end to end through the command's own function (`vectorsBuild`: model
 * load, one reference server in-process, one collector pass per hook with every prompt through
 * real HTTP and the tap, the math, the file) at one hook and at two hooks. The baseline, measured in the same process and round, is the same
 * prompts as plain one-token completions (`max_tokens: 1`, the collector's request) on a server that
 * is already running, with no tap: the ratio is what collection, per-pass start-up and the math
 * cost on top of the model's own work. Rounds interleave baseline and build; medians are reported.
 * Prints a table; asserts nothing about time. The command's progress lines go to stderr.
 *
 *   npx tsx test/bench/vectors-build.ts [--rounds N] [--quick] 2>/dev/null
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { vectorsBuild } from '../../src/cli/vectors-build.js';
import { readCorpus } from '../../src/lab/corpus/read.js';
import { startModelServer } from '../../src/model/server.js';
import { hasSharedModels, makeTempDir, stories260K } from '../helpers/fixtures.js';
import { median } from '../helpers/bench-stats.js';

const { values } = parseArgs({ options: { rounds: { type: 'string' }, quick: { type: 'boolean' } } });
const rounds = Number(values.rounds ?? (values.quick ? 1 : 3));
const CONCURRENCY = 8;

const examples = path.resolve(import.meta.dirname, '../../examples/prompts');

/** Runs `texts` as one-token completions, `CONCURRENCY` at a time; returns prompts/s. */
async function baseline(url: string, model: string, texts: string[]): Promise<number> {
  let next = 0;
  const t0 = performance.now();
  const worker = async (): Promise<void> => {
    while (next < texts.length) {
      const prompt = texts[next++];
      const response = await fetch(`${url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model, prompt, max_tokens: 1, temperature: 0 }),
      });
      if (!response.ok) throw new Error(`baseline request failed: ${response.status} ${await response.text()}`);
      await response.json();
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return texts.length / ((performance.now() - t0) / 1000);
}

const outDir = makeTempDir('vectors-bench-');

/** One `saegate vectors build` in-process; returns prompts/s (prompts in the two sets, not × hooks). */
async function build(modelSpec: string, tokenizer: string | undefined, hooks: string[], prompts: number): Promise<number> {
  const t0 = performance.now();
  await vectorsBuild([
    '--positive', path.join(examples, 'happy.txt'),
    '--negative', path.join(examples, 'sad.txt'),
    '--hooks', hooks.join(','),
    '--model', modelSpec,
    ...(tokenizer === undefined ? [] : ['--tokenizer', tokenizer]),
    '--concurrency', String(CONCURRENCY),
    '--out', path.join(outDir, 'bench.safetensors'),
  ]);
  return prompts / ((performance.now() - t0) / 1000);
}

const models = [
  ...(hasSharedModels ? [{ name: 'stories260K (d 64, 5 layers)', spec: stories260K.model, tokenizer: stories260K.tokenizer as string | undefined, layers: 5 }] : []),
  { name: 'synthetic (d 512, 8 layers)', spec: 'synthetic:dim=512,layers=8,heads=8,kv=8,hidden=1376,vocab=4096,ctx=512,seed=1', tokenizer: undefined, layers: 8 },
];
if (!hasSharedModels) process.stdout.write('stories260K not found under ../shared/models: synthetic model only\n');

const positive = await readCorpus(path.join(examples, 'happy.txt'));
const negative = await readCorpus(path.join(examples, 'sad.txt'));
const texts = [...positive, ...negative].map((d) => d.text);
process.stdout.write(`${texts.length} prompts, concurrency ${CONCURRENCY}, ${rounds} round(s), medians\n\n`);
const rows: string[][] = [['model', 'baseline prompts/s', 'build 1 hook prompts/s', 'ratio', 'build 2 hooks prompts/s', 'ratio']];
for (const model of models) {
  const hooks = [`blocks.${Math.floor(model.layers / 2)}.hook_resid_post`, `blocks.${model.layers - 1}.hook_resid_post`];
  const server = await startModelServer({ model: model.spec, tokenizer: model.tokenizer, port: 0, maxBatch: 8 });
  const base: number[] = [];
  const one: number[] = [];
  const two: number[] = [];
  try {
    await baseline(server.url, server.model.name, texts.slice(0, 8)); // warm-up
    for (let r = 0; r < rounds; r++) {
      base.push(await baseline(server.url, server.model.name, texts));
      one.push(await build(model.spec, model.tokenizer, hooks.slice(0, 1), texts.length));
      two.push(await build(model.spec, model.tokenizer, hooks, texts.length));
    }
  } finally {
    await server.close();
  }
  const b = median(base);
  rows.push([model.name, b.toFixed(1), median(one).toFixed(1), (median(one) / b).toFixed(2), median(two).toFixed(1), (median(two) / b).toFixed(2)]);
}
const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
for (const row of rows) process.stdout.write(`${row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  ')}\n`);
fs.rmSync(outDir, { recursive: true, force: true });
