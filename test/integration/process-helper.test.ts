/**
 * The test helper `withProcess`: the spawned process and everything it started (its process group)
 * are gone after the body, whether the body returned, threw, or outlived its deadline.
 */
import { describe, expect, it, vi } from 'vitest';
import { ProcessDeadline, withProcess, type RunningProcess } from '../helpers/process.js';
import { waitFor } from '../helpers/wait.js';

/** A shell that starts a grandchild `sleep`, prints its pid, and waits. */
const SPEC = { command: 'sh', args: ['-c', 'sleep 600 & echo $!; wait'], label: 'sh with a sleeping grandchild' };

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The grandchild's pid once the shell printed it (an output event, no timer: fake timers may be on). */
function grandchildOf(proc: RunningProcess): Promise<number> {
  return new Promise((resolve) => {
    const check = (): void => {
      const m = /^(\d+)\n/.exec(proc.out());
      if (m) resolve(Number(m[1]));
    };
    proc.child.stdout!.on('data', check);
    check();
  });
}

describe('withProcess', () => {
  it('returns what the body returned and leaves neither the process nor its grandchild running', async () => {
    let pids: number[] = [];
    const result = await withProcess(SPEC, async (proc) => {
      pids = [proc.child.pid!, await grandchildOf(proc)];
      expect(pids.every(alive)).toBe(true);
      return 'body result';
    });
    expect(result).toBe('body result');
    // The leader is reaped by the time withProcess returns; the grandchild by init soon after.
    expect(alive(pids[0])).toBe(false);
    await waitFor('the grandchild to be gone', () => !alive(pids[1]));
  });

  it('rethrows a failed assertion of the body after killing the process group', async () => {
    let pids: number[] = [];
    const outcome = await withProcess(SPEC, async (proc) => {
      pids = [proc.child.pid!, await grandchildOf(proc)];
      throw new Error('assertion failed in the body');
    }).catch((e: unknown) => e);
    expect(outcome).toEqual(new Error('assertion failed in the body'));
    expect(alive(pids[0])).toBe(false);
    await waitFor('the grandchild to be gone', () => !alive(pids[1]));
  });

  it('kills the process group and rejects naming the process when the body outlives its deadline, not before', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    let pids: number[] = [];
    let settled = false;
    let started!: () => void;
    const running = new Promise<void>((resolve) => (started = resolve));
    const outcomePromise = withProcess(
      SPEC,
      async (proc) => {
        pids = [proc.child.pid!, await grandchildOf(proc)];
        started();
        // A body that never finishes by itself: it waits for an exit that only the kill brings.
        await proc.exited;
      },
      { deadlineMs: 300 },
    )
      .catch((e: unknown) => e)
      .finally(() => (settled = true));
    try {
      await running;
      await vi.advanceTimersByTimeAsync(299);
      expect(settled).toBe(false);
      expect(pids.every(alive)).toBe(true);
      await vi.advanceTimersByTimeAsync(1);
    } finally {
      vi.useRealTimers();
    }
    const outcome = await outcomePromise;
    expect(outcome).toBeInstanceOf(ProcessDeadline);
    expect((outcome as Error).message).toContain('sh with a sleeping grandchild: still running after 300 ms');
    expect(alive(pids[0])).toBe(false);
    await waitFor('the grandchild to be gone', () => !alive(pids[1]));
  });

  it('reports the exit code and output of a process that ends by itself', async () => {
    const { code, out, err } = await withProcess({ command: 'sh', args: ['-c', 'echo out; echo err >&2; exit 3'] }, async (proc) => ({ code: await proc.exited, out: proc.out(), err: proc.err() }));
    expect({ code, out, err }).toEqual({ code: 3, out: 'out\n', err: 'err\n' });
  });
});
