/**
 * Every command's flags, in-process: the option tables parse what users type, keep the flag names
 * and defaults the commands always had, and refuse bad values naming the flag. (One process-level
 * smoke test per command lives in test/integration.)
 */
import { describe, expect, it } from 'vitest';
import { SaegateError } from '../../../src/common/errors.js';
import { flagName, parseCommand, type OptionTable } from '../../../src/common/options.js';
import { baselineRecordCommand } from '../../../src/cli/baseline-record.js';
import { demoCommand } from '../../../src/cli/demo.js';
import { evalSteerCommand } from '../../../src/cli/eval-steer.js';
import { modelSampleCommand } from '../../../src/cli/model-sample.js';
import { modelServeCommand } from '../../../src/cli/model-serve.js';
import { saeEncodeCommand, saeInfoCommand } from '../../../src/cli/sae.js';
import { saeFeaturesCommand } from '../../../src/cli/sae-features.js';
import { saeTrainCommand } from '../../../src/cli/sae-train.js';
import { serveCommand } from '../../../src/cli/serve.js';
import { vectorsBuildCommand } from '../../../src/cli/vectors-build.js';

function usageError(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    if (error instanceof SaegateError && error.code === 'SAEGATE_ERR_CLI_USAGE') return error.message.split('\n\n')[0];
    throw error;
  }
  throw new Error('expected SAEGATE_ERR_CLI_USAGE');
}

/** What these tests read of a command (its `check` is typed by its own table). */
interface Command {
  name: string;
  synopsis: string;
  options: OptionTable;
}

const commands: [string, Command][] = [
  ['serve', serveCommand],
  ['demo', demoCommand],
  ['model serve', modelServeCommand],
  ['model sample', modelSampleCommand],
  ['sae train', saeTrainCommand],
  ['sae features', saeFeaturesCommand],
  ['sae info', saeInfoCommand],
  ['sae encode', saeEncodeCommand],
  ['baseline record', baselineRecordCommand],
  ['vectors build', vectorsBuildCommand],
  ['eval steer', evalSteerCommand],
];

describe.each(commands)('saegate %s option table', (name, command) => {
  it('names itself and its synopsis after the command', () => {
    expect(command.name).toBe(name);
    expect(command.synopsis.startsWith(`saegate ${name}`)).toBe(true);
  });

  it('has defaults its own types accept, and one flag per option', () => {
    for (const [key, spec] of Object.entries(command.options)) {
      if (spec.default !== undefined && spec.default !== null && !spec.multiple) {
        expect(spec.type.schema.safeParse(spec.default).success, `${name} --${flagName(key)} default`).toBe(true);
      }
      expect(spec.required === true && spec.default !== undefined, `${key} is required and has a default`).toBe(false);
    }
    const flags = Object.keys(command.options).map(flagName);
    expect(new Set(flags).size).toBe(flags.length);
  });
});

