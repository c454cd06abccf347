/**
 * What a body-field `--upstream-steering` mode costs per steered request on the event loop: the
 * strategy's `deliver` (parse the client's JSON, write the field, serialise again) for a ~1 KB chat
 * body and one steering term, at d_model 288 and 4096, against a baseline measured in the same run:
 * JSON.parse + JSON.stringify of the same body without steering (the least any rewrite costs).
 * Variants are interleaved round by round and the median over rounds is reported, so drifting load
 * from other processes on the machine hits them alike. Prints a table; asserts nothing about time.
 *
 *   npx tsx test/bench/upstream-steering.ts [--rounds N] [--iterations N]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createSteeringStrategy, type SteeringStrategy } from '../../src/proxy/upstream-steering.js';
import type { SteeringTerm } from '../../src/tap/host.js';
import type { TapHost } from '../../src/tap/host.js';
import { median } from '../helpers/bench-stats.js';

const { values } = parseArgs({ options: { rounds: { type: 'string' }, iterations: { type: 'string' } } });
const rounds = Number(values.rounds ?? 7);
const iterations = Number(values.iterations ?? 400);

const body = Buffer.from(
  JSON.stringify({
    model: 'Qwen/Qwen2.5-1.5B-Instruct',
    messages: [
      { role: 'system', content: 'You are a helpful assistant. '.repeat(8) },
      { role: 'user', content: 'Tell me a story about a lighthouse keeper and a storm. '.repeat(12) },
    ],
    max_tokens: 256,
    temperature: 0.7,
  }),
);

const vectorDir = fs.mkdtempSync(path.join(os.tmpdir(), 'saegate-bench-upstream-'));
const noTap = null as unknown as TapHost; // body-field strategies never touch the tap
const strategies = (['reference', 'easysteer', 'vllm-xargs'] as const).map((mode) => createSteeringStrategy(mode, { tap: noTap, vectorDir: mode === 'easysteer' ? vectorDir : null }));

function terms(dModel: number): SteeringTerm[] {
  // One Float32Array reused across requests, as the policy resolver hands them out.
  const vector = Float32Array.from({ length: dModel }, (_, i) => Math.sin(i * 0.37) / 7);
  return [{ hook: 'blocks.6.hook_resid_post', vector, scale: 4, fromPosition: 0, untilPosition: null }];
}

/** Mean µs per call of `run` over `iterations` calls. */
function time(run: () => unknown): number {
  const start = process.hrtime.bigint();
  for (let i = 0; i < iterations; i++) run();
  return Number(process.hrtime.bigint() - start) / 1000 / iterations;
}

const baseline = (): unknown => Buffer.from(JSON.stringify(JSON.parse(body.toString('utf8'))));

console.log(`body ${body.length} bytes, ${rounds} rounds × ${iterations} requests; baseline = JSON.parse + JSON.stringify of the unsteered body`);
console.log('| d_model | mode | µs/request (median) | × baseline | forwarded body bytes |');
console.log('|---|---|---|---|---|');
for (const dModel of [288, 4096]) {
  const plan = terms(dModel);
  const variants: [string, SteeringStrategy | null][] = [['baseline', null], ...strategies.map((s) => [s.mode, s] as [string, SteeringStrategy])];
  for (const [, strategy] of variants) strategy?.deliver('warm', plan, body); // exports the GGUF, fills memo caches
  const samples = new Map<string, number[]>(variants.map(([name]) => [name, []]));
  for (let r = 0; r < rounds; r++) {
    for (const [name, strategy] of variants) {
      samples.get(name)!.push(time(strategy === null ? baseline : () => strategy.deliver('r', plan, body)));
    }
  }
  const base = median(samples.get('baseline')!);
  for (const [name, strategy] of variants) {
    const us = median(samples.get(name)!);
    const size = strategy === null ? body.length : strategy.deliver('size', plan, body).body.length;
    console.log(`| ${dModel} | ${name} | ${us.toFixed(1)} | ${(us / base).toFixed(2)} | ${size} |`);
  }
}
fs.rmSync(vectorDir, { recursive: true, force: true });
