/** Running the `saegate` command as a real process from source (through tsx), for CLI tests. */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const main = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
const tsx = fileURLToPath(new URL('../../node_modules/.bin/tsx', import.meta.url));

export interface CliProcess {
  child: ChildProcess;
  /** Resolves with the exit code. */
  exited: Promise<number | null>;
  out(): string;
  err(): string;
}

/** Starts `saegate ARGS…` with extra environment variables. */
export function runCli(args: string[], env: Record<string, string> = {}): CliProcess {
  const child = spawn(tsx, [main, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, exited, out: () => stdout, err: () => stderr };
}

/** Waits until the process prints its OpenAI API URL; rejects with its stderr if it exits first. */
export function waitForApiUrl(proc: CliProcess): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const timer = setInterval(() => {
      const m = /OpenAI API(?: \(through saegate\))?\s+(http:\/\/\S+)\/v1/.exec(proc.out());
      if (m) {
        clearInterval(timer);
        resolve(m[1]);
      }
    }, 50);
    void proc.exited.then((code) => {
      clearInterval(timer);
      reject(new Error(`exited ${code}: ${proc.err()}`));
    });
  });
}
