/**
 * Spawning worker threads from code that runs either compiled (`dist/*.js`) or from source under
 * tsx/vitest (`src/*.ts`). A worker entry is always a sibling of the module that spawns it; from
 * source, the worker first registers tsx's loader (Node 20 cannot run TypeScript itself and does not
 * pass `--import` hooks on to workers), then imports the entry.
 */
import { Worker, type WorkerOptions } from 'node:worker_threads';

/** URL of the sibling module `name` (without extension), matching the caller's own extension. */
export function siblingModule(callerUrl: string, name: string): URL {
  const ext = callerUrl.endsWith('.ts') ? '.ts' : '.js';
  return new URL(`./${name}${ext}`, callerUrl);
}

/** Starts a worker for `entry`, through tsx's loader when the entry is TypeScript. */
export function spawnWorker(entry: URL, options: WorkerOptions = {}): Worker {
  if (!entry.pathname.endsWith('.ts')) return new Worker(entry, options);
  const tsxApi = import.meta.resolve('tsx/esm/api');
  const bootstrap = `import(${JSON.stringify(tsxApi)}).then((m) => { m.register(); return import(${JSON.stringify(entry.href)}); });`;
  return new Worker(bootstrap, { ...options, eval: true });
}