describe('flags and defaults kept from before the options system', () => {
  it('model serve', () => {
    expect(parseCommand(modelServeCommand, ['--model', 'm.bin'])).toEqual({
      model: 'm.bin', tokenizer: undefined, name: undefined, host: '127.0.0.1', port: 8000, tap: undefined, tapToken: undefined,
      device: 'cpu', maxBatch: 8, threads: undefined, planTimeoutMs: 2000, tapFlushMs: 2, log: false,
      maxConnections: 10_000, clientHeadersTimeoutMs: 10_000, clientRequestTimeoutMs: 120_000, keepAliveTimeoutMs: 5000, maxRequestsPerSocket: 1000,
    });
    const all = parseCommand(
      modelServeCommand,
      ['--model', 'm', '--tokenizer', 't', '--name', 'n', '--host', '0.0.0.0', '--port', '0', '--tap', 'ws://h:1/v1/tap', '--tap-token', 'x', '--device', 'cuda', '--max-batch', '4', '--threads', '2', '--plan-timeout-ms', '0', '--tap-flush-ms', '5', '--log'],
    );
    expect(all).toMatchObject({ port: 0, tapToken: 'x', device: 'cuda', maxBatch: 4, threads: 2, planTimeoutMs: 0, tapFlushMs: 5, log: true });
  });

  it('model serve reads the tap token from SAEGATE_TAP_TOKEN, the flag winning', () => {
    expect(parseCommand(modelServeCommand, ['--model', 'm'], { SAEGATE_TAP_TOKEN: 'env' }).tapToken).toBe('env');
    expect(parseCommand(modelServeCommand, ['--model', 'm', '--tap-token', 'flag'], { SAEGATE_TAP_TOKEN: 'env' }).tapToken).toBe('flag');
  });

  it('model sample', () => {
    expect(parseCommand(modelSampleCommand, ['--out', 'c.jsonl'])).toEqual({
      out: 'c.jsonl', model: undefined, tokenizer: undefined, n: 2000, seed: 0, maxTokens: 256, temperature: 1, topP: 1, prompt: '', concurrency: 8, threads: undefined,
    });
    expect(parseCommand(modelSampleCommand, ['--out', 'c', '--temperature', '0', '--top-p', '0.9', '--prompt', 'Once'])).toMatchObject({ temperature: 0, topP: 0.9, prompt: 'Once' });
  });

  it('sae train', () => {
    expect(parseCommand(saeTrainCommand, ['--out', 'sae', '--corpus', 'c.jsonl'])).toMatchObject({
      hook: 'blocks.2.hook_resid_post', heldOut: 0.1, maxRows: 2_000_000, spliceDocuments: 200, k: [8], batch: 4096, steps: 3000, seed: 0, checkpointEvery: 500, resume: false, device: 'cpu',
      dSae: undefined, auxK: undefined, lr: undefined, warmup: undefined, decay: undefined,
    });
    expect(parseCommand(saeTrainCommand, ['--out', 'o', '--activations', 'a.npy', '--k', '4,8,4,16', '--lr', '4e-3', '--max-rows', '2e5']))
      .toMatchObject({ k: [4, 8, 16], lr: 0.004, maxRows: 200_000 });
  });

  it('sae features', () => {
    expect(parseCommand(saeFeaturesCommand, ['--sae', 's', '--corpus', 'c'])).toMatchObject({ contexts: 10, windowBefore: 12, windowAfter: 4, denseThreshold: 0.1, device: 'cpu', topK: undefined });
  });

  it('sae info and sae encode', () => {
    expect(parseCommand(saeInfoCommand, ['dir', '--hook', 'h'])).toEqual({ dir: 'dir', hook: 'h' });
    expect(parseCommand(saeEncodeCommand, ['--sae', 's', '--input', 'i.npy', '--output', 'o.json', '--top-k', '3'])).toMatchObject({ topK: 3, tensor: undefined });
  });

  it('vectors build', () => {
    expect(parseCommand(vectorsBuildCommand, ['--positive', 'p.txt', '--negative', 'n.txt', '--hooks', 'blocks.1.hook_resid_post,blocks.2.hook_resid_post,blocks.1.hook_resid_post', '--out', 'v.safetensors'])).toEqual({
      positive: 'p.txt', negative: 'n.txt', hooks: ['blocks.1.hook_resid_post', 'blocks.2.hook_resid_post'], out: 'v.safetensors',
      model: undefined, tokenizer: undefined, upstream: undefined, tapPort: undefined, concurrency: 8, method: 'mean-diff', position: 'last', heldOut: 0.25, seed: 0, report: undefined, device: 'cpu', threads: undefined,
    });
  });

  it('demo', () => {
    expect(parseCommand(demoCommand, [])).toEqual({ port: 9000, modelPort: 8000, host: '127.0.0.1', sae: undefined, noSae: false });
  });

  it('serve: the proxy table plus repeatable --sae, from flags, environment and defaults', () => {
    const values = parseCommand(serveCommand, ['--sae', 'a', '--sae', 'b', '--port', '0'], { SAEGATE_UPSTREAM: 'http://m:8000/' });
    expect(values).toMatchObject({ upstream: 'http://m:8000', port: 0, sae: ['a', 'b'], maxStreams: 1024, tapToken: null });
  });
});

