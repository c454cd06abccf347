/**
 * Flag parsing shared by the subcommands: node:util parseArgs for syntax, zod for values, so a bad
 * value names the flag and what was expected.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { z } from 'zod';
import { SaegateError } from '../common/errors.js';

export type FlagSpec = NonNullable<ParseArgsConfig['options']>;

/** Parses `argv` against `flags` and validates the values with `schema`. */
export function parseFlags<S extends z.ZodType>(argv: string[], flags: FlagSpec, schema: S, usage: string): z.infer<S> {
  let values: Record<string, unknown>;
  try {
    values = parseArgs({ args: argv, options: { ...flags, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: false }).values;
  } catch (error) {
    throw new SaegateError('SAEGATE_ERR_CLI_USAGE', [`${(error as Error).message}\n\n${usage}`]);
  }
  if (values.help) {
    process.stdout.write(`${usage}\n`);
    process.exit(0);
  }
  const parsed = schema.safeParse(values);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const flag = issue.path.length > 0 ? `--${String(issue.path[0])}` : 'arguments';
    throw new SaegateError('SAEGATE_ERR_CLI_USAGE', [`${flag}: ${issue.message}\n\n${usage}`]);
  }
  return parsed.data;
}

/** A port flag: integer 0–65535 given as a string. */
export const portFlag = z.coerce.number().int().min(0).max(65535);
