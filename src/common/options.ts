/**
 * One options system for every `saegate` command. A command declares a table of options (name,
 * value type, default, environment variable, one help line with units); from that one table come
 * the command-line flags, the environment variables, the JSON config-file keys, the defaults, the
 * `--help` text and the option tables in the README and docs (a test compares those with the
 * tables), so they cannot drift apart.
 *
 * Precedence: flags > environment > config file > defaults (options set in code, `overrides`,
 * rank above flags). Every source is validated, not only the one that wins: a bad value in the
 * config file is refused even when a flag overrides it, so a file that would break the next start
 * without that flag fails now. Every error names where the value came from (`--port`,
 * `SAEGATE_PORT`, `/etc/saegate.json: port`) and what was expected. Unknown flags and unknown
 * config-file keys are refused.
 *
 * Naming rule: option `idleTimeoutMs` is the flag `--idle-timeout-ms`, the config-file key
 * `"idleTimeoutMs"` and, where the option has one, the variable named in its `env` field
 * (`deriveEnv` gives every option of a table `SAEGATE_IDLE_TIMEOUT_MS`).
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { SaegateError } from './errors.js';

/** What values an option takes: how to parse and check them, and how to name them in text. */
export interface OptionType<T> {
  /** Parses one value: a string from a flag or variable, or a JSON value from a file or code. */
  readonly schema: z.ZodType<T>;
  /** What a good value looks like, for errors: "an integer from 0 to 65535". */
  readonly expected: string;
  /** Placeholder in usage (`N`, `FILE`); absent for a switch (a flag without a value). */
  readonly arg?: string;
}

/** One row of an option table. */
export interface OptionSpec {
  readonly type: OptionType<unknown>;
  /** One line for --help and the docs, with units. */
  readonly help: string;
  /** Value when no source gives one. Absent: the option is unset (undefined) unless `required`. */
  readonly default?: unknown;
  /** No default: some source must give it. */
  readonly required?: true;
  /** How the default reads in help and docs when it is not a literal value ("one per core"). */
  readonly defaultText?: string;
  /** Environment variable read for this option. Default none. */
  readonly env?: string;
  /** Repeatable flag; the value is an array (default []). Flags only. */
  readonly multiple?: true;
  /** Taken from the next positional argument instead of a flag (`sae info DIR`). */
  readonly positional?: true;
  /** Heading this option is listed under in --help. */
  readonly group?: string;
  /** Refused as a config-file key (flag and environment only). Default false. */
  readonly noConfigFile?: true;
}

export type OptionTable = Readonly<Record<string, OptionSpec>>;

type TypeOf<S> = S extends { type: OptionType<infer T> } ? T : never;

/** The resolved value of one option: required or defaulted ones are always set; `null` defaults stay possible. */
export type OptionValue<S> = S extends { multiple: true }
  ? TypeOf<S>[]
  : S extends { required: true }
    ? TypeOf<S>
    : S extends { default: infer D }
      ? TypeOf<S> | (D extends null ? null : never)
      : TypeOf<S> | undefined;

export type OptionValues<O extends OptionTable> = { -readonly [K in keyof O]: OptionValue<O[K]> };

/** A cross-option rule's complaint: the option it names, and why. */
export interface OptionProblem<O extends OptionTable> {
  option: keyof O & string;
  message: string;
}

/** A command: its option table and what --help says around it. */
export interface CommandSpec<O extends OptionTable> {
  /** `model serve`, as typed after `saegate`. */
  readonly name: string;
  /** After "Usage: ": `saegate model serve --model FILE [options]`. */
  readonly synopsis: string;
  /** Paragraphs printed between the synopsis and the options. */
  readonly description: string;
  readonly options: O;
  /**
   * A JSON config file of options by name: named by `--config FILE` or this variable. Value errors
   * are then configuration errors (SAEGATE_ERR_CONFIG, exit 1) from any source; without a config
   * file they are usage errors (SAEGATE_ERR_CLI_USAGE, exit 2, the usage text follows).
   */
  readonly configFile?: { readonly env: string };
  /** Rules between options (exclusive flags); checked after every value is valid. */
  readonly check?: (values: OptionValues<O>) => OptionProblem<O> | undefined;
  /** Printed after the options in --help. */
  readonly epilogue?: string;
}

