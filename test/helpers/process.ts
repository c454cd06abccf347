/**
 * Child processes in tests, killed on every path. `withProcess` spawns a command in a process
 * group of its own, hands it to the test's body, and kills the whole group when the body returns,
 * when it throws (a failed assertion), and when the body's deadline passes. The deadline defaults
 * to less than vitest's test timeout, so when a test hangs, this kill (and its message naming the
 * process) comes before vitest gives up on the test and moves on with the process still running;
 * a test with a longer timeout passes a matching `deadlineMs`. A process still alive when the test
 * worker exits is killed then. (Not vitest's global `onTestFinished`: in `it.concurrent` tests it
 * can attach to a sibling test and kill this one's process when that one ends.)
 *
 * The group matters because `saegate …` runs under tsx, which is one process in front of node:
 * killing tsx alone would leave the server it started holding its port.
 */
import { spawn, type ChildProcess } from 'node:child_process';

export interface ProcessSpec {
  /** The executable. */
  command: string;
  args: readonly string[];
  /** Added to this process's environment. */
  env?: Record<string, string>;
  /** Names the process in timeout messages. Default: the command line. */
  label?: string;
}

export interface WithProcessOptions {
  /**
   * How long the body may run before the process group is killed and `withProcess` rejects naming
   * the process. Default 50 000 ms (under vitest's 60 s test timeout, so this message wins).
   */
  deadlineMs?: number;
}

export interface RunningProcess {
  child: ChildProcess;
  /** What `withProcess` calls this process in its messages. */
  label: string;
  /** Resolves with the exit code (null when a signal ended it). */
  exited: Promise<number | null>;
  /** True until the process has exited. */
  running(): boolean;
  /** Everything it wrote to stdout so far. */
  out(): string;
  /** Everything it wrote to stderr so far. */
  err(): string;
}

/** The error `withProcess` rejects with when the body outlives its deadline. */
export class ProcessDeadline extends Error {
  constructor(label: string, deadlineMs: number, stderr: string) {
    super(`${label}: still running after ${deadlineMs} ms; killed its process group${stderr ? `\nstderr:\n${stderr.slice(-2000)}` : ''}`);
    this.name = 'ProcessDeadline';
  }
}

function start(spec: ProcessSpec): RunningProcess {
  // detached: the child leads a new process group, so -pid reaches everything it starts.
  const child = spawn(spec.command, [...spec.args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...spec.env }, detached: true });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  let done = false;
  const exited = new Promise<number | null>((resolve) => {
    child.on('exit', (code) => {
      done = true;
      resolve(code);
    });
    // A command that cannot start (ENOENT) emits 'error' and no 'exit'.
    child.on('error', () => {
      done = true;
      resolve(null);
    });
  });
  return { child, label: spec.label ?? [spec.command, ...spec.args].join(' '), exited, running: () => !done, out: () => stdout, err: () => stderr };
}

/** SIGKILLs the process group (members the leader left behind too), then waits for the leader. */
async function killGroup(proc: RunningProcess): Promise<void> {
  const pid = proc.child.pid;
  if (pid === undefined) return;
  liveGroups.delete(pid);
  try {
    process.kill(-pid, 'SIGKILL');
  } catch (error) {
    // ESRCH: the group is already empty.
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
  }
  await proc.exited;
}

/** Process groups started and not yet killed, for the last-resort kill when the worker exits. */
const liveGroups = new Set<number>();
process.on('exit', () => {
  for (const pid of liveGroups) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
});

/**
 * Spawns `spec`, runs `body` with it, and kills the process group whatever happens: body resolved,
 * body threw, or deadline passed. Returns what the body returned.
 */
export async function withProcess<T>(spec: ProcessSpec, body: (proc: RunningProcess) => Promise<T>, options: WithProcessOptions = {}): Promise<T> {
  const deadlineMs = options.deadlineMs ?? 50_000;
  const proc = start(spec);
  if (proc.child.pid !== undefined) liveGroups.add(proc.child.pid);
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new ProcessDeadline(proc.label, deadlineMs, proc.err())), deadlineMs);
  });
  try {
    return await Promise.race([body(proc), deadline]);
  } finally {
    clearTimeout(timer);
    await killGroup(proc);
  }
}
