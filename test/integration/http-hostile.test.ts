/**
 * What a hostile or sloppy HTTP client does to both saegate HTTP servers (the proxy and the model
 * server), over raw sockets: bodies over the limit (the 413 must arrive, not a reset), requests
 * Node's HTTP parser refuses (OpenAI-shaped errors, not fastify's), half-sent heads (408 and
 * close), too many connections, and keep-alive limits. Timeouts are configured small; the tests
 * wait for the server's answer or close, never for a wall-clock bound.
 */
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { HttpServerLimits } from '../../src/common/http-server.js';
import { buildModelApp } from '../../src/model/http/app.js';
import { startProxy } from '../../src/proxy/server.js';
import { ByteTokenizer, FakeEngine } from '../helpers/fake-engine.js';
import { startStub } from '../helpers/stub-upstream.js';

interface Target {
  port: number;
  /** A GET path the server answers with 200. */
  okPath: string;
  close(): Promise<void>;
}

type Setup = Partial<HttpServerLimits> & { maxBodyBytes?: number; maxHeaderBytes?: number };

const servers: Array<[string, (setup: Setup) => Promise<Target>]> = [
  [
    'proxy',
    async ({ maxBodyBytes, maxHeaderBytes, ...limits }) => {
      const stub = await startStub();
      const proxy = await startProxy({ upstream: stub.url, port: 0, maxBodyBytes, maxHeaderBytes, ...limits });
      return {
        port: Number(new URL(proxy.url).port),
        okPath: '/healthz',
        close: async () => {
          await proxy.close({ timeoutMs: 0 });
          await stub.close();
        },
      };
    },
  ],
  [
    'model server',
    async ({ maxBodyBytes, maxHeaderBytes, ...limits }) => {
      const app = buildModelApp({ engine: new FakeEngine(), tokenizer: new ByteTokenizer(), modelName: 'm', bodyLimit: maxBodyBytes, maxHeaderBytes, limits });
      await app.listen({ host: '127.0.0.1', port: 0 });
      const address = app.server.address() as net.AddressInfo;
      return {
        port: address.port,
        okPath: '/v1/models',
        close: async () => {
          app.server.closeAllConnections();
          await app.close();
        },
      };
    },
  ],
];

/** A raw TCP client that records every byte it receives and how the connection ended. */
class RawClient {
  readonly socket: net.Socket;
  received = '';
  error: string | null = null;
  readonly closed: Promise<void>;
  private readonly listeners = new Set<() => void>();

  constructor(port: number) {
    this.socket = net.connect(port, '127.0.0.1');
    this.socket.on('data', (chunk: Buffer) => {
      this.received += chunk.toString('latin1');
      for (const listener of this.listeners) listener();
    });
    this.socket.on('error', (error: NodeJS.ErrnoException) => {
      this.error ??= error.code ?? error.message;
    });
    this.closed = new Promise((resolve) => this.socket.on('close', () => resolve()));
    void this.closed.then(() => {
      for (const listener of this.listeners) listener();
    });
  }

  /** Writes and resolves once the bytes are handed to the kernel; rejects on a socket error. */
  write(data: string | Buffer): Promise<void> {
    return new Promise((resolve, reject) => this.socket.write(data, (error) => (error ? reject(error) : resolve())));
  }

  /** Resolves once `count` complete responses (head and Content-Length body) have arrived; rejects if the connection closes first. */
  responses(count: number): Promise<Array<{ status: number; headers: string; body: string }>> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const parsed = parseResponses(this.received);
        if (parsed.length >= count) {
          this.listeners.delete(check);
          resolve(parsed);
        } else if (this.socket.destroyed) {
          this.listeners.delete(check);
          reject(new Error(`connection closed (${this.error ?? 'no error'}) after ${parsed.length} of ${count} responses: ${JSON.stringify(this.received)}`));
        }
      };
      this.listeners.add(check);
      check();
    });
  }
}