/** Thrown by `parseCommandLine` for `--help`/`-h`; the CLI prints `usage` and exits 0. */
export class HelpRequested extends Error {
  constructor(readonly usage: string) {
    super('help requested');
    this.name = 'HelpRequested';
  }
}

// ----------------------------------------------------------------------------------------------
// Value types

const trueStrings = new Set(['true', '1', 'yes', 'on']);
const falseStrings = new Set(['false', '0', 'no', 'off']);

/** A decimal integer, optionally in exponent form (`2e6`), with surrounding spaces allowed. */
const INTEGER_TEXT = /^\s*[-+]?\d+(e\+?\d+)?\s*$/i;
/** A decimal number (`0.1`, `.5`, `4e-3`). */
const NUMBER_TEXT = /^\s*[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?\s*$/i;

/** Integers from `min` to `max` (inclusive), given as numbers or decimal strings. */
export function integer(min: number, max: number = Number.MAX_SAFE_INTEGER, arg = 'N'): OptionType<number> {
  const number = z.number().int().min(min).max(max);
  return {
    schema: z.union([number, z.string().regex(INTEGER_TEXT).transform(Number).pipe(number)]),
    expected: max === Number.MAX_SAFE_INTEGER ? `an integer ≥ ${min}` : `an integer from ${min} to ${max}`,
    arg,
  };
}

/** Numbers within bounds (`min`/`max` inclusive, `above` exclusive). */
export function decimal(bounds: { min?: number; max?: number; above?: number }, arg = 'X'): OptionType<number> {
  let number = z.number().finite();
  const words: string[] = [];
  if (bounds.above !== undefined) {
    number = number.gt(bounds.above);
    words.push(`> ${bounds.above}`);
  }
  if (bounds.min !== undefined) {
    number = number.min(bounds.min);
    words.push(`≥ ${bounds.min}`);
  }
  if (bounds.max !== undefined) {
    number = number.max(bounds.max);
    words.push(`≤ ${bounds.max}`);
  }
  return {
    schema: z.union([number, z.string().regex(NUMBER_TEXT).transform(Number).pipe(number)]),
    expected: words.length === 0 ? 'a number' : `a number ${words.join(' and ')}`,
    arg,
  };
}

/** A switch: `--log` on the command line; true/false, 1/0, yes/no, on/off in variables and files. */
export const flag: OptionType<boolean> = {
  schema: z.union([
    z.boolean(),
    z.string().transform((s, ctx) => {
      const v = s.trim().toLowerCase();
      if (trueStrings.has(v)) return true;
      if (falseStrings.has(v)) return false;
      ctx.addIssue({ code: 'custom', message: 'not a boolean' });
      return z.NEVER;
    }),
  ]),
  expected: 'true or false',
};

/** Text (a path, a name); non-empty unless `allowEmpty`; matching `pattern` (described by `expected`) when given. */
export function text(arg: string, options: { allowEmpty?: boolean; pattern?: RegExp; expected?: string } = {}): OptionType<string> {
  let schema = options.allowEmpty ? z.string() : z.string().min(1);
  if (options.pattern !== undefined) schema = schema.regex(options.pattern);
  return { schema, expected: options.expected ?? (options.allowEmpty ? 'a string' : 'a non-empty string'), arg };
}

/** One of a few words (`cpu|cuda`). */
export function oneOf<const V extends readonly [string, ...string[]]>(values: V): OptionType<V[number]> {
  return { schema: z.enum(values), expected: `one of ${values.join(', ')}`, arg: values.join('|') };
}

/** Any other type: a zod schema over strings and JSON values, and its description. */
export function custom<T>(schema: z.ZodType<T>, expected: string, arg = 'VALUE'): OptionType<T> {
  return { schema, expected, arg };
}

// ----------------------------------------------------------------------------------------------
// Names

/** `idleTimeoutMs` -> `idle-timeout-ms`. */
export function flagName(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** `idleTimeoutMs` -> `SAEGATE_IDLE_TIMEOUT_MS`. */
export function envName(key: string): string {
  return `SAEGATE_${flagName(key).replaceAll('-', '_').toUpperCase()}`;
}

/** The table with every option's `env` set to `envName(key)`. */
export function deriveEnv<O extends OptionTable>(table: O): { [K in keyof O]: O[K] & { env: string } } {
  return Object.fromEntries(Object.entries(table).map(([key, spec]) => [key, { ...spec, env: envName(key) }])) as { [K in keyof O]: O[K] & { env: string } };
}

/** The flag name that names the config file. */
export const CONFIG_FLAG = 'config';

// ----------------------------------------------------------------------------------------------
// Text: usage and docs

/** How an option's default reads in help and docs: `(required)`, `none`, `off`, or the value. */
export function defaultLabel(spec: OptionSpec): string {
  if (spec.required) return '(required)';
  if (spec.defaultText !== undefined) return spec.defaultText;
  if (spec.multiple) return 'none';
  if (spec.default === undefined || spec.default === null) return 'none';
  if (spec.default === false) return 'off';
  if (spec.default === '') return "''";
  return String(spec.default);
}

/** `--max-batch N` (or `--log` for a switch). */
export function flagWithArg(key: string, spec: OptionSpec): string {
  return spec.type.arg === undefined ? `--${flagName(key)}` : `--${flagName(key)} ${spec.type.arg}`;
}

/** Wraps `text` to `width` columns, continuation lines indented by `indent`. */
function wrap(text: string, indent: number, width: number): string {
  const words = text.split(' ');
  const lines: string[] = [];
  let line = '';
  for (const word of words) {
    if (line !== '' && indent + line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line === '' ? word : `${line} ${word}`;
    }
  }
  lines.push(line);
  return lines.join(`\n${' '.repeat(indent)}`);
}

/** The `--help` text of a command, generated from its table. */
export function usageText<O extends OptionTable>(command: CommandSpec<O>): string {
  const rows: { group: string; flag: string; help: string }[] = [];
  for (const [key, spec] of Object.entries(command.options)) {
    if (spec.positional) continue;
    const unset = spec.default === undefined && spec.defaultText === undefined;
    const notes = spec.required ? ['required'] : spec.multiple ? ['repeatable'] : unset ? [] : [`default ${defaultLabel(spec)}`];
    if (spec.env !== undefined) notes.push(spec.env);
    rows.push({ group: spec.group ?? 'Options', flag: `  ${flagWithArg(key, spec)}`, help: notes.length === 0 ? spec.help : `${spec.help} (${notes.join('; ')})` });
  }
  if (command.configFile) {
    rows.push({ group: 'Options', flag: `  --${CONFIG_FLAG} FILE`, help: `JSON config file with any of the options above, by camelCase name (${command.configFile.env})` });
  }
  rows.push({ group: 'Options', flag: '  -h, --help', help: 'print this help' });
  const column = Math.min(34, Math.max(...rows.map((r) => r.flag.length)) + 2);
  const groups = [...new Set(rows.map((r) => r.group))];
  const sections = groups.map((group) => {
    const lines = rows
      .filter((r) => r.group === group)
      .map((r) => (r.flag.length + 2 > column ? `${r.flag}\n${' '.repeat(column)}` : r.flag.padEnd(column)) + wrap(r.help, column, 100));
    return `${group}:\n${lines.join('\n')}`;
  });
  return [`Usage: ${command.synopsis}`, command.description, ...sections, ...(command.epilogue ? [command.epilogue] : [])].join('\n\n');
}

// ----------------------------------------------------------------------------------------------
// Resolving

function describeValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value);
  return JSON.stringify(value) ?? String(value);
}

