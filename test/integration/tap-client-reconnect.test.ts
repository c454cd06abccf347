/**
 * TapClient's reconnect schedule against a real TCP endpoint that hangs up on every connection,
 * with the clock under test control: only setTimeout/clearTimeout are faked, so sockets run for
 * real while every backoff delay passes exactly when the test says.
 */
import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { seededUniform } from '../../src/common/random.js';
import { TapClient } from '../../src/tap/client.js';
import type { TapLogger } from '../../src/tap/logger.js';

interface Scheduled {
  attempt: number;
  delayMs: number;
}

/** Resolves each time the client schedules a reconnect (its debug log), in order. */
function scheduleRecorder(): { logger: TapLogger; next: () => Promise<Scheduled> } {
  const queued: Scheduled[] = [];
  const waiting: ((s: Scheduled) => void)[] = [];
  const ignore = (): void => {};
  const logger: TapLogger = {
    warn: ignore,
    info: ignore,
    debug: (obj, msg) => {
      if (msg !== 'tap: reconnect scheduled') return;
      const s = { attempt: obj.attempt as number, delayMs: obj.delayMs as number };
      const w = waiting.shift();
      if (w !== undefined) w(s);
      else queued.push(s);
    },
  };
  const next = (): Promise<Scheduled> => {
    const s = queued.shift();
    return s !== undefined ? Promise.resolve(s) : new Promise((resolve) => waiting.push(resolve));
  };
  return { logger, next };
}

let server: Server;
let connections = 0;
const sockets = new Set<Socket>();

beforeEach(async () => {
  connections = 0;
  // Accepts and hangs up at once: every attempt fails before a welcome.
  server = createServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
});

afterEach(async () => {
  vi.useRealTimers();
  for (const s of sockets) s.destroy();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

describe('TapClient reconnecting', () => {
  it('retries after each failed attempt with growing, jittered delays drawn from the injected random', async () => {
    const { logger, next } = scheduleRecorder();
    const port = (server.address() as AddressInfo).port;
    const client = new TapClient({
      url: `ws://127.0.0.1:${port}/v1/tap`,
      hello: { modelId: 'm', dModel: 2, nLayers: 1, hookPoints: ['blocks.0.hook_resid_post'], dtypes: ['f32'], canSteer: false },
      reconnect: { initialDelayMs: 100, maxDelayMs: 800 },
      random: seededUniform(3),
      logger,
    });
    client.start();
    const draws = seededUniform(3);
    const bases = [100, 200, 400, 800, 800];
    for (const [i, base] of bases.entries()) {
      const scheduled = await next();
      expect(scheduled.attempt).toBe(i + 1);
      expect(scheduled.delayMs).toBe(Math.round(base / 2 + draws() * (base / 2)));
      expect(connections).toBe(i + 1);
      expect(client.stats.connectFailures).toBe(i + 1);
      // The next attempt waits for its timer: nothing connects until the delay has passed.
      expect(vi.getTimerCount()).toBe(1);
      vi.advanceTimersByTime(base);
    }
    await client.close();
    expect(vi.getTimerCount()).toBe(0);
    expect(client.stats.connects).toBe(0);
  });

  it('stops retrying on close: the pending reconnect timer is cleared', async () => {
    const { logger, next } = scheduleRecorder();
    const port = (server.address() as AddressInfo).port;
    const client = new TapClient({
      url: `ws://127.0.0.1:${port}/v1/tap`,
      hello: { modelId: 'm', dModel: 2, nLayers: 1, hookPoints: ['blocks.0.hook_resid_post'], dtypes: ['f32'], canSteer: false },
      logger,
    });
    client.start();
    await next();
    expect(vi.getTimerCount()).toBe(1);
    await client.close();
    expect(vi.getTimerCount()).toBe(0);
    vi.advanceTimersByTime(60_000);
    expect(connections).toBe(1);
  });
});