/** Splits received bytes into complete responses (1xx have no body; others a Content-Length body). */
function parseResponses(text: string): Array<{ status: number; headers: string; body: string }> {
  const out: Array<{ status: number; headers: string; body: string }> = [];
  let rest = text;
  for (;;) {
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0) return out;
    const headers = rest.slice(0, end);
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(headers)?.[1]);
    const length = status < 200 ? 0 : Number(/\r\ncontent-length: *(\d+)/i.exec(headers)?.[1] ?? 0);
    if (rest.length < end + 4 + length) return out;
    out.push({ status, headers, body: rest.slice(end + 4, end + 4 + length) });
    rest = rest.slice(end + 4 + length);
  }
}

const BIG = 256 * 1024;

let target: Target | null = null;
afterEach(async () => {
  await target?.close();
  target = null;
});

describe.each(servers)('%s under hostile clients', (_name, start) => {
  it('answers a body declared over the limit with 413, reads it away, and keeps the connection usable', async () => {
    target = await start({ maxBodyBytes: 1024 });
    const client = new RawClient(target.port);
    await client.write(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${BIG}\r\n\r\n`);
    await client.write(Buffer.alloc(BIG, 0x20));
    await client.write(`GET ${target.okPath} HTTP/1.1\r\nHost: x\r\n\r\n`);
    const [refused, next] = await client.responses(2);
    expect(refused.status).toBe(413);
    expect(JSON.parse(refused.body)).toMatchObject({ error: { code: 'SAEGATE_ERR_BODY_TOO_LARGE', type: 'invalid_request_error', message: expect.stringContaining('1024 bytes') } });
    expect(next.status).toBe(200);
    expect(client.error).toBeNull();
    client.socket.destroy();
  });

  it('answers a chunked body that grows over the limit with 413 and no reset', async () => {
    target = await start({ maxBodyBytes: 1024 });
    const client = new RawClient(target.port);
    await client.write('POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n');
    const chunk = Buffer.concat([Buffer.from(`${(64 * 1024).toString(16)}\r\n`), Buffer.alloc(64 * 1024, 0x20), Buffer.from('\r\n')]);
    for (let i = 0; i < 4; i++) await client.write(chunk);
    await client.write('0\r\n\r\n');
    await client.write(`GET ${target.okPath} HTTP/1.1\r\nHost: x\r\n\r\n`);
    const [refused, next] = await client.responses(2);
    expect(refused.status).toBe(413);
    expect(JSON.parse(refused.body)).toMatchObject({ error: { code: 'SAEGATE_ERR_BODY_TOO_LARGE' } });
    expect(next.status).toBe(200);
    expect(client.error).toBeNull();
    client.socket.destroy();
  });

  it('delivers the 413 to an Expect: 100-continue client that sends its body after the interim answer', async () => {
    target = await start({ maxBodyBytes: 1024 });
    const client = new RawClient(target.port);
    await client.write(`POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: ${BIG}\r\n\r\n`);
    const first = await client.responses(1);
    await client.write(Buffer.alloc(BIG, 0x20));
    await client.write(`GET ${target.okPath} HTTP/1.1\r\nHost: x\r\n\r\n`);
    const all = await client.responses(first[0].status === 100 ? 3 : 2);
    const statuses = all.map((response) => response.status).filter((status) => status !== 100);
    expect(statuses).toEqual([413, 200]);
    expect(client.error).toBeNull();
    client.socket.destroy();
  });

  it.each([
    ['a header block over the limit', `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, 431, 'SAEGATE_ERR_HEADERS_TOO_LARGE'],
    ['duplicate Content-Length', 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}', 400, 'SAEGATE_ERR_BAD_REQUEST'],
    ['Content-Length with Transfer-Encoding', 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n', 400, 'SAEGATE_ERR_BAD_REQUEST'],
    ['a broken chunked body', 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n', 400, 'SAEGATE_ERR_BAD_REQUEST'],
    ['a garbage request line', 'HELLO THERE\r\n\r\n', 400, 'SAEGATE_ERR_BAD_REQUEST'],
  ])('answers %s with an OpenAI-shaped error and closes', async (_what, request, status, code) => {
    target = await start({ maxHeaderBytes: 16_384 });
    const client = new RawClient(target.port);
    await client.write(request);
    const [response] = await client.responses(1);
    await client.closed;
    expect(response.status).toBe(status);
    const body = JSON.parse(response.body) as Record<string, unknown>;
    expect(Object.keys(body)).toEqual(['error']);
    expect(body.error).toMatchObject({ code, type: 'invalid_request_error', message: expect.any(String) });
  });

  it('answers a URL that does not decode with an OpenAI-shaped 400 (fastify frameworkErrors), keeping the connection', async () => {
    target = await start({});
    const client = new RawClient(target.port);
    await client.write('GET /v1/%zz HTTP/1.1\r\nHost: x\r\n\r\n');
    await client.write(`GET ${target.okPath} HTTP/1.1\r\nHost: x\r\n\r\n`);
    const [refused, next] = await client.responses(2);
    expect(refused.status).toBe(400);
    expect(JSON.parse(refused.body)).toEqual({ error: { message: "'/v1/%zz' is not a valid url component", type: 'invalid_request_error', param: null, code: 'SAEGATE_ERR_BAD_REQUEST' } });
    expect(next.status).toBe(200);
    client.socket.destroy();
  });

  it('answers a request head not completed within the headers timeout with 408 and closes', async () => {
    target = await start({ clientHeadersTimeoutMs: 100, clientRequestTimeoutMs: 200 });
    const client = new RawClient(target.port);
    await client.write('POST /v1/completions HTTP/1.1\r\nHost: x\r\n');
    const [response] = await client.responses(1);
    await client.closed;
    expect(response.status).toBe(408);
    expect(JSON.parse(response.body)).toMatchObject({ error: { code: 'SAEGATE_ERR_REQUEST_TIMEOUT' } });
  });

  it('closes connections beyond maxConnections on accept, and serves the ones within it', async () => {
    target = await start({ maxConnections: 2 });
    const held = [new RawClient(target.port), new RawClient(target.port)];
    for (const client of held) await client.write('GET ');
    const extra = new RawClient(target.port);
    await extra.closed;
    expect(extra.received).toBe('');
    await held[0].write(`${target.okPath} HTTP/1.1\r\nHost: x\r\n\r\n`);
    const [ok] = await held[0].responses(1);
    expect(ok.status).toBe(200);
    for (const client of held) client.socket.destroy();
  });

  it('closes an idle keep-alive connection after keepAliveTimeoutMs and ends a connection after maxRequestsPerSocket requests', async () => {
    target = await start({ keepAliveTimeoutMs: 50, maxRequestsPerSocket: 2 });
    const idle = new RawClient(target.port);
    await idle.write(`GET ${target.okPath} HTTP/1.1\r\nHost: x\r\n\r\n`);
    const [first] = await idle.responses(1);
    expect(first.status).toBe(200);
    expect(first.headers.toLowerCase()).toContain('keep-alive');
    await idle.closed;
    expect(idle.error).toBeNull();

    const busy = new RawClient(target.port);
    await busy.write(`GET ${target.okPath} HTTP/1.1\r\nHost: x\r\n\r\n`);
    await busy.responses(1);
    await busy.write(`GET ${target.okPath} HTTP/1.1\r\nHost: x\r\n\r\n`);
    const [, second] = await busy.responses(2);
    expect(second.headers.toLowerCase()).toContain('connection: close');
    await busy.closed;
  });
});

describe('proxy transparency', () => {
  it('forwards a JSON body that begins with a UTF-8 byte order mark, bytes unchanged, as the model server accepts it', async () => {
    const stub = await startStub();
    const proxy = await startProxy({ upstream: stub.url, port: 0 });
    try {
      const body = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"model":"m","prompt":"hi","max_tokens":1}')]);
      const response = await fetch(`${proxy.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      expect(response.status).toBe(200);
      expect(stub.requests).toHaveLength(1);
      expect(stub.requests[0].body.equals(body)).toBe(true);
    } finally {
      await proxy.close({ timeoutMs: 0 });
      await stub.close();
    }
  });
});
