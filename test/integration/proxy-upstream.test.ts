/**
 * saegate in front of a stub upstream (a plain node:http server the test scripts): byte-exact
 * bodies both ways, failures before and during a stream, each timeout layer, retries, limits and
 * abort propagation.
 */
import http from 'node:http';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startProxy, type ProxyServer } from '../../src/proxy/server.js';
import type { ProxyConfig } from '../../src/proxy/config.js';
import { readBody, sseChunk, startStub, type StubUpstream } from '../helpers/stub-upstream.js';
import { waitFor } from '../helpers/wait.js';

let stub: StubUpstream;
const proxies: ProxyServer[] = [];

async function proxy(overrides: Partial<ProxyConfig> = {}): Promise<ProxyServer> {
  const server = await startProxy({ upstream: stub.url, port: 0, ...overrides });
  proxies.push(server);
  return server;
}

function post(server: ProxyServer, path: string, body: string | object, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<Response> {
  return fetch(`${server.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
    signal,
  });
}

async function metric(server: ProxyServer, series: string): Promise<number> {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

/** Writes SSE headers and returns a writer for the stub's response. */
function sseHead(res: http.ServerResponse): void {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  res.flushHeaders();
}

const APPLIED_COMMENT = ': x-saegate-applied=none\n\n';

beforeAll(async () => {
  stub = await startStub();
});
afterEach(async () => {
  await Promise.all(proxies.splice(0).map((p) => p.close({ timeoutMs: 0 })));
  stub.requests.length = 0;
});
afterAll(async () => {
  await stub.close();
});

describe('proxy: bodies and headers', () => {
  it('forwards the request body and headers byte for byte and returns the response body unchanged', async () => {
    const server = await proxy();
    const requestBody = '{ "model" : "m",\n  "prompt":"h\\u00e9llo ✓", "stream":false, "extra": [1,  2.50, {"k": null}] }';
    const responseBody = '{"id": "x",  "choices":[{"text":"ok ✓"}] ,"usage":{}}\n';
    stub.handle = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'x-upstream-thing': 'kept', 'content-length': Buffer.byteLength(responseBody) });
      res.end(responseBody);
    };
    const res = await post(server, '/v1/completions?api-version=2', requestBody, { 'x-request-id': 'exact-1', 'X-Custom': 'Value', 'x-saegate-plan-id': 'forged', 'x-saegate-tap-max-delay-ms': '60000' });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe(responseBody);
    expect(res.headers.get('x-upstream-thing')).toBe('kept');
    expect(res.headers.get('x-request-id')).toBe('exact-1');
    expect(res.headers.get('x-saegate-applied')).toBe('none');
    const [forwarded] = stub.requests;
    expect(forwarded.method).toBe('POST');
    expect(forwarded.url).toBe('/v1/completions?api-version=2');
    expect(forwarded.body.equals(Buffer.from(requestBody))).toBe(true);
    expect(forwarded.headers).toMatchObject({ 'x-request-id': 'exact-1', 'x-custom': 'Value', 'content-type': 'application/json' });
    expect(forwarded.headers['x-saegate-plan-id']).toBeUndefined();
    expect(forwarded.headers['x-saegate-tap-max-delay-ms']).toBeUndefined();
    expect(forwarded.rawHeaders).toContain('X-Custom');
  });

  it('replaces an invalid client request id with a generated one, the same upstream and back', async () => {
    const server = await proxy();
    const res = await post(server, '/v1/chat/completions', { model: 'm', messages: [] }, { 'x-request-id': 'not valid!' });
    const id = res.headers.get('x-request-id');
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    expect(stub.requests[0].headers['x-request-id']).toBe(id);
  });

  it('streams SSE byte for byte, adding only the trailing x-saegate-applied comment', async () => {
    const server = await proxy();
    const pieces = [sseChunk('Hel'), 'data: {"split":', ' "across chunks"}\n\n', ': upstream comment\n\n', 'event: custom\ndata: line1\ndata: line2\n\n', sseChunk('lo ✓'), 'data: [DONE]\n\n'];
    stub.handle = (_req, res) => {
      sseHead(res);
      let i = 0;
      const next = (): void => {
        if (i === pieces.length) {
          res.end();
          return;
        }
        res.write(pieces[i++]);
        setTimeout(next, 2);
      };
      next();
    };
    const res = await post(server, '/v1/completions', { model: 'm', prompt: 'x', stream: true });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/event-stream');
    expect(res.headers.get('cache-control')).toBe('no-cache');
    const { text, error } = await readBody(res);
    expect(error).toBeNull();
    expect(text).toBe(pieces.join('') + APPLIED_COMMENT);
    expect(await metric(server, 'saegate_requests_total{route="completions",status="200"}')).toBe(1);
    expect(await metric(server, 'saegate_time_to_first_token_seconds_count{route="completions"}')).toBe(1);
    expect(await metric(server, 'saegate_inter_token_seconds_count')).toBeGreaterThanOrEqual(1);
  });

  it('passes other /v1 routes through with their method, path, query and body', async () => {
    const server = await proxy();
    stub.handle = (req, res) => {
      res.writeHead(req.method === 'DELETE' ? 202 : 200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ method: req.method, url: req.url }));
    };
    const models = await fetch(`${server.url}/v1/models?limit=2`);
    expect(await models.json()).toEqual({ method: 'GET', url: '/v1/models?limit=2' });
    const deleted = await fetch(`${server.url}/v1/files/abc`, { method: 'DELETE' });
    expect(deleted.status).toBe(202);
    const embed = await post(server, '/v1/embeddings', '{"input":"a"}');
    expect(await embed.json()).toEqual({ method: 'POST', url: '/v1/embeddings' });
    expect(stub.requests[2].body.toString()).toBe('{"input":"a"}');
  });
});

describe('proxy: upstream failures', () => {
  it('passes an upstream 503 through with its body and Retry-After, without retrying by default', async () => {
    const server = await proxy();
    stub.handle = (_req, res) => {
      res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '7' });
      res.end('{"error":{"message":"loading","code":"warming_up"}}');
    };
    const res = await post(server, '/v1/completions', { model: 'm', prompt: 'x' });
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('7');
    expect(await res.text()).toBe('{"error":{"message":"loading","code":"warming_up"}}');
    expect(stub.requests).toHaveLength(1);
  });

  it('answers 502 SAEGATE_ERR_UPSTREAM_UNAVAILABLE when the upstream is down at the start', async () => {
    const down = await startStub();
    const url = down.url;
    await down.close();
    const server = await startProxy({ upstream: url, port: 0 });
    proxies.push(server);
    const res = await post(server, '/v1/chat/completions', { model: 'm', messages: [], stream: true });
    expect(res.status).toBe(502);
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe('SAEGATE_ERR_UPSTREAM_UNAVAILABLE');
    expect(body.error.message).toContain(url);
    expect(await metric(server, 'saegate_upstream_failures_total{kind="unavailable"}')).toBe(1);
  });

  it('answers 502 when the upstream resets the connection before responding', async () => {
    const server = await proxy();
    stub.handle = (_req, res) => res.socket?.destroy();
    const res = await post(server, '/v1/completions', { model: 'm', prompt: 'x' });
    expect(res.status).toBe(502);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('SAEGATE_ERR_UPSTREAM_UNAVAILABLE');
  });

  it('ends a stream whose upstream dies midway with event: error and never [DONE]', async () => {
    const server = await proxy();
    stub.handle = (_req, res) => {
      sseHead(res);
      res.write(sseChunk('one'));
      res.write(sseChunk('two'));
      setTimeout(() => res.socket?.destroy(), 20);
    };
    const res = await post(server, '/v1/chat/completions', { model: 'm', messages: [], stream: true });
    expect(res.status).toBe(200);
    const { text } = await readBody(res);
    expect(text.startsWith(sseChunk('one') + sseChunk('two'))).toBe(true);
    expect(text).not.toContain('[DONE]');
    expect(text).not.toContain('x-saegate-applied');
    const tail = text.slice((sseChunk('one') + sseChunk('two')).length);
    expect(tail).toMatch(/^event: error\ndata: \{.*\}\n\n$/);
    const error = JSON.parse(tail.split('\n')[1].slice('data: '.length)) as { error: { code: string; type: string } };
    expect(error.error).toMatchObject({ code: 'SAEGATE_ERR_UPSTREAM_STREAM', type: 'server_error' });
    expect(await metric(server, 'saegate_stream_aborts_total{side="upstream"}')).toBe(1);
  });

  it('cuts a non-streaming body that breaks off after it started, so the client sees a failure', async () => {
    const server = await proxy();
    stub.handle = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' });
      res.write('{"partial": ');
      setTimeout(() => res.socket?.destroy(), 20);
    };
    const res = await post(server, '/v1/completions', { model: 'm', prompt: 'x' });
    expect(res.status).toBe(200);
    const { text, error } = await readBody(res);
    expect(text).toBe('{"partial": ');
    expect(error).not.toBeNull();
  });
});

describe('proxy: timeouts', () => {
  interface TimeoutCase {
    layer: string;
    config: Partial<ProxyConfig>;
    stream: boolean;
    upstream: (res: http.ServerResponse) => void;
    /** Status the client gets: 504, or 200 when the timeout fired after bytes had gone out. */
    status: number;
    message: string;
    kind: string;
  }
  const silent = (): void => {};
  const cases: TimeoutCase[] = [
    { layer: 'response headers', config: { headersTimeoutMs: 100 }, stream: false, upstream: silent, status: 504, message: 'upstream response-headers timeout: the upstream sent no response headers after the request (headersTimeoutMs = 100 ms)', kind: 'headers_timeout' },
    { layer: 'first token', config: { firstTokenTimeoutMs: 100 }, stream: true, upstream: sseHead, status: 504, message: 'upstream first-token timeout: the upstream sent no stream data after its response headers (firstTokenTimeoutMs = 100 ms)', kind: 'first_token_timeout' },
    {
      layer: 'idle',
      config: { idleTimeoutMs: 100 },
      stream: true,
      upstream: (res) => {
        sseHead(res);
        res.write(sseChunk('first'));
      },
      status: 200,
      message: 'upstream idle timeout: the upstream sent nothing between two chunks of its response (idleTimeoutMs = 100 ms)',
      kind: 'idle_timeout',
    },
    {
      layer: 'total',
      config: { totalTimeoutMs: 150, idleTimeoutMs: 5000 },
      stream: true,
      upstream: (res) => {
        sseHead(res);
        const timer = setInterval(() => res.write(sseChunk('tick')), 20);
        res.on('close', () => clearInterval(timer));
      },
      status: 200,
      message: 'upstream total timeout: the upstream response did not complete (totalTimeoutMs = 150 ms)',
      kind: 'total_timeout',
    },
    { layer: 'total (before headers)', config: { totalTimeoutMs: 100 }, stream: false, upstream: silent, status: 504, message: 'upstream total timeout: the upstream response did not complete (totalTimeoutMs = 100 ms)', kind: 'total_timeout' },
  ];

  it.each(cases)('answers the $layer timeout with a 504 error naming it', async ({ config, stream, upstream, status, message, kind }) => {
    const server = await proxy(config);
    stub.handle = (_req, res) => upstream(res);
    const res = await post(server, '/v1/chat/completions', { model: 'm', messages: [], stream });
    expect(res.status).toBe(status);
    const expected = { error: { message, type: 'timeout_error', param: null, code: 'SAEGATE_ERR_UPSTREAM_TIMEOUT' } };
    if (status === 504) {
      expect(await res.json()).toEqual(expected);
    } else {
      const { text } = await readBody(res);
      expect(text).not.toContain('[DONE]');
      expect(text.endsWith(`event: error\ndata: ${JSON.stringify(expected)}\n\n`)).toBe(true);
    }
    await waitFor('the request to reach the upstream', () => stub.requests.length === 1);
    await stub.requests[0].aborted;
    expect(await metric(server, `saegate_upstream_failures_total{kind="${kind}"}`)).toBe(1);
  });

  it('does not count time the client keeps us paused as idle time', async () => {
    const server = await proxy({ idleTimeoutMs: 200 });
    const big = 'x'.repeat(1024 * 1024);
    let stalledBytes = -1;
    stub.handle = (_req, res) => {
      sseHead(res);
      // Far more than the socket buffers hold: saegate must pause the upstream until the client reads.
      for (let i = 0; i < 32; i++) res.write(`data: ${big}\n\n`);
      res.end('data: [DONE]\n\n');
      // While the client does not read, saegate does not read the upstream either: bytes pile up here.
      setTimeout(() => (stalledBytes = res.writableLength), 400);
    };
    const res = await post(server, '/v1/completions', { model: 'm', prompt: 'x', stream: true });
    const reader = res.body!.getReader();
    const first = await reader.read();
    expect(first.done).toBe(false);
    // Stop reading for longer than the idle timeout.
    await new Promise((r) => setTimeout(r, 500));
    let length = first.value!.length;
    let tail = '';
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      length += value.length;
      // The end may arrive split over several chunks: keep a rolling tail across them.
      tail = (tail + Buffer.from(value).toString('latin1')).slice(-256);
    }
    expect(stalledBytes).toBeGreaterThan(4 * big.length);
    expect(length).toBe(32 * (big.length + 8) + 'data: [DONE]\n\n'.length + APPLIED_COMMENT.length);
    expect(tail.endsWith(`data: [DONE]\n\n${APPLIED_COMMENT}`)).toBe(true);
  });
});

describe('proxy: retries', () => {
  it('retries a 503 before anything reached the client and returns the retry’s response', async () => {
    const server = await proxy({ retries: 2, retryBackoffMs: 5 });
    stub.handle = (_req, res) => {
      if (stub.requests.length === 1) {
        res.writeHead(503, { 'content-type': 'application/json' });
        res.end('{"error":"busy"}');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"ok":true}');
    };
    const res = await post(server, '/v1/completions', '{"model":"m","prompt":"same bytes"}');
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('{"ok":true}');
    expect(stub.requests.map((r) => r.body.toString())).toEqual(['{"model":"m","prompt":"same bytes"}', '{"model":"m","prompt":"same bytes"}']);
    expect(await metric(server, 'saegate_upstream_retries_total{reason="status_503"}')).toBe(1);
  });

  it('retries a connection reset before the response', async () => {
    const server = await proxy({ retries: 1, retryBackoffMs: 5 });
    stub.handle = (_req, res) => {
      if (stub.requests.length === 1) {
        res.socket?.destroy();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"ok":true}');
    };
    const res = await post(server, '/v1/completions', { model: 'm', prompt: 'x' });
    expect(res.status).toBe(200);
    expect(stub.requests).toHaveLength(2);
    expect(await metric(server, 'saegate_upstream_retries_total{reason="connection"}')).toBe(1);
  });

  it('honours Retry-After: a wait beyond the retry budget passes the 429 through, a zero wait retries', async () => {
    const server = await proxy({ retries: 3, retryBackoffMs: 5, retryMaxDelayMs: 500 });
    let retryAfter = '1';
    stub.handle = (_req, res) => {
      if (stub.requests.length % 2 === 1) {
        res.writeHead(429, { 'content-type': 'application/json', 'retry-after': retryAfter });
        res.end('{"error":"slow down"}');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"ok":true}');
    };
    const refused = await post(server, '/v1/completions', { model: 'm', prompt: 'x' });
    expect(refused.status).toBe(429);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect(stub.requests).toHaveLength(1);
    stub.requests.length = 0;
    retryAfter = '0';
    const retried = await post(server, '/v1/completions', { model: 'm', prompt: 'x' });
    expect(retried.status).toBe(200);
    expect(stub.requests).toHaveLength(2);
  });

  it('never retries once a stream has started, even with retries on', async () => {
    const server = await proxy({ retries: 3, retryBackoffMs: 5 });
    stub.handle = (_req, res) => {
      sseHead(res);
      res.write(sseChunk('partial'));
      setTimeout(() => res.socket?.destroy(), 10);
    };
    const res = await post(server, '/v1/completions', { model: 'm', prompt: 'x', stream: true });
    const { text } = await readBody(res);
    expect(text).toContain('event: error');
    expect(stub.requests).toHaveLength(1);
  });

  it('lets the total timeout end a request that is waiting out a Retry-After', async () => {
    const server = await proxy({ retries: 3, retryMaxDelayMs: 10_000, totalTimeoutMs: 150 });
    stub.handle = (_req, res) => {
      res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '5' });
      res.end('{"error":"busy"}');
    };
    const res = await post(server, '/v1/completions', { model: 'm', prompt: 'x' });
    expect(res.status).toBe(504);
    expect(((await res.json()) as { error: { message: string } }).error.message).toContain('upstream total timeout');
    expect(stub.requests).toHaveLength(1);
    await waitFor('no request in flight on the proxy', () => server.inFlight.size === 0);
  });

  it('gives up after the retry count and returns the last response', async () => {
    const server = await proxy({ retries: 2, retryBackoffMs: 1 });
    stub.handle = (_req, res) => {
      res.writeHead(502, { 'content-type': 'application/json' });
      res.end(`{"attempt":${stub.requests.length}}`);
    };
    const res = await post(server, '/v1/completions', { model: 'm', prompt: 'x' });
    expect(res.status).toBe(502);
    expect(await res.text()).toBe('{"attempt":3}');
    expect(stub.requests).toHaveLength(3);
  });
});

describe('proxy: limits and aborts', () => {
  it('refuses streams over the limit with 429 and Retry-After while other requests still pass', async () => {
    const server = await proxy({ maxStreams: 1, retryAfterSeconds: 3 });
    let release: () => void = () => {};
    stub.handle = (req, res) => {
      const body = JSON.parse(req.body.toString()) as { stream?: boolean };
      if (!body.stream) {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{}');
        return;
      }
      sseHead(res);
      res.write(sseChunk('held'));
      release = () => res.end('data: [DONE]\n\n');
    };
    const held = await post(server, '/v1/completions', { model: 'm', prompt: 'x', stream: true });
    expect(held.status).toBe(200);
    const refused = await post(server, '/v1/chat/completions', { model: 'm', messages: [], stream: true });
    expect(refused.status).toBe(429);
    expect(refused.headers.get('retry-after')).toBe('3');
    expect(await refused.json()).toEqual({ error: { message: 'too many concurrent streams: the limit is 1', type: 'rate_limit_error', param: null, code: 'SAEGATE_ERR_TOO_MANY_STREAMS' } });
    expect((await post(server, '/v1/completions', { model: 'm', prompt: 'x' })).status).toBe(200);
    release();
    expect((await readBody(held)).text.endsWith(`data: [DONE]\n\n${APPLIED_COMMENT}`)).toBe(true);
    await waitFor('no stream active on the proxy', () => server.streams.active === 0);
    const again = await post(server, '/v1/completions', { model: 'm', prompt: 'x', stream: true });
    expect(again.status).toBe(200);
    release();
    await readBody(again);
  });

  it('refuses request headers over the limit with 431', async () => {
    const server = await proxy({ maxHeaderBytes: 2048 });
    const res = await post(server, '/v1/completions', { model: 'm' }, { 'x-big': 'y'.repeat(4096) });
    expect(res.status).toBe(431);
    expect(await res.json()).toMatchObject({ error: { code: 'SAEGATE_ERR_HEADERS_TOO_LARGE', message: 'request headers are larger than the limit of 2048 bytes' } });
    expect(stub.requests).toHaveLength(0);
  });

  it('aborts the upstream request when the client disconnects mid-stream', async () => {
    const server = await proxy();
    stub.handle = (_req, res) => {
      sseHead(res);
      const timer = setInterval(() => res.write(sseChunk('tick')), 10);
      res.on('close', () => clearInterval(timer));
    };
    const controller = new AbortController();
    const res = await post(server, '/v1/completions', { model: 'm', prompt: 'x', stream: true }, {}, controller.signal);
    const reader = res.body!.getReader();
    await reader.read();
    controller.abort();
    await stub.requests[0].aborted;
    await waitFor('no request in flight on the proxy', () => server.inFlight.size === 0);
    expect(await metric(server, 'saegate_stream_aborts_total{side="client"}')).toBe(1);
    expect(await metric(server, 'saegate_requests_total{route="completions",status="499"}')).toBe(1);
    expect(await metric(server, 'saegate_active_streams')).toBe(0);
  });
});
