/**
 * The live view's endpoints (docs/live-view.md): `GET /ui` (the page), `/ui/live.js`,
 * `/ui/live.css`, `/ui/features/N` (an SAE's feature page, when it has one) and the WebSocket
 * `/ui/ws`, which sends the hub's snapshot and then its messages as JSON text frames.
 *
 * **Access.** On a loopback listener the view is open. Off loopback it needs the admin token: the
 * page is opened once as `/ui?token=TOKEN`, which sets an HttpOnly, SameSite=Strict cookie scoped
 * to /ui holding an HMAC of the token (not the token: the cookie cannot be replayed on /admin) and
 * redirects to `/ui`, so the token leaves the address bar and history. Every /ui request and the
 * WebSocket upgrade then carry the cookie (or `Authorization: Bearer TOKEN`). The upgrade also
 * refuses an `Origin` other than its own host (cross-site WebSocket hijacking). Without an admin
 * token off loopback the view is refused.
 *
 * **Bounds.** The hub bounds what is kept; a viewer whose socket buffers more than
 * `maxBufferedBytes` (a stalled tab) is closed with 1013 and reconnects to a fresh snapshot, so a
 * slow viewer never grows the server's memory.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs/promises';
import type { IncomingMessage, Server as HttpServer } from 'node:http';
import type { Duplex } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import WebSocket, { WebSocketServer } from 'ws';
import { SaegateError } from '../../common/errors.js';
import { isLoopbackHost } from '../config.js';
import type { LiveHub, LiveMessage } from './hub.js';
import { liveCss, liveHtml, liveIcon, liveScript } from './page.js';

/** The page's Content-Security-Policy: its own files only, no inline script or style. */
export const liveViewCsp = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

/** The cookie that carries the view's credential after `?token=`. */
export const LIVE_COOKIE = 'saegate_ui';

/** An SAE's feature page, served at `/ui/features/N` with its own CSP (the page inlines its script, allowed by hash). */
export interface LiveFeaturePage {
  hook: string;
  /** Path of the generated features.html. */
  file: string;
  /** The page's own Content-Security-Policy. */
  csp: string;
}

export interface LiveViewOptions {
  hub: LiveHub;
  /** Whether the admin token is required. Default: when the proxy's `host` is not loopback. */
  requireToken?: boolean;
  featurePages?: readonly LiveFeaturePage[];
  /** How often changed requests are sent, in ms. Default 200. */
  flushIntervalMs?: number;
  /** How often a chart sample is taken, in ms. Default 1000. */
  sampleIntervalMs?: number;
  /** Bytes a viewer's socket may buffer before it is closed (1013). Default 4 MiB. */
  maxBufferedBytes?: number;
}

