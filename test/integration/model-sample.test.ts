/**
 * `saegate model sample` as a user runs it: a real process sampling a real model (stories260K when
 * ../shared/models has it) and a seeded synthetic model (always, so this file never skips whole).
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../../src/model/load.js';
import { runCliToExit, withCli } from '../helpers/cli.js';
import { waitFor } from '../helpers/wait.js';
import { hasSharedModels, makeTempDir, needsSharedModels, removeTempDir, stories260K } from '../helpers/fixtures.js';

const synthetic = 'synthetic:dim=32,layers=2,heads=4,kv=2,hidden=64,vocab=300,ctx=64,seed=1';
const N = 12;
const MAX_TOKENS = 48;

interface CorpusLine {
  id: number;
  text: string;
  tokens: number;
  finish_reason: 'stop' | 'length';
}

interface SampleRun {
  code: number | null;
  stdout: string;
  stderr: string;
  file: string;
}

let dir: string;
beforeAll(() => {
  dir = makeTempDir('saegate-sample-');
});
afterAll(() => removeTempDir(dir));

async function sample(name: string, args: string[]): Promise<SampleRun> {
  const file = path.join(dir, name);
  const { code, out, err } = await runCliToExit(['model', 'sample', '--out', file, '--threads', '1', ...args]);
  return { code, stdout: out, stderr: err, file };
}

/** Parses a corpus file strictly: one JSON object per line, keys in the documented order. */
function readLines(file: string): CorpusLine[] {
  const content = fs.readFileSync(file, 'utf8');
  expect(content.endsWith('\n')).toBe(true);
  return content
    .slice(0, -1)
    .split('\n')
    .map((line) => {
      const value = JSON.parse(line) as CorpusLine;
      expect(Object.keys(value)).toEqual(['id', 'text', 'tokens', 'finish_reason']);
      return value;
    });
}

const models = [
  { title: 'a seeded synthetic model', model: synthetic, name: 'synthetic', skip: false, prompt: 'hi' },
  { title: needsSharedModels('stories260K'), model: stories260K.model, name: 'stories260K', skip: !hasSharedModels, prompt: 'Once upon a time' },
];

