/** Graceful shutdown: drain, let in-flight streams finish, cut what is left at the deadline. */
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProxy } from '../../src/proxy/server.js';
import { readBody, sseChunk, startStub, type StubUpstream } from '../helpers/stub-upstream.js';
import { waitFor } from '../helpers/wait.js';

let stub: StubUpstream;
beforeAll(async () => {
  stub = await startStub();
});
afterAll(async () => {
  await stub.close();
});

/** A stream the test ends when it wants. */
function holdStreams(): { release: () => void } {
  const held: http.ServerResponse[] = [];
  stub.handle = (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.write(sseChunk('first'));
    held.push(res);
  };
  return {
    release: () => {
      for (const res of held.splice(0)) res.end(sseChunk('last') + 'data: [DONE]\n\n');
    },
  };
}

function startStream(url: string): Promise<Response> {
  return fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"model":"m","messages":[],"stream":true}' });
}

describe('proxy shutdown', () => {
  it('lets an in-flight stream finish while /readyz answers 503 and no new connection is accepted', async () => {
    const proxy = await startProxy({ upstream: stub.url, port: 0 });
    const streams = holdStreams();
    const res = await startStream(proxy.url);
    const reader = res.body!.getReader();
    const first = await reader.read();
    expect(Buffer.from(first.value!).toString()).toBe(sseChunk('first'));

    const closed = proxy.close({ timeoutMs: 30_000 });
    expect(proxy.state.phase).toBe('draining');
    const ready = await proxy.app.inject({ url: '/readyz' });
    expect(ready.statusCode).toBe(503);
    expect(ready.json()).toMatchObject({ ready: false, draining: true });
    await expect(fetch(`${proxy.url}/healthz`)).rejects.toThrow();

    streams.release();
    let rest = '';
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      rest += Buffer.from(value).toString();
    }
    expect(rest).toBe(`${sseChunk('last')}data: [DONE]\n\n: x-saegate-applied=none\n\n`);
    await closed;
    expect(proxy.state.phase).toBe('closing');
  });

  it('keeps serving through the drain delay with /readyz at 503', async () => {
    const proxy = await startProxy({ upstream: stub.url, port: 0, drainDelayMs: 300 });
    stub.handle = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"ok":true}');
    };
    const closed = proxy.close();
    const ready = await fetch(`${proxy.url}/readyz`);
    expect(ready.status).toBe(503);
    expect(await ready.json()).toMatchObject({ ready: false, draining: true, upstream: { ok: false, error: 'shutting down' } });
    const served = await fetch(`${proxy.url}/v1/completions`, { method: 'POST', body: '{"model":"m"}', headers: { 'content-type': 'application/json' } });
    expect(served.status).toBe(200);
    await closed;
  });

  it('cuts streams still running at the deadline with event: error SAEGATE_ERR_SHUTTING_DOWN', async () => {
    const proxy = await startProxy({ upstream: stub.url, port: 0 });
    holdStreams();
    const res = await startStream(proxy.url);
    const body = readBody(res);
    await waitFor('the request to reach the upstream', () => stub.requests.length > 0);
    const upstreamAborted = stub.requests.at(-1)!.aborted;
    await proxy.close({ timeoutMs: 100 });
    const { text } = await body;
    expect(text.startsWith(sseChunk('first'))).toBe(true);
    expect(text).not.toContain('[DONE]');
    expect(text.slice(sseChunk('first').length)).toBe(
      `event: error\ndata: ${JSON.stringify({ error: { message: 'server is shutting down', type: 'server_error', param: null, code: 'SAEGATE_ERR_SHUTTING_DOWN' } })}\n\n`,
    );
    await upstreamAborted;
  });
});
