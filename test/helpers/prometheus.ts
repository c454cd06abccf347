/**
 * A real Prometheus (Debian's `prometheus` package) for the rule and dashboard tests. Like
 * test/helpers/chromium.ts: suites skip only on a developer machine without it; under CI a missing
 * binary is a broken setup (.ci/run installs the package) and the suite fails.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { isCi } from './chromium.js';

export const prometheusPath = process.env.SAEGATE_PROMETHEUS ?? '/usr/bin/prometheus';
export const promtoolPath = process.env.SAEGATE_PROMTOOL ?? '/usr/bin/promtool';

function executable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

/** Suites skip when this is true: no prometheus/promtool, and not under CI. */
export const skipPrometheusTests = !(executable(prometheusPath) && executable(promtoolPath)) && !isCi;

/** A suite title carrying the skip reason when skipped. */
export function needsPrometheus(title: string): string {
  return skipPrometheusTests ? `${title} [skipped: no ${prometheusPath} or ${promtoolPath}; install Debian's prometheus or set SAEGATE_PROMETHEUS/SAEGATE_PROMTOOL]` : title;
}

/** Runs promtool with `args`; returns its exit status and output. */
export function promtool(...args: string[]): { status: number | null; output: string } {
  if (!executable(promtoolPath)) throw new Error(`promtool is required${isCi ? ' under CI' : ''} but was not found at ${promtoolPath}`);
  const result = spawnSync(promtoolPath, args, { encoding: 'utf8' });
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}


export interface RunningPrometheus {
  readonly url: string;
  /** Everything it printed, for failure messages. */
  log(): string;
  /** Kills it (SIGKILL after 5 s) and waits for the exit. Safe to call twice. */
  stop(): Promise<void>;
}

/** Starts Prometheus on `port` with `configFile` and a storage dir; it is killed by `stop()`. */
export function startPrometheus(options: { configFile: string; storageDir: string; port: number }): RunningPrometheus {
  if (!executable(prometheusPath)) throw new Error(`prometheus is required${isCi ? ' under CI' : ''} but was not found at ${prometheusPath} (.ci/run installs Debian's prometheus)`);
  const child: ChildProcess = spawn(
    prometheusPath,
    [`--config.file=${options.configFile}`, `--storage.tsdb.path=${options.storageDir}`, `--web.listen-address=127.0.0.1:${options.port}`, '--log.level=warn'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    url: `http://127.0.0.1:${options.port}`,
    log: () => output,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
