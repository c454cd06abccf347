/**
 * How many rows the policies' feature screen settles on a real model and SAE (docs/policies.md,
 * "Which rows wait for the SAE"). stories260K generates from the example prompts with its
 * residual stream tapped at the SAE's hook; every row is encoded by the SAE's real encoder graph in
 * onnxruntime and screened by `FeatureScreen`. For a rule `above: T` on each feature, reported over
 * the features (median and quartiles): the share of rows the screen settles (it cannot fire there)
 * and the share where the feature really is above T (the best any screen could do is settle all
 * the others). T = 0 ("fires when active") and T = the median of the feature's activations over
 * the rows it fires on (a rule for its stronger half). The share of frames of 16 consecutive
 * rows (a 2 ms flush at 8 streams) that the screen settles whole, which is what keeps a batch off
 * the short deadline; and the screen's cost per row and rule on this thread.
 *
 *   npx tsx test/bench/screen.ts --sae DIR [--requests 24] [--tokens 96]
 *
 * DIR is a SAELens directory for stories260K, for example the one `saegate demo` trains into its
 * cache (a TopK SAE). Needs ../shared/models. Prints a table; asserts nothing.
 */
import { parseArgs } from 'node:util';
import { createSession, loadOrt } from '../../src/common/ort.js';
import { LocalEngine } from '../../src/model/engine.js';
import { loadModel } from '../../src/model/load.js';
import { FeatureScreen } from '../../src/policies/screen.js';
import { buildSaeEncoderGraph, SaeEncoderNames } from '../../src/sae/graph.js';
import { loadSae } from '../../src/sae/load.js';
import { hasSharedModels, stories260K } from '../helpers/fixtures.js';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const { values } = parseArgs({ options: { sae: { type: 'string' }, requests: { type: 'string' }, tokens: { type: 'string' } } });
if (values.sae === undefined) throw new Error('--sae DIR: a SAELens directory for stories260K (for example the one `saegate demo` trains)');
const requests = Number(values.requests ?? 24);
const maxTokens = Number(values.tokens ?? 96);
/** Rows per tap frame at 8 streams on stories260K (a 2 ms flush holds about two steps of 8 rows). */
const FRAME_ROWS = 16;