/** The URL path of feature page `n`. */
export function featurePagePath(n: number): string {
  return `/ui/features/${n}`;
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

export class LiveView {
  readonly hub: LiveHub;
  private readonly requireTokenOption: boolean | undefined;
  private requireToken = true;
  private tokenDigest: Buffer | null = null;
  /** The cookie value: HMAC-SHA256 of a fixed label under the admin token, hex. */
  private cookie: string | null = null;
  private readonly featurePages: readonly LiveFeaturePage[];
  private readonly flushIntervalMs: number;
  private readonly sampleIntervalMs: number;
  private readonly maxBufferedBytes: number;
  private readonly wss = new WebSocketServer({ noServer: true, maxPayload: 4096 });
  private readonly clients = new Set<WebSocket>();
  private timers: NodeJS.Timeout[] = [];
  private offHub: (() => void) | null = null;
  private detach: (() => void) | null = null;

  constructor(options: LiveViewOptions) {
    this.hub = options.hub;
    this.requireTokenOption = options.requireToken;
    this.featurePages = options.featurePages ?? [];
    this.flushIntervalMs = options.flushIntervalMs ?? 200;
    this.sampleIntervalMs = options.sampleIntervalMs ?? 1000;
    this.maxBufferedBytes = options.maxBufferedBytes ?? 4 * 1024 * 1024;
  }

  /** Why a request may not see the view (null: it may). */
  private refusal(headers: IncomingMessage['headers']): string | null {
    if (!this.requireToken) return null;
    if (this.tokenDigest === null || this.cookie === null) return 'the live view listens off loopback and needs --admin-token';
    const auth = headers.authorization;
    const bearer = auth === undefined ? null : /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(auth);
    if (bearer !== null && timingSafeEqual(digest(bearer[1]), this.tokenDigest)) return null;
    const cookie = cookieValue(headers.cookie, LIVE_COOKIE);
    if (cookie !== undefined && timingSafeEqual(digest(cookie), digest(this.cookie))) return null;
    return 'open /ui?token=ADMIN_TOKEN once (or send Authorization: Bearer ADMIN_TOKEN)';
  }

  /**
   * Registers the HTTP routes; call before the app listens. `access` is the proxy's: the host it
   * listens on (loopback or not) and its admin token (null: none).
   */
  register(app: FastifyInstance, access: { host: string; adminToken: string | null }): void {
    this.requireToken = this.requireTokenOption ?? !isLoopbackHost(access.host);
    this.tokenDigest = access.adminToken === null ? null : digest(access.adminToken);
    this.cookie = access.adminToken === null ? null : createHmac('sha256', access.adminToken).update('saegate live view').digest('hex');
    const config = { metricsRoute: 'ui' } as const;
    const guard = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
      const why = this.refusal(request.headers);
      if (why !== null) {
        reply.header('www-authenticate', 'Bearer');
        throw new SaegateError('SAEGATE_ERR_ADMIN_AUTH', [why]);
      }
    };
    const send = (reply: FastifyReply, type: string, body: string, csp?: string): FastifyReply => {
      reply.header('content-type', type).header('cache-control', 'no-store').header('x-content-type-options', 'nosniff').header('referrer-policy', 'no-referrer');
      if (csp !== undefined) reply.header('content-security-policy', csp);
      return reply.send(body);
    };

    app.get('/ui', { config }, async (request, reply) => {
      const query = request.query as Record<string, unknown>;
      const token = typeof query.token === 'string' ? query.token : undefined;
      if (token !== undefined && this.tokenDigest !== null && this.cookie !== null) {
        if (!timingSafeEqual(digest(token), this.tokenDigest)) throw new SaegateError('SAEGATE_ERR_ADMIN_AUTH', ['wrong token in /ui?token=']);
        reply.header('set-cookie', `${LIVE_COOKIE}=${this.cookie}; Path=/ui; HttpOnly; SameSite=Strict${request.protocol === 'https' ? '; Secure' : ''}`);
        return reply.code(303).header('location', '/ui').send();
      }
      await guard(request, reply);
      return send(reply, 'text/html; charset=utf-8', liveHtml, liveViewCsp);
    });
    app.get('/ui/live.js', { config, onRequest: guard }, async (_request, reply) => send(reply, 'text/javascript; charset=utf-8', liveScript));
    app.get('/ui/live.css', { config, onRequest: guard }, async (_request, reply) => send(reply, 'text/css; charset=utf-8', liveCss));
    app.get('/ui/favicon.svg', { config, onRequest: guard }, async (_request, reply) => send(reply, 'image/svg+xml', liveIcon));
    app.get('/ui/features/:n', { config, onRequest: guard }, async (request, reply) => {
      const n = Number((request.params as { n: string }).n);
      const page = Number.isInteger(n) && n >= 0 ? this.featurePages[n] : undefined;
      if (page === undefined) throw new SaegateError('SAEGATE_ERR_NOT_FOUND', ['GET', request.url]);
      return send(reply, 'text/html; charset=utf-8', await fs.readFile(page.file, 'utf8'), page.csp);
    });
  }

  /**
   * Routes `/ui/ws` upgrades of `server` here and starts the flush and sample timers; call after
   * listen. Upgrades to any other path than `/ui/ws` and `otherPaths` (the tap's) are answered 404
   * here: with two upgrade listeners the tap no longer refuses them itself.
   */
  attach(server: HttpServer, otherPaths: readonly string[] = []): void {
    const listener = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
      let pathname: string;
      try {
        pathname = new URL(req.url ?? '/', 'http://localhost').pathname;
      } catch {
        pathname = '';
      }
      if (pathname === '/ui/ws') this.handleUpgrade(req, socket, head);
      else if (!otherPaths.includes(pathname)) refuse(socket, 404, 'Not Found', new SaegateError('SAEGATE_ERR_NOT_FOUND', ['GET', req.url ?? '/']));
    };
    server.on('upgrade', listener);
    this.detach = () => server.off('upgrade', listener);
    this.offHub = this.hub.subscribe((message) => this.broadcast(message));
    this.timers = [
      setInterval(() => this.hub.flush(), this.flushIntervalMs).unref(),
      setInterval(() => this.hub.sample(), this.sampleIntervalMs).unref(),
    ];
  }

  /** Viewers connected now. */
  get viewers(): number {
    return this.clients.size;
  }

  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const why = this.refusal(req.headers);
    if (why !== null) return refuse(socket, 401, 'Unauthorized', new SaegateError('SAEGATE_ERR_ADMIN_AUTH', [why]));
    const origin = req.headers.origin;
    if (origin !== undefined) {
      let originHost: string | null = null;
      try {
        originHost = new URL(origin).host;
      } catch {
        originHost = null;
      }
      if (originHost !== req.headers.host) {
        return refuse(socket, 403, 'Forbidden', new SaegateError('SAEGATE_ERR_ADMIN_AUTH', [`origin '${origin}' is not this server's`]));
      }
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      this.clients.add(ws);
      ws.on('close', () => this.clients.delete(ws));
      ws.on('error', () => ws.terminate());
      // Viewers send nothing; anything they send is ignored (maxPayload bounds it).
      ws.send(JSON.stringify(this.hub.snapshot()));
    });
  }

  private broadcast(message: LiveMessage): void {
    if (this.clients.size === 0) return;
    const text = JSON.stringify(message);
    for (const ws of this.clients) {
      if (ws.readyState !== WebSocket.OPEN) continue;
      if (ws.bufferedAmount > this.maxBufferedBytes) {
        // Dropped from the set now: the closing handshake waits behind the backlog.
        this.clients.delete(ws);
        ws.close(1013, 'viewer too slow; reconnect for a fresh snapshot');
        continue;
      }
      ws.send(text);
    }
  }

  /** Stops the timers, detaches and closes every viewer (1001). */
  close(): void {
    for (const timer of this.timers.splice(0)) clearInterval(timer);
    this.offHub?.();
    this.offHub = null;
    this.detach?.();
    this.detach = null;
    for (const ws of this.clients) {
      ws.close(1001, 'saegate is shutting down');
      // Upgraded sockets keep the HTTP server from closing: a viewer that does not answer the
      // close frame within a second is cut.
      setTimeout(() => ws.terminate(), 1000).unref();
    }
    this.clients.clear();
    this.wss.close();
  }
}

function refuse(socket: Duplex, status: number, statusText: string, error: SaegateError): void {
  const body = JSON.stringify(error.toJSON());
  socket.on('error', () => socket.destroy());
  socket.once('finish', () => socket.destroy());
  socket.end(
    `HTTP/1.1 ${status} ${statusText}\r\nConnection: close\r\nContent-Type: application/json\r\n${status === 401 ? 'WWW-Authenticate: Bearer\r\n' : ''}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}
