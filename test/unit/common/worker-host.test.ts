import { afterEach, describe, expect, it } from 'vitest';
import { isSaegateError, type SaegateError } from '../../../src/common/errors.js';
import { WorkerHost, type RestartPolicy } from '../../../src/common/worker-host.js';
import type { EchoEvent, EchoInit, EchoProtocol } from '../../helpers/workers/echo-worker.js';

const entry = new URL('../../helpers/workers/echo-worker.ts', import.meta.url);

/** The settled value of `promise`: what it resolved with, or the error it rejected with. */
function settled<T>(promise: Promise<T>): Promise<{ value: T } | { error: unknown }> {
  return promise.then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );
}

describe('WorkerHost', () => {
  const hosts: WorkerHost<EchoProtocol>[] = [];
  afterEach(async () => {
    await Promise.all(hosts.splice(0).map((host) => host.close()));
  });

  async function start(
    options: { init?: EchoInit; restart?: RestartPolicy; onEvent?: (event: EchoEvent) => void; onRestart?: (e: SaegateError) => void; onExit?: (e: SaegateError) => void } = {},
  ): Promise<WorkerHost<EchoProtocol>> {
    const host = await WorkerHost.start<EchoProtocol>({
      entry,
      name: 'echo worker',
      init: () => ({ init: options.init ?? {} }),
      restart: options.restart,
      onEvent: options.onEvent,
      onRestart: options.onRestart,
      onExit: options.onExit,
    });
    hosts.push(host);
    return host;
  }

  it('resolves start after the handshake and answers a request with its transferred buffer processed and handed back', async () => {
    const host = await start();
    const values = Float32Array.from([1, -2.5, 3]);
    const answer = host.request({ type: 'double', values }, [values.buffer]);
    // Transferred, not copied: the buffer left this thread with the request.
    expect(values.length).toBe(0);
    const response = await answer;
    expect(response.tag).toBe('double');
    expect(Array.from(response.values ?? [])).toEqual([2, -5, 6]);
    expect(host.inFlight).toBe(0);
  });

  it.each([
    ['a SaegateError keeps its code and message', 'SAEGATE_ERR_CONFIG' as const, 'SAEGATE_ERR_CONFIG', "invalid configuration 'echo': refused by the test"],
    ['any other error becomes SAEGATE_ERR_RUNTIME with its message', 'plain' as const, 'SAEGATE_ERR_RUNTIME', 'plain init failure'],
  ])('rejects start with the worker init error: %s', async (_name, fail, code, message) => {
    const outcome = await settled(start({ init: { fail } }));
    expect('error' in outcome).toBe(true);
    const error = (outcome as { error: unknown }).error;
    expect(isSaegateError(error)).toBe(true);
    expect((error as SaegateError).code).toBe(code);
    expect((error as SaegateError).message).toBe(message);
  });

  it('matches answers to requests by id when the worker answers out of order, and rejects only the request that failed', async () => {
    const host = await start();
    const first = host.request({ type: 'hold', key: 'first' });
    const second = host.request({ type: 'hold', key: 'second' });
    const failing = settled(host.request({ type: 'fail', message: 'not this one' }));
    const failure = await failing;
    expect(isSaegateError((failure as { error: unknown }).error, 'SAEGATE_ERR_BAD_REQUEST')).toBe(true);
    expect((failure as { error: Error }).error.message).toBe('not this one');
    expect(host.inFlight).toBe(2);
    host.notify({ type: 'release', key: 'second' });
    expect((await second).tag).toBe('second');
    host.notify({ type: 'release', key: 'first' });
    expect((await first).tag).toBe('first');
    expect(host.inFlight).toBe(0);
  });

  it('delivers worker events to onEvent in order', async () => {
    const events: EchoEvent[] = [];
    const host = await start({ onEvent: (event) => events.push(event) });
    host.notify({ type: 'ping', value: 1 });
    host.notify({ type: 'ping', value: 2 });
    // A request answered after both notices were handled: their events were posted before it.
    await host.request({ type: 'double', values: new Float32Array(1) });
    expect(events).toEqual([
      { type: 'pong', value: 1 },
      { type: 'pong', value: 2 },
    ]);
  });

  it("rejects every request in flight with SAEGATE_ERR_WORKER_EXITED when the worker exits, and under restart 'never' every later one too", async () => {
    const exits: SaegateError[] = [];
    const host = await start({ onExit: (e) => exits.push(e) });
    const held = [settled(host.request({ type: 'hold', key: 'a' })), settled(host.request({ type: 'hold', key: 'b' }))];
    const exiting = settled(host.request({ type: 'exit', code: 3 }));
    const outcomes = await Promise.all([...held, exiting]);
    for (const outcome of outcomes) {
      const error = (outcome as { error: unknown }).error;
      expect(isSaegateError(error, 'SAEGATE_ERR_WORKER_EXITED')).toBe(true);
      expect((error as Error).message).toBe('worker thread exited: echo worker: exit code 3');
    }
    expect(exits).toHaveLength(1);
    expect(host.exitError).toBe(exits[0]);
    const later = await settled(host.request({ type: 'double', values: new Float32Array(1) }));
    expect((later as { error: unknown }).error).toBe(exits[0]);
    expect(host.restarts).toBe(0);
  });

  it("under restart 'always' replaces a worker that terminate() ended, counts the restart and serves the next request on a new thread", async () => {
    const restarts: SaegateError[] = [];
    const host = await start({ restart: 'always', onRestart: (e) => restarts.push(e) });
    const before = await host.request({ type: 'double', values: new Float32Array(1) });
    const held = settled(host.request({ type: 'hold', key: 'lost' }));
    const terminated = host.terminate();
    // Posted after terminate(): the dying thread takes it along, as an unexpected exit would.
    const late = settled(host.request({ type: 'double', values: new Float32Array(1) }));
    for (const outcome of [await held, await late]) {
      expect(isSaegateError((outcome as { error: unknown }).error, 'SAEGATE_ERR_WORKER_EXITED')).toBe(true);
    }
    await terminated;
    expect(host.restarts).toBe(1);
    expect(restarts).toHaveLength(1);
    expect(host.exitError).toBeNull();
    const after = await host.request({ type: 'double', values: Float32Array.from([4]) });
    expect(Array.from(after.values ?? [])).toEqual([8]);
    expect(after.threadId).not.toBe(before.threadId);
  });

  it("under restart 'always' also replaces a worker that exits by itself, and requests sent while the replacement starts wait for its handshake", async () => {
    const host = await start({ restart: 'always' });
    const exited = await settled(host.request({ type: 'exit', code: 1 }));
    expect(isSaegateError((exited as { error: unknown }).error, 'SAEGATE_ERR_WORKER_EXITED')).toBe(true);
    expect(host.restarts).toBe(1);
    // The replacement was spawned synchronously on the exit; this goes to it before its `ready`.
    const response = await host.request({ type: 'double', values: Float32Array.from([1.5]) });
    expect(Array.from(response.values ?? [])).toEqual([3]);
  });

  it('close() rejects requests in flight with SAEGATE_ERR_WORKER_EXITED, restarts nothing and refuses later requests', async () => {
    const host = await start({ restart: 'always' });
    const held = settled(host.request({ type: 'hold', key: 'x' }));
    await host.close();
    const error = ((await held) as { error: unknown }).error;
    expect(isSaegateError(error, 'SAEGATE_ERR_WORKER_EXITED')).toBe(true);
    expect((error as Error).message).toBe('worker thread exited: echo worker closed');
    expect(host.restarts).toBe(0);
    const later = await settled(host.request({ type: 'double', values: new Float32Array(1) }));
    expect(isSaegateError((later as { error: unknown }).error, 'SAEGATE_ERR_WORKER_EXITED')).toBe(true);
  });
});