/** Each command's parse, by name. */
const parsers: Record<string, (argv: string[]) => unknown> = {
  'model serve': (argv) => parseCommand(modelServeCommand, argv),
  'model sample': (argv) => parseCommand(modelSampleCommand, argv),
  'sae train': (argv) => parseCommand(saeTrainCommand, argv),
  'sae features': (argv) => parseCommand(saeFeaturesCommand, argv),
  'sae info': (argv) => parseCommand(saeInfoCommand, argv),
  'sae encode': (argv) => parseCommand(saeEncodeCommand, argv),
  demo: (argv) => parseCommand(demoCommand, argv),
  'vectors build': (argv) => parseCommand(vectorsBuildCommand, argv),
};

describe('bad flags are refused in-process, naming the flag', () => {
  it.each([
    ['model serve', ['--model', 'm', '--device', 'tpu'], '--device: expected one of cpu, cuda, got "tpu"'],
    ['model serve', ['--model', 'm', '--tap', 'http://x'], '--tap: expected a ws:// or wss:// URL, got "http://x"'],
    ['model serve', ['--port', '1'], '--model: is required'],
    ['model sample', ['--out', 'x', '--top-p', '0'], '--top-p: expected a number > 0 and ≤ 1, got "0"'],
    ['model sample', ['--out', 'x', '--seed', '1.5'], '--seed: expected an integer ≥ 0, got "1.5"'],
    ['model sample', ['--out', 'x', '--steps', '3'], "Unknown option '--steps'"],
    ['sae train', ['--out', 'o'], '--corpus: give exactly one of --corpus and --activations'],
    ['vectors build', ['--positive', 'p', '--negative', 'n', '--out', 'v'], '--hooks: is required'],
    ['vectors build', ['--positive', 'p', '--negative', 'n', '--out', 'v', '--hooks', 'a,,b'], '--hooks: expected hook point names separated by commas, e.g. blocks.2.hook_resid_post,blocks.3.hook_resid_post, got "a,,b"'],
    ['vectors build', ['--positive', 'p', '--negative', 'n', '--out', 'v', '--hooks', 'h', '--method', 'svd'], '--method: expected one of mean-diff, pca, got "svd"'],
    ['vectors build', ['--positive', 'p', '--negative', 'n', '--out', 'v', '--hooks', 'h', '--held-out', '0.95'], '--held-out: expected a number ≥ 0 and ≤ 0.9, got "0.95"'],
    ['vectors build', ['--positive', 'p', '--negative', 'n', '--out', 'v', '--hooks', 'h', '--model', 'm', '--upstream', 'http://h:1'], '--upstream: give --model or --upstream, not both'],
    ['sae train', ['--out', 'o', '--corpus', 'c', '--activations', 'a'], '--corpus: give exactly one of --corpus and --activations'],
    ['sae train', ['--out', 'o', '--activations', 'a', '--model', 'm'], '--activations: --model/--upstream run a --corpus; --activations needs neither'],
    ['sae train', ['--out', 'o', '--corpus', 'c', '--model', 'm', '--upstream', 'http://h:1'], '--upstream: give --model or --upstream, not both'],
    ['sae train', ['--out', 'o', '--corpus', 'c', '--k', '4,0'], '--k: expected a positive integer or a comma-separated list, e.g. 4,8,16,32, got "4,0"'],
    ['sae train', ['--out', 'o', '--corpus', 'c', '--held-out', '0.95'], '--held-out: expected a number ≥ 0 and ≤ 0.9, got "0.95"'],
    ['sae features', ['--sae', 's'], '--corpus: is required'],
    ['sae features', ['--sae', 's', '--corpus', 'c', '--dense-threshold', '0'], '--dense-threshold: expected a number > 0 and ≤ 1, got "0"'],
    ['sae info', [], 'DIR: is required'],
    ['sae info', ['a', 'b'], 'b: unexpected argument'],
    ['sae encode', ['--sae', 's', '--input', 'i'], '--output: is required'],
    ['demo', ['--sae', 'd', '--no-sae'], '--no-sae: --sae and --no-sae exclude each other'],
    ['demo', ['--port=70000'], '--port: expected an integer from 0 to 65535, got "70000"'],
  ] as const)('saegate %s %j', (name, argv, message) => {
    expect(usageError(() => parsers[name]([...argv]))).toBe(message);
  });
});
