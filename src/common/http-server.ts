/**
 * Limits every saegate HTTP server (the proxy, the model server) puts on its clients' connections,
 * and the one way both refuse a body that is too large without resetting the connection.
 *
 * Without these, a client that opens connections and sends half a request head holds them for as
 * long as Node's defaults allow (60 s for the head, checked every 30 s) and without any cap on
 * their number. Node enforces the head/request timeouts on a periodic sweep, so the sweep runs at
 * a quarter of the shorter timeout (at most every second): a timeout of T closes the connection,
 * with a 408, between T and 1.25 T.
 */
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Server } from 'node:http';

/** Connection limits of an HTTP server; every field has a documented default below. */
export interface HttpServerLimits {
  /** Most open client connections; further ones are closed on accept. Default 10000. */
  maxConnections: number;
  /** Time a connection has to send a complete request head, ms; 408 after. Default 10000. */
  clientHeadersTimeoutMs: number;
  /** Time a connection has to send a complete request (head and body), ms; 408 after. 0 = none. Default 120000. */
  clientRequestTimeoutMs: number;
  /** How long an idle keep-alive connection stays open, ms. Default 5000. */
  keepAliveTimeoutMs: number;
  /** Requests served on one connection before it is closed; 0 = unlimited. Default 1000. */
  maxRequestsPerSocket: number;
}

/** The defaults of {@link HttpServerLimits}, documented in docs/proxy.md and docs/model-server.md. */
export const defaultHttpServerLimits: Readonly<HttpServerLimits> = {
  maxConnections: 10_000,
  clientHeadersTimeoutMs: 10_000,
  clientRequestTimeoutMs: 120_000,
  keepAliveTimeoutMs: 5000,
  maxRequestsPerSocket: 1000,
};

/** `defaultHttpServerLimits` with the fields of `overrides` that are set (undefined keeps the default). */
export function resolveHttpServerLimits(overrides: Partial<HttpServerLimits> = {}): HttpServerLimits {
  const limits: HttpServerLimits = { ...defaultHttpServerLimits };
  for (const key of Object.keys(limits) as (keyof HttpServerLimits)[]) {
    const value = overrides[key];
    if (value !== undefined) limits[key] = value;
  }
  return limits;
}

/** Most bytes of a refused (413) body read and thrown away before the connection is closed: 64 MiB. */
export const MAX_DISCARD_BYTES = 64 * 1024 * 1024;

/**
 * The fastify server options that apply `limits` (`http` merges into the caller's `http` options).
 * Call {@link applyConnectionCap} on `app.server` as well.
 */
export function fastifyLimitOptions(limits: HttpServerLimits): {
  keepAliveTimeout: number;
  maxRequestsPerSocket: number;
  requestTimeout: number;
  http: { headersTimeout: number; requestTimeout: number; connectionsCheckingInterval: number };
} {
  const shortest = Math.min(limits.clientHeadersTimeoutMs, limits.clientRequestTimeoutMs > 0 ? limits.clientRequestTimeoutMs : Infinity);
  // Node refuses a head timeout longer than the request timeout; the request timeout covers it then.
  const headersTimeout = limits.clientRequestTimeoutMs > 0 ? Math.min(limits.clientHeadersTimeoutMs, limits.clientRequestTimeoutMs) : limits.clientHeadersTimeoutMs;
  return {
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    maxRequestsPerSocket: limits.maxRequestsPerSocket,
    requestTimeout: limits.clientRequestTimeoutMs,
    http: {
      headersTimeout,
      requestTimeout: limits.clientRequestTimeoutMs,
      connectionsCheckingInterval: Math.max(10, Math.min(1000, Math.floor(shortest / 4))),
    },
  };
}

/** Sets the connection cap on a server (fastify has no option for it). */
export function applyConnectionCap(server: Server, limits: Pick<HttpServerLimits, 'maxConnections'>): void {
  server.maxConnections = limits.maxConnections;
}

/** Sockets whose current request body is being read and thrown away after a 413. */
const discarding = new WeakSet<Socket>();

/** True while `socket` discards a refused body (errors-fastify.ts then writes nothing more on it). */
export function isDiscarding(socket: Socket): boolean {
  return discarding.has(socket);
}

/**
 * Reads and throws away the rest of a refused request body, so the client receives the 413
 * instead of a connection reset. Closing while the client still sends makes the kernel answer its
 * next bytes with RST, and a client that reads only after sending (curl with `Expect:
 * 100-continue`, undici) then loses the 413 it had not read yet. The connection stays usable
 * (keep-alive) once the body has ended; after `maxBytes` more bytes it is closed.
 */
export function discardRequestBody(request: IncomingMessage, maxBytes = MAX_DISCARD_BYTES): void {
  const socket = request.socket;
  if (request.complete || socket.destroyed) return;
  discarding.add(socket);
  let discarded = 0;
  const done = (): void => {
    discarding.delete(socket);
    request.off('data', onData);
  };
  const onData = (chunk: Buffer): void => {
    discarded += chunk.length;
    if (discarded > maxBytes) {
      done();
      socket.destroy();
    }
  };
  request.on('data', onData);
  request.once('end', done);
  request.once('close', done);
  request.resume();
}
