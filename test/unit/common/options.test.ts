import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SaegateError } from '../../../src/common/errors.js';
import {
  decimal,
  flag,
  HelpRequested,
  integer,
  oneOf,
  parseCommand,
  resolveOptions,
  text,
  usageText,
  type CommandSpec,
} from '../../../src/common/options.js';
import { makeTempDir, removeTempDir } from '../../helpers/fixtures.js';

const dir = makeTempDir('saegate-options-');
afterAll(() => removeTempDir(dir));

const options = {
  input: { type: text('FILE'), required: true, help: 'file to read' },
  batchRows: { type: integer(1, 64), default: 8, help: 'rows per batch' },
  rate: { type: decimal({ above: 0, max: 1 }, 'F'), default: 0.5, help: 'fraction kept' },
  device: { type: oneOf(['cpu', 'cuda']), default: 'cpu', help: 'execution provider' },
  token: { type: text('TOKEN'), env: 'TEST_TOKEN', help: 'bearer token' },
  verbose: { type: flag, default: false, help: 'say more' },
  sae: { type: text('DIR'), multiple: true, noConfigFile: true, help: 'an SAE' },
} as const;

/** Flags only: errors are usage errors. */
const cli = {
  name: 'tool',
  synopsis: 'saegate tool --input FILE',
  description: 'A test command.',
  options,
  check: (v) => (v.device === 'cuda' && v.batchRows > 32 ? { option: 'batchRows', message: 'at most 32 on cuda' } : undefined),
} as const satisfies CommandSpec<typeof options>;

/** With a config file: errors are configuration errors. */
const configured = { ...cli, configFile: { env: 'TEST_CONFIG' } } as const satisfies CommandSpec<typeof options>;

function thrown(fn: () => unknown): SaegateError {
  try {
    fn();
  } catch (error) {
    if (error instanceof SaegateError) return error;
    throw error;
  }
  throw new Error('expected a SaegateError');
}

function writeConfig(name: string, value: unknown): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, JSON.stringify(value));
  return file;
}

describe('options: resolving', () => {
  it('fills defaults, parses typed values from strings, and leaves unset options undefined', () => {
    expect(parseCommand(cli, ['--input', 'a.txt', '--batch-rows', '16', '--rate', '.25', '--verbose', '--sae', 'x', '--sae=y'])).toEqual({
      input: 'a.txt',
      batchRows: 16,
      rate: 0.25,
      device: 'cpu',
      token: undefined,
      verbose: true,
      sae: ['x', 'y'],
    });
  });

  it('takes flags over environment over config file over defaults, key by key', () => {
    const file = writeConfig('layers.json', { input: 'file.txt', batchRows: 2, rate: 0.1, token: 'from-file' });
    const values = resolveOptions(configured, { flags: { config: file, 'batch-rows': '4' }, env: { TEST_TOKEN: 'from-env' } });
    expect(values).toMatchObject({ input: 'file.txt', batchRows: 4, rate: 0.1, token: 'from-env' });
    expect(resolveOptions(configured, { env: { TEST_CONFIG: file } }).batchRows).toBe(2);
  });

  it('validates every source, so a bad value under a winning one is still refused, naming its source', () => {
    const file = writeConfig('bad-under-flag.json', { input: 'f', batchRows: 1000 });
    expect(thrown(() => resolveOptions(configured, { flags: { config: file, 'batch-rows': '4' } })).message).toBe(
      `invalid configuration '${file}: batchRows': expected an integer from 1 to 64, got 1000`,
    );
    const good = writeConfig('good.json', { input: 'f', batchRows: 4 });
    expect(resolveOptions(configured, { flags: { config: good, 'batch-rows': '5' } }).batchRows).toBe(5);
  });

  it('reports value errors as SAEGATE_ERR_CLI_USAGE with the usage when the command has no config file', () => {
    const error = thrown(() => parseCommand(cli, ['--input', 'a', '--rate', '0']));
    expect(error.code).toBe('SAEGATE_ERR_CLI_USAGE');
    expect(error.message).toBe(`--rate: expected a number > 0 and ≤ 1, got "0"\n\n${usageText(cli)}`);
    expect(thrown(() => parseCommand(cli, ['--input', 'a', '--device', 'tpu'])).message).toMatch(/^--device: expected one of cpu, cuda, got "tpu"/);
    // An empty variable counts as unset; a set one is read.
    expect(parseCommand(cli, ['--input', 'a'], { TEST_TOKEN: '' }).token).toBeUndefined();
    expect(parseCommand(cli, ['--input', 'a'], { TEST_TOKEN: 't' }).token).toBe('t');
  });

  it('names a missing required option and where it can be given', () => {
    expect(thrown(() => parseCommand(cli, [])).message).toMatch(/^--input: is required\n\nUsage: saegate tool/);
    expect(thrown(() => resolveOptions(configured, {})).message).toBe(`invalid configuration 'input': required; give --input or "input" in the config file`);
  });

  it('refuses unknown flags (on the command line and in code) and unknown or flag-only config-file keys', () => {
    expect(thrown(() => parseCommand(cli, ['--input', 'a', '--batch', '3'])).message).toMatch(/^Unknown option '--batch'/);
    expect(thrown(() => resolveOptions(cli, { flags: { input: 'a', batch: '3' } })).message).toMatch(/^--batch: unknown flag/);
    const typo = writeConfig('typo.json', { input: 'a', batchrows: 3 });
    expect(thrown(() => resolveOptions(configured, { flags: { config: typo } })).message).toBe(
      `invalid configuration '${typo}: batchrows': unknown key; known keys: input, batchRows, rate, device, token, verbose`,
    );
    const flagOnly = writeConfig('flag-only.json', { input: 'a', sae: ['x'] });
    expect(thrown(() => resolveOptions(configured, { flags: { config: flagOnly } })).message).toContain(`'${flagOnly}: sae': unknown key`);
  });

  it('applies cross-option rules after the values are valid, naming the flag', () => {
    expect(thrown(() => parseCommand(cli, ['--input', 'a', '--device', 'cuda', '--batch-rows', '40'])).message).toMatch(/^--batch-rows: at most 32 on cuda/);
    expect(parseCommand(cli, ['--input', 'a', '--device', 'cuda', '--batch-rows', '32']).batchRows).toBe(32);
  });

  it('throws HelpRequested with the generated usage for --help and -h, even beside a bad flag', () => {
    for (const argv of [['--help'], ['-h'], ['--input', 'a', '--nope', '--help']]) {
      const help = (() => {
        try {
          parseCommand(cli, argv);
        } catch (error) {
          return error;
        }
        return undefined;
      })();
      expect(help).toBeInstanceOf(HelpRequested);
      expect((help as HelpRequested).usage).toBe(usageText(cli));
    }
  });

  it('lists every flag in the usage with its placeholder, default and variable', () => {
    const usage = usageText(configured);
    expect(usage).toMatch(/^Usage: saegate tool --input FILE\n\nA test command\.\n\nOptions:\n/);
    expect(usage).toMatch(/--input FILE +file to read \(required\)/);
    expect(usage).toMatch(/--batch-rows N +rows per batch \(default 8\)/);
    expect(usage).toMatch(/--device cpu\|cuda +execution provider \(default cpu\)/);
    expect(usage).toMatch(/--token TOKEN +bearer token \(TEST_TOKEN\)/);
    expect(usage).toMatch(/--verbose +say more \(default off\)/);
    expect(usage).toMatch(/--sae DIR +an SAE \(repeatable\)/);
    expect(usage).toMatch(/--config FILE +JSON config file .*\(TEST_CONFIG\)/);
  });
});