/** What `resolveOptions` reads. */
export interface OptionSources<O extends OptionTable> {
  /**
   * Command-line flags as `parseCommandLine` (node:util parseArgs) returns them: kebab-case names;
   * `config` names the config file. Unknown names are refused.
   */
  flags?: Readonly<Record<string, string | boolean | string[] | undefined>>;
  /** Positional arguments, for options marked `positional`, in table order. */
  positionals?: readonly string[];
  /** Environment; default none (pass `process.env` explicitly). */
  env?: Readonly<Record<string, string | undefined>>;
  /** Options set in code, by name; they rank above flags. */
  overrides?: Partial<Record<keyof O, unknown>>;
}

/** Raises the command's error for a value from `source`. */
function fail<O extends OptionTable>(command: CommandSpec<O>, source: string, detail: string): never {
  if (command.configFile) throw new SaegateError('SAEGATE_ERR_CONFIG', [source, detail]);
  throw new SaegateError('SAEGATE_ERR_CLI_USAGE', [`${source}: ${detail}\n\n${usageText(command)}`]);
}

/** Reads a JSON config file: an object whose keys are the table's option names. */
export function readConfigFile<O extends OptionTable>(command: CommandSpec<O>, file: string): Record<string, unknown> {
  let content: string;
  try {
    content = fs.readFileSync(file, 'utf8');
  } catch (error) {
    return fail(command, file, `cannot read the config file: ${(error as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(content);
  } catch (error) {
    return fail(command, file, `expected a JSON object: ${(error as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return fail(command, file, `expected a JSON object, got ${describeValue(parsed)}`);
  const known = Object.entries(command.options).filter(([, spec]) => !spec.noConfigFile && !spec.positional).map(([key]) => key);
  for (const key of Object.keys(parsed)) {
    if (!known.includes(key)) fail(command, `${file}: ${key}`, `unknown key; known keys: ${known.join(', ')}`);
  }
  return parsed as Record<string, unknown>;
}

/** Validates one value of `key` from `source`. */
function validate<O extends OptionTable>(command: CommandSpec<O>, key: string, value: unknown, source: string): unknown {
  const spec = command.options[key];
  // An option whose default is null (a token: none) takes null from a file or code as "none".
  if (value === null && spec.default === null) return null;
  const one = (item: unknown): unknown => {
    const parsed = spec.type.schema.safeParse(item);
    if (!parsed.success) fail(command, source, `expected ${spec.type.expected}, got ${describeValue(item)}`);
    return parsed.data;
  };
  if (spec.multiple) return (Array.isArray(value) ? (value as unknown[]) : [value]).map(one);
  return one(value);
}

interface Candidate {
  value: unknown;
  source: string;
}

/**
 * Merges overrides > flags > environment > config file > defaults into validated values. The
 * config file (for commands that have one) is `flags.config`, else the command's variable. Every
 * value of every source is validated; the first bad one, the first missing required option or the
 * first broken cross-option rule throws, naming its source.
 */
export function resolveOptions<O extends OptionTable>(command: CommandSpec<O>, sources: OptionSources<O>): OptionValues<O> {
  const flags = sources.flags ?? {};
  const env = sources.env ?? {};
  const keys = Object.keys(command.options);
  const byFlag = new Map(keys.filter((key) => !command.options[key].positional).map((key) => [flagName(key), key]));

  // Highest precedence first; each layer maps option name -> candidates (a repeatable flag has one).
  const layers: Map<string, Candidate>[] = [];

  const code = new Map<string, Candidate>();
  for (const [key, value] of Object.entries(sources.overrides ?? {})) {
    if (!Object.hasOwn(command.options, key)) fail(command, key, `unknown option; known options: ${keys.join(', ')}`);
    if (value !== undefined) code.set(key, { value, source: key });
  }
  layers.push(code);

  const fromFlags = new Map<string, Candidate>();
  for (const [name, value] of Object.entries(flags)) {
    if (value === undefined || (name === CONFIG_FLAG && command.configFile)) continue;
    const key = byFlag.get(name);
    if (key === undefined) fail(command, `--${name}`, 'unknown flag');
    fromFlags.set(key, { value, source: `--${name}` });
  }
  const positionalKeys = keys.filter((key) => command.options[key].positional);
  const positionals = sources.positionals ?? [];
  if (positionals.length > positionalKeys.length) fail(command, positionals[positionalKeys.length], 'unexpected argument');
  positionals.forEach((value, i) => fromFlags.set(positionalKeys[i], { value, source: command.options[positionalKeys[i]].type.arg ?? positionalKeys[i] }));
  layers.push(fromFlags);

  const fromEnv = new Map<string, Candidate>();
  for (const key of keys) {
    const name = command.options[key].env;
    const value = name === undefined ? undefined : env[name];
    // An empty variable counts as unset, the way shells and compose files usually mean it.
    if (name !== undefined && value !== undefined && value !== '') fromEnv.set(key, { value, source: name });
  }
  layers.push(fromEnv);

  if (command.configFile) {
    const flagFile = flags[CONFIG_FLAG];
    const file = typeof flagFile === 'string' ? flagFile : env[command.configFile.env] || undefined;
    if (file !== undefined) {
      const fromFile = new Map<string, Candidate>();
      for (const [key, value] of Object.entries(readConfigFile(command, file))) {
        if (value !== undefined) fromFile.set(key, { value, source: `${file}: ${key}` });
      }
      layers.push(fromFile);
    }
  }

  const out: Record<string, unknown> = {};
  for (const key of keys) {
    const spec = command.options[key];
    let winner: { value: unknown } | undefined;
    // Every source is checked, not only the winner: an overridden bad value is still an error.
    for (const layer of layers) {
      const candidate = layer.get(key);
      if (candidate === undefined) continue;
      const value = validate(command, key, candidate.value, candidate.source);
      winner ??= { value };
    }
    if (winner !== undefined) {
      out[key] = winner.value;
      continue;
    }
    if (spec.required) fail(command, spec.positional ? (spec.type.arg ?? key) : requiredSource(command, key), requiredDetail(command, key));
    out[key] = spec.multiple ? [] : spec.default;
  }
  const values = out as OptionValues<O>;
  const problem = command.check?.(values);
  if (problem !== undefined) fail(command, `--${flagName(problem.option)}`, problem.message);
  return values;
}

function requiredSource<O extends OptionTable>(command: CommandSpec<O>, key: string): string {
  return command.configFile ? key : `--${flagName(key)}`;
}

/** Where a missing required option can be given. */
function requiredDetail<O extends OptionTable>(command: CommandSpec<O>, key: string): string {
  const spec = command.options[key];
  if (!command.configFile && spec.env === undefined) return 'is required';
  const ways = [`--${flagName(key)}`, ...(spec.env === undefined ? [] : [spec.env])];
  if (command.configFile && !spec.noConfigFile) ways.push(`"${key}" in the config file`);
  return `required; give ${ways.slice(0, -1).join(', ')} or ${ways.at(-1)}`;
}

/**
 * Splits argv into flags and positionals by the table (node:util parseArgs, strict): an unknown
 * flag or a missing value is a usage error; `--help`/`-h` throws HelpRequested with the usage.
 */
export function parseCommandLine<O extends OptionTable>(
  command: CommandSpec<O>,
  argv: readonly string[],
): { flags: Record<string, string | boolean | string[] | undefined>; positionals: string[] } {
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }> = { help: { type: 'boolean', short: 'h' } };
  for (const [key, spec] of Object.entries(command.options)) {
    if (spec.positional) continue;
    options[flagName(key)] = { type: spec.type.arg === undefined ? 'boolean' : 'string', ...(spec.multiple && { multiple: true }) };
  }
  if (command.configFile) options[CONFIG_FLAG] = { type: 'string' };
  const allowPositionals = Object.values(command.options).some((spec) => spec.positional);
  let parsed: { values: Record<string, string | boolean | (string | boolean)[] | undefined>; positionals: string[] };
  try {
    parsed = parseArgs({ args: [...argv], options, strict: true, allowPositionals });
  } catch (error) {
    if (argv.includes('--help') || argv.includes('-h')) throw new HelpRequested(usageText(command));
    throw new SaegateError('SAEGATE_ERR_CLI_USAGE', [`${(error as Error).message}\n\n${usageText(command)}`]);
  }
  const { help, ...values } = parsed.values;
  if (help === true) throw new HelpRequested(usageText(command));
  return { flags: values as Record<string, string | boolean | string[] | undefined>, positionals: parsed.positionals };
}

/** `parseCommandLine` then `resolveOptions`: a command's options from argv and the environment. */
export function parseCommand<O extends OptionTable>(command: CommandSpec<O>, argv: readonly string[], env: Readonly<Record<string, string | undefined>> = {}): OptionValues<O> {
  const { flags, positionals } = parseCommandLine(command, argv);
  return resolveOptions(command, { flags, positionals, env });
}

/** Markdown rows `| \`--flag\` | default | help |` of a table, for writing the docs' tables. */
export function markdownRows<O extends OptionTable>(command: CommandSpec<O>): string {
  return Object.entries(command.options)
    .filter(([, spec]) => !spec.positional)
    .map(([key, spec]) => {
      const label = defaultLabel(spec);
      const shown = spec.required || spec.defaultText !== undefined || label === 'none' || label === 'off' ? label : `\`${label}\``;
      return `| \`--${flagName(key)}\` | ${shown} | ${spec.help} |`;
    })
    .join('\n');
}
