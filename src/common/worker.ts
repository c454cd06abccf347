/**
 * Spawning worker threads from code that runs either compiled (`dist/*.js`) or from source under
 * tsx/vitest (`src/*.ts`). A worker entry is always a sibling of the module that spawns it; from
 * source it is loaded through tsx's loader, since Node 20 cannot run TypeScript itself.
 */
import { Worker, type WorkerOptions } from 'node:worker_threads';

/** URL of the sibling module `name` (without extension), matching the caller's own extension. */
export function siblingModule(callerUrl: string, name: string): URL {
  const ext = callerUrl.endsWith('.ts') ? '.ts' : '.js';
  return new URL(`./${name}${ext}`, callerUrl);
}

/** Starts a worker for `entry`, adding tsx's loader when the entry is TypeScript. */
export function spawnWorker(entry: URL, options: WorkerOptions = {}): Worker {
  const execArgv = entry.pathname.endsWith('.ts') ? ['--import', 'tsx', ...(options.execArgv ?? [])] : options.execArgv;
  return new Worker(entry, { ...options, execArgv });
}