async function main(): Promise<void> {
  if (!hasSharedModels) {
    process.stdout.write('needs stories260K under ../shared/models: nothing to measure\n');
    return;
  }
  const sae = loadSae(path.resolve(values.sae!));
  const { dIn, dSae, hookName } = sae.config;
  const loaded = await loadModel({ model: stories260K.model });
  const engine = await LocalEngine.create({ weights: loaded.weights, maxBatch: 8, intraOpThreads: 1 });
  engine.setTapSubscription({ hooks: [hookName], dtype: 'f32', includePrompt: true });
  const chunks: Float32Array[] = [];
  engine.onStep((step) => {
    for (const b of step.activations) if (b.hook === hookName && b.data instanceof Float32Array) chunks.push(b.data.slice());
  });
  const repo = fileURLToPath(new URL('../../', import.meta.url));
  const prompts = ['happy.txt', 'sad.txt', 'control.txt'].flatMap((file) =>
    fs.readFileSync(path.join(repo, 'examples/prompts', file), 'utf8').split('\n').filter((l) => l.trim() !== '' && !l.startsWith('#')),
  );
  for (let r = 0; r < requests; r += 8) {
    await Promise.all(
      Array.from({ length: Math.min(8, requests - r) }, (_, i) => {
        const prompt = loaded.tokenizer!.encode(prompts[(r + i) % prompts.length], { addBos: true });
        return engine.generate({ requestId: `r${r + i}`, promptTokens: prompt, maxTokens, sampling: { temperature: 0.8, topP: 1, seed: r + i }, stopTokenIds: [], steering: [] }, () => {});
      }),
    );
  }
  await engine.close();
  const rowCount = chunks.reduce((n, c) => n + c.length / dIn, 0);
  const rows = new Float32Array(rowCount * dIn);
  let at = 0;
  for (const c of chunks) {
    rows.set(c, at);
    at += c.length;
  }

  // The SAE's real activations, dense per row.
  const ort = await loadOrt();
  const session = await createSession(buildSaeEncoderGraph(sae), { device: 'cpu', intraOpThreads: 1, spinning: false });
  const out = await session.run({ [SaeEncoderNames.input]: new ort.Tensor('float32', rows, [rowCount, dIn]) }, [SaeEncoderNames.indices, SaeEncoderNames.values]);
  await session.release();
  const indices = out[SaeEncoderNames.indices].data as BigInt64Array;
  const acts = out[SaeEncoderNames.values].data as Float32Array;
  const width = out[SaeEncoderNames.indices].dims[1];
  const dense = new Float32Array(rowCount * dSae);
  for (let r = 0; r < rowCount; r++) {
    for (let j = 0; j < width; j++) {
      const f = Number(indices[r * width + j]);
      if (f >= 0) dense[r * dSae + f] = acts[r * width + j];
    }
  }
  // Features that fired at least once here (a rule on a dead feature is not interesting).
  const live: number[] = [];
  for (let f = 0; f < dSae; f++) {
    for (let r = 0; r < rowCount; r++) {
      if (dense[r * dSae + f] > 0) {
        live.push(f);
        break;
      }
    }
  }

  const screen = FeatureScreen.forPrecision(sae, 'f32')!;
  const data = { dtype: 'f32' as const, data: rows };
  const quartiles = (xs: number[]): string => {
    const s = [...xs].sort((a, b) => a - b);
    const q = (p: number): string => (100 * s[Math.min(s.length - 1, Math.floor(p * s.length))]).toFixed(1);
    return `${q(0.5)}% [${q(0.25)}–${q(0.75)}]`;
  };
  const lines = [
    `\n## Feature screen on ${path.basename(path.resolve(values.sae!))} (${sae.config.architecture}${sae.config.k !== null ? ` k ${sae.config.k}` : ''}, ${dIn} → ${dSae} at ${hookName}), ${rowCount} rows of stories260K, ${live.length} features that fired\n`,
    `| rule | rows above T (could fire) | rows the screen settles | settled of the rows that cannot fire | frames of ${FRAME_ROWS} rows all settled |`,
    '|---|---|---|---|---|',
  ];
  let screenNs = 0;
  let screenCalls = 0;
  for (const rule of ['above: 0', 'above: median active'] as const) {
    const above: number[] = [];
    const settled: number[] = [];
    const efficiency: number[] = [];
    const quietFrames: number[] = [];
    for (const f of live) {
      let threshold = 0;
      if (rule === 'above: median active') {
        const active = Array.from({ length: rowCount }, (_, r) => dense[r * dSae + f]).filter((v) => v > 0).sort((a, b) => a - b);
        threshold = active[Math.floor(active.length / 2)];
      }
      let over = 0;
      let quiet = 0;
      let frames = 0;
      let framesQuiet = 0;
      let frameQuiet = true;
      const t0 = process.hrtime.bigint();
      for (let r = 0; r < rowCount; r++) {
        screen.prepare(data, r);
        const settles = !screen.mayExceed(f, threshold);
        if (settles) quiet++;
        frameQuiet &&= settles;
        if ((r + 1) % FRAME_ROWS === 0) {
          frames++;
          if (frameQuiet) framesQuiet++;
          frameQuiet = true;
        }
        if (dense[r * dSae + f] > threshold) over++;
      }
      quietFrames.push(framesQuiet / Math.max(1, frames));
      screenNs += Number(process.hrtime.bigint() - t0);
      screenCalls += rowCount;
      above.push(over / rowCount);
      settled.push(quiet / rowCount);
      efficiency.push(quiet / Math.max(1, rowCount - over));
    }
    lines.push(`| ${rule} | ${quartiles(above)} | ${quartiles(settled)} | ${quartiles(efficiency)} | ${quartiles(quietFrames)} |`);
  }
  lines.push('', `Median [quartiles] over the features. Screen: ${(screenNs / screenCalls / 1000).toFixed(2)} µs per row and rule (prepare + one bound, this thread).`);
  process.stdout.write(`${lines.join('\n')}\n`);
}

await main();
