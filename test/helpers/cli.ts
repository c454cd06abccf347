/** Running the `saegate` command as a real process from source (through tsx), for CLI tests. */
import { fileURLToPath } from 'node:url';
import { withProcess, type RunningProcess, type WithProcessOptions } from './process.js';
import { waitFor } from './wait.js';

const main = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
const tsx = fileURLToPath(new URL('../../node_modules/.bin/tsx', import.meta.url));

export type CliProcess = RunningProcess;

export interface CliOptions extends WithProcessOptions {
  /** Added to the environment. */
  env?: Record<string, string>;
}

/**
 * Runs `saegate ARGS…` for the length of `body` (see `withProcess`: its process group is killed
 * on every path) and returns what the body returned.
 */
export function withCli<T>(args: string[], body: (proc: CliProcess) => Promise<T>, options: CliOptions = {}): Promise<T> {
  return withProcess({ command: tsx, args: [main, ...args], env: options.env, label: `saegate ${args.join(' ')}` }, body, options);
}

/** Runs `saegate ARGS…` to its exit; the process must exit by itself before the deadline. */
export function runCliToExit(args: string[], options: CliOptions = {}): Promise<{ code: number | null; out: string; err: string }> {
  return withCli(args, async (proc) => ({ code: await proc.exited, out: proc.out(), err: proc.err() }), options);
}

/** Waits until the process prints its OpenAI API URL; rejects with its stderr if it exits first. */
export async function waitForApiUrl(proc: CliProcess, deadlineMs = 50_000): Promise<string> {
  const pattern = /OpenAI API(?: \(through saegate\))?\s+(http:\/\/\S+)\/v1/;
  await waitFor(`the OpenAI API URL on the stdout of ${proc.label}`, () => pattern.test(proc.out()) || !proc.running(), { deadlineMs, intervalMs: 20, observed: () => proc.err().slice(-500) });
  const m = pattern.exec(proc.out());
  if (!m) throw new Error(`${proc.label} exited ${await proc.exited} before printing its API URL: ${proc.err()}`);
  return m[1];
}
