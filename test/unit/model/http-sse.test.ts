import { EventEmitter } from 'node:events';
import type { ServerResponse } from 'node:http';
import { describe, expect, it } from 'vitest';
import { SseWriter } from '../../../src/model/http/sse.js';

/** Just enough of a ServerResponse: records writes and lets the test decide when the socket is full. */
class RecordingResponse extends EventEmitter {
  readonly writes: string[] = [];
  readonly headers: Record<string, unknown> = {};
  status = 0;
  /** write() returns false while this is true, as when the socket buffer is over its high-water mark. */
  full = false;
  destroyed = false;
  ended = false;

  setHeader(name: string, value: unknown): void {
    this.headers[name] = value;
  }

  writeHead(status: number, headers: Record<string, string>): void {
    this.status = status;
    Object.assign(this.headers, headers);
  }

  write(chunk: string): boolean {
    this.writes.push(chunk);
    return !this.full;
  }

  end(callback: () => void): void {
    this.ended = true;
    callback();
  }

  asResponse(): ServerResponse {
    return this as unknown as ServerResponse;
  }
}

describe('SseWriter', () => {
  it('writes event-stream headers with the given ones and frames data, events and [DONE]', async () => {
    const res = new RecordingResponse();
    const sse = new SseWriter(res.asResponse(), { 'x-request-id': 'r1', 'x-skip': undefined });
    sse.data({ a: 1 });
    sse.event('error', { error: { message: 'x' } });
    sse.done();
    await sse.end();
    expect(res.status).toBe(200);
    expect(res.headers).toEqual({ 'x-request-id': 'r1', 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' });
    expect(res.writes).toEqual(['data: {"a":1}\n\n', 'event: error\ndata: {"error":{"message":"x"}}\n\n', 'data: [DONE]\n\n']);
    expect(res.ended).toBe(true);
  });

  it('stops writing once write() returns false and sends the backlog in one write on drain', async () => {
    const res = new RecordingResponse();
    const sse = new SseWriter(res.asResponse(), {});
    res.full = true;
    sse.data(1);
    sse.data(2);
    sse.data(3);
    // Only the write that reported a full buffer reached the socket.
    expect(res.writes).toEqual(['data: 1\n\n']);
    res.full = false;
    res.emit('drain');
    expect(res.writes).toEqual(['data: 1\n\n', 'data: 2\n\ndata: 3\n\n']);
    sse.data(4);
    expect(res.writes.at(-1)).toBe('data: 4\n\n');
    await sse.end();
    expect(res.ended).toBe(true);
  });

  it('ends only after the backlog drained', async () => {
    const res = new RecordingResponse();
    const sse = new SseWriter(res.asResponse(), {});
    res.full = true;
    sse.data('a');
    sse.done();
    let ended = false;
    const ending = sse.end().then(() => (ended = true));
    await new Promise((resolve) => setImmediate(resolve));
    expect(ended).toBe(false);
    expect(res.ended).toBe(false);
    res.full = false;
    res.emit('drain');
    await ending;
    expect(res.writes).toEqual(['data: "a"\n\n', 'data: [DONE]\n\n']);
    expect(res.ended).toBe(true);
  });

  it('drops frames and resolves end() without ending once the client is gone', async () => {
    const res = new RecordingResponse();
    const sse = new SseWriter(res.asResponse(), {});
    res.full = true;
    sse.data('a');
    sse.data('b');
    res.destroyed = true;
    res.emit('close');
    sse.data('c');
    await sse.end();
    expect(res.writes).toEqual(['data: "a"\n\n']);
    expect(res.ended).toBe(false);
    expect(sse.closed).toBe(true);
  });
});