describe.each(models)('saegate model sample on $title', ({ model, name, skip, prompt }) => {
  it.skipIf(skip)(
    'writes the same bytes at concurrency 1 and 8, other bytes for another seed, one well-formed document per line',
    async () => {
      const common = ['--model', model, '--n', String(N), '--max-tokens', String(MAX_TOKENS)];
      const [one, eight, other, prompted] = await Promise.all([
        sample(`${name}-a.jsonl`, [...common, '--seed', '0', '--concurrency', '1']),
        sample(`${name}-b.jsonl`, [...common, '--seed', '0', '--concurrency', '8']),
        sample(`${name}-c.jsonl`, [...common, '--seed', '1', '--concurrency', '8']),
        sample(`${name}-p.jsonl`, ['--model', model, '--n', '3', '--max-tokens', '16', '--prompt', prompt]),
      ]);
      for (const run of [one, eight, other, prompted]) {
        expect(run.code, run.stderr).toBe(0);
        expect(run.stdout).toBe('');
        // stderr is a pipe here, not a terminal: no progress line rewritten with \r.
        expect(run.stderr).not.toContain('\r');
      }

      const bytes = fs.readFileSync(one.file);
      expect(fs.readFileSync(eight.file).equals(bytes)).toBe(true);
      expect(fs.readFileSync(other.file).equals(bytes)).toBe(false);

      const lines = readLines(one.file);
      expect(lines.map((l) => l.id)).toEqual(Array.from({ length: N }, (_, i) => i));
      for (const line of lines) {
        expect(typeof line.text).toBe('string');
        expect(Number.isInteger(line.tokens)).toBe(true);
        expect(line.tokens).toBeGreaterThanOrEqual(1);
        expect(line.tokens).toBeLessThanOrEqual(MAX_TOKENS);
        expect(['stop', 'length']).toContain(line.finish_reason);
      }
      // Every document fits the model when read back as a prompt (BOS + text, and one token more);
      // a 'length' document short of --max-tokens is one cut back to fit.
      const loaded = await loadModel({ model });
      const context = loaded.weights.config.maxSeqLen;
      const cutBack = lines.filter((l) => l.finish_reason === 'length' && l.tokens < MAX_TOKENS).length;
      for (const line of lines) expect(loaded.tokenizer?.encode(line.text, { addBos: true }).length, `document ${line.id}`).toBeLessThanOrEqual(context - 1);
      // Non-trivial: mostly long, all different, and none shared with the other seed's corpus.
      const texts = lines.map((l) => l.text);
      expect(texts.filter((t) => t.length >= 20).length).toBeGreaterThanOrEqual(N - 2);
      expect(new Set(texts).size).toBe(N);
      const otherTexts = new Set(readLines(other.file).map((l) => l.text));
      expect(texts.filter((t) => otherTexts.has(t))).toEqual([]);

      // The one-line summary agrees with the file.
      const empty = texts.filter((t) => t === '').length;
      const tokens = lines.reduce((sum, l) => sum + l.tokens, 0);
      const summary = new RegExp(`^saegate model sample: ${N} documents from ${name} \\(${empty} empty; \\d+ ended with EOS or BOS, \\d+ at --max-tokens${cutBack > 0 ? `, ${cutBack} of them cut back to fit the context when encoded again` : ''}\\), ${tokens} tokens in [\\d.]+ s \\(\\d+ tokens/s\\) → ${one.file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm');
      expect(one.stderr).toMatch(summary);

      // --prompt: every document starts from it.
      const promptedLines = readLines(prompted.file);
      expect(promptedLines).toHaveLength(3);
      for (const line of promptedLines) expect(line.text.startsWith(prompt)).toBe(true);
      expect(fs.readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    },
    120_000,
  );
});

describe.skipIf(!hasSharedModels)(needsSharedModels('saegate model sample on stories260K: the text'), () => {
  it('reads as TinyStories English', async () => {
    const run = await sample('stories-text.jsonl', ['--model', stories260K.model, '--n', '8', '--max-tokens', '48', '--seed', '3']);
    expect(run.code, run.stderr).toBe(0);
    const texts = readLines(run.file).map((l) => l.text);
    const english = texts.filter((t) => (t.match(/\b(the|a|was|and|to|she|he|they)\b/gi) ?? []).length >= 3);
    expect(english.length).toBeGreaterThanOrEqual(6);
  });
});

describe('saegate model sample, bad input and interruption', () => {
  // Each case is its own short process and shares nothing: run them side by side.
  it.concurrent.for([
    ['no --out', ['--model', synthetic], /--out: is required/],
    ['--top-p 0', ['--model', synthetic, '--out', 'x.jsonl', '--top-p', '0'], /--top-p: /],
    ['--n 0', ['--model', synthetic, '--out', 'x.jsonl', '--n', '0'], /--n: /],
    ['a fractional seed', ['--model', synthetic, '--out', 'x.jsonl', '--seed', '1.5'], /--seed: /],
    ['an unknown flag', ['--model', synthetic, '--out', 'x.jsonl', '--steps', '3'], /'--steps'/],
  ] as const)('exits 2 with the usage for %s', async ([, args, message], { expect }) => {
    const proc = await runCliToExit(['model', 'sample', ...args]);
    expect(proc.code).toBe(2);
    expect(proc.err).toContain('SAEGATE_ERR_CLI_USAGE');
    expect(proc.err).toMatch(message);
    expect(proc.err).toContain('Usage: saegate model sample');
  });

  it('refuses --max-tokens past the context without leaving a file, and names an unwritable --out', async () => {
    const target = path.join(dir, 'too-long.jsonl');
    const tooLong = await runCliToExit(['model', 'sample', '--model', synthetic, '--out', target, '--max-tokens', '64']);
    expect(tooLong.code).toBe(2);
    expect(tooLong.err).toMatch(/--max-tokens: 64 plus the prompt's 1 tokens exceeds the model's context of 64 tokens/);
    expect(fs.readdirSync(dir).filter((f) => f.includes('too-long'))).toEqual([]);

    const nowhere = path.join(dir, 'no-such-dir', 'c.jsonl');
    const unwritable = await runCliToExit(['model', 'sample', '--model', synthetic, '--out', nowhere]);
    expect(unwritable.code).toBe(1);
    expect(unwritable.err).toContain(`SAEGATE_ERR_CORPUS_FILE: corpus file '${nowhere}'`);
  });

  it('samples the demo default model when --model is not given', async () => {
    const target = path.join(dir, 'default-model.jsonl');
    const proc = await runCliToExit(['model', 'sample', '--out', target, '--n', '2', '--max-tokens', '4'], { env: { SAEGATE_DEMO_MODEL: synthetic } });
    expect(proc.code).toBe(0);
    expect(proc.err).toMatch(/^saegate model sample: 2 documents from synthetic /m);
    expect(readLines(target)).toHaveLength(2);
  });

  it('stops on SIGINT with exit code 130, keeping an existing --out and removing its temporary file', async () => {
    const sub = makeTempDir('saegate-sample-int-');
    try {
      const target = path.join(sub, 'corpus.jsonl');
      fs.writeFileSync(target, 'previous corpus\n');
      await withCli(['model', 'sample', '--model', synthetic, '--out', target, '--n', '100000', '--max-tokens', '48', '--threads', '1'], async (proc) => {
        // The temporary file exists from before the model loads; it has bytes once sampling has
        // written its first 64 KiB of documents, so SIGINT lands mid-sampling.
        const tmpBytes = (): number => fs.readdirSync(sub).filter((f) => f.endsWith('.tmp')).reduce((n, f) => n + fs.statSync(path.join(sub, f)).size, 0);
        await waitFor('the first documents in the temporary corpus file', () => tmpBytes() > 0, { deadlineMs: 40_000, intervalMs: 20 });
        proc.child.kill('SIGINT');
        expect(await proc.exited).toBe(130);
        expect(proc.err()).toContain(`SIGINT: interrupted; ${target} was not written`);
      });
      expect(fs.readdirSync(sub)).toEqual(['corpus.jsonl']);
      expect(fs.readFileSync(target, 'utf8')).toBe('previous corpus\n');
    } finally {
      removeTempDir(sub);
    }
  });
});
