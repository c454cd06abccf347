/**
 * TapServer: saegate's end of the tap protocol (docs/tap-protocol.md). Model servers connect to
 * `GET /v1/tap`; after a `hello`/`welcome` handshake each becomes a TapConnection that streams
 * activations, tokens and request ends up, and takes subscriptions, vectors and plans down.
 *
 * Built on `ws` in noServer mode so the HTTP server (fastify or plain node:http) keeps owning the
 * port and routes upgrades here. A connection that sends something malformed gets an `error`
 * frame and a close, and is counted; it never affects the other connections or the process.
 */
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import diagnostics from 'node:diagnostics_channel';
import { EventEmitter } from 'node:events';
import type { IncomingMessage, Server as HttpServer } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { Duplex } from 'node:stream';
import WebSocket, { WebSocketServer } from 'ws';
import { TAP_FRAME_CHANNEL } from '../common/diagnostics.js';
import { err, SaegateError } from '../common/errors.js';
import { KeyedWaiters } from '../common/keyed-waiters.js';
import { fromWsError } from '../common/errors-ws.js';
import { decodeMessage, encodeMessage, vectorId } from './codec.js';
import { assertLittleEndianHost } from './layout.js';
import { silentLogger, type TapLogger } from './logger.js';
import {
  SERVER_TO_GATE,
  SUPPORTED_PROTOCOL_VERSIONS,
  type ActivationsMessage,
  type Hello,
  type Plan,
  type PlanAck,
  type PlanUpdate,
  type RequestEnd,
  type Subscription,
  type TapErrorBody,
  type TapMessage,
  type TokensMessage,
} from './messages.js';
import { describeError, rawToBytes, sendErrorAndClose, TapCloseCode } from './socket.js';

const MiB = 1024 * 1024;

export interface TapServerOptions {
  /** Bearer token model servers must present on the upgrade; a mismatch is refused with HTTP 401. Default none (no auth). */
  token?: string;
  /** Largest frame accepted, in bytes; bigger ones close the connection with 1009. Default 256 MiB. */
  maxFrameBytes?: number;
  /** Time a new connection has to send its hello, in ms. Default 10000. */
  helloTimeoutMs?: number;
  /** Ping interval, in ms; a connection that has not answered the previous ping is terminated. 0 disables. Default 30000. */
  heartbeatIntervalMs?: number;
  /** pino-compatible logger. Default silent. */
  logger?: TapLogger;
  /** Called for each connection once its handshake is done (same as `onConnection()`). */
  onConnection?: (connection: TapConnection) => void;
}

export interface TapServerStats {
  connections: { current: number; total: number };
  /** Frames decoded successfully after the handshake (hello included). */
  framesReceived: number;
  /** Activation rows received. */
  rowsReceived: number;
  /** Bytes of successfully decoded frames. */
  bytesReceived: number;
  /** Frames that did not decode, text frames, oversized frames, frames inconsistent with the hello. */
  malformedFrames: number;
  /** Well-formed messages at the wrong time or in the wrong direction, no version overlap, no hello in time. */
  protocolErrors: number;
  /** Sum of `droppedRowsSinceLastFrame` reported by clients. */
  rowsDroppedReported: number;
  /** Upgrades refused for a missing or wrong bearer token. */
  authFailures: number;
}

/** Per-connection counters. */
export interface TapConnectionStats {
  framesReceived: number;
  rowsReceived: number;
  bytesReceived: number;
  rowsDroppedReported: number;
}

/** An activations frame as a connection emits it: the decoded message plus its hook name and row count. */
export type ActivationsFrame = ActivationsMessage & {
  /** The hook point name (`hello.hookPoints[hookIndex]`). */
  hook: string;
  rowCount: number;
};

/** `saegate:tap:frame` (src/common/diagnostics.ts): a connection received an activations frame. */
export interface TapFrameEvent {
  /** The connection's session id. */
  sessionId: string;
  hook: string;
  dtype: 'f32' | 'f16';
  dModel: number;
  rowCount: number;
  /** Entries in the frame's request table. */
  requestCount: number;
  /** Size of the frame on the wire. */
  byteLength: number;
  droppedRowsSinceLastFrame: number;
  /** The frame as listeners get it; its arrays may be views into the socket's bytes (copy what you keep). */
  frame: ActivationsFrame;
}

const tapFrameChannel = diagnostics.channel(TAP_FRAME_CHANNEL);

export interface TapConnectionEvents {
  activations: [frame: ActivationsFrame];
  tokens: [tokens: TokensMessage];
  end: [end: RequestEnd];
  planAck: [ack: PlanAck];
  /** The model server sent an `error` message (it closes next). */
  peerError: [error: TapErrorBody];
  close: [info: { code: number; reason: string }];
}

/** What a connection shares with its server. */
interface ServerContext {
  readonly stats: TapServerStats;
  readonly logger: TapLogger;
  onClosed(connection: TapConnection): void;
}

/** Acks kept for `waitForPlanAck` calls that come after the ack. */
const RECENT_ACKS = 1024;
/** Plans remembered (planId -> requestId) for error messages. */
const RECENT_PLANS = 4096;

function remember<K, V>(map: Map<K, V>, key: K, value: V, limit: number): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > limit) {
    const oldest = map.keys().next();
    if (oldest.done !== true) map.delete(oldest.value);
  }
}

/** One model-server process connected to saegate, after the handshake. */
export class TapConnection extends EventEmitter<TapConnectionEvents> {
  /** Id saegate gave this connection in its welcome. */
  readonly sessionId: string;
  /** What the model server said it can tap and apply. */
  readonly hello: Hello;
  /** Negotiated protocol version. */
  readonly protocolVersion: number;
  readonly remoteAddress: string | undefined;

  private readonly ws: WebSocket;
  private readonly context: ServerContext;
  private readonly hookIndex: Map<string, number>;
  private readonly heldVectors = new Set<string>();
  private readonly recentAcks = new Map<string, PlanAck>();
  private readonly sentPlans = new Map<string, string>();
  private readonly ackWaiters = new KeyedWaiters<string, PlanAck>();
  private sub: Subscription | null = null;
  private isOpen = true;
  private readonly counters: TapConnectionStats = { framesReceived: 0, rowsReceived: 0, bytesReceived: 0, rowsDroppedReported: 0 };

  /** @internal Created by TapServer after a valid hello. */
  constructor(ws: WebSocket, hello: Hello, protocolVersion: number, remoteAddress: string | undefined, context: ServerContext) {
    super();
    this.sessionId = randomUUID();
    this.ws = ws;
    this.hello = hello;
    this.protocolVersion = protocolVersion;
    this.remoteAddress = remoteAddress;
    this.context = context;
    this.hookIndex = new Map(hello.hookPoints.map((h, i) => [h, i]));
    ws.on('message', (data, isBinary) => this.onMessage(data, isBinary));
    ws.on('close', (code, reason) => this.onClose(code, reason.toString('utf8')));
  }

  /** False once the socket is closing or closed. */
  get open(): boolean {
    return this.isOpen && this.ws.readyState === WebSocket.OPEN;
  }

  /** The subscription last sent, or null. */
  get subscription(): Subscription | null {
    return this.sub;
  }

  get stats(): TapConnectionStats {
    return { ...this.counters };
  }

  /** True when this connection already holds the vector `id`. */
  hasVector(id: string): boolean {
    return this.heldVectors.has(id);
  }

  /**
   * Replaces the subscription. Hooks must be among `hello.hookPoints` and the dtype among
   * `hello.dtypes`; throws SAEGATE_ERR_TAP_ARGUMENT otherwise, SAEGATE_ERR_TAP_CLOSED when closed.
   */
  subscribe(subscription: Subscription): void {
    const unknown = subscription.hooks.filter((h) => !this.hookIndex.has(h));
    if (unknown.length > 0) throw err('SAEGATE_ERR_TAP_ARGUMENT', `hook points not offered by '${this.hello.modelId}': ${unknown.join(', ')}`);
    if (!this.hello.dtypes.includes(subscription.dtype)) {
      throw err('SAEGATE_ERR_TAP_ARGUMENT', `dtype ${subscription.dtype} not offered by '${this.hello.modelId}' (${this.hello.dtypes.join(', ')})`);
    }
    this.send(encodeMessage({ type: 'subscribe', ...subscription }));
    this.sub = { ...subscription, hooks: [...subscription.hooks] };
  }

  /**
   * Makes sure the model server holds `values` and returns its id (content hash). Sends the
   * vector only the first time on this connection. Throws SAEGATE_ERR_TAP_ARGUMENT when the
   * length is not `hello.dModel`, SAEGATE_ERR_TAP_CLOSED when closed.
   */
  sendVector(values: Float32Array): string {
    if (values.length !== this.hello.dModel) {
      throw err('SAEGATE_ERR_TAP_ARGUMENT', `vector has ${values.length} values, '${this.hello.modelId}' has dModel ${this.hello.dModel}`);
    }
    const id = vectorId(values);
    if (this.heldVectors.has(id)) return id;
    this.send(encodeMessage({ type: 'vector', id, values }));
    this.heldVectors.add(id);
    return id;
  }

  /**
   * Sends a request's plan. Send it (and its vectors) before forwarding the HTTP request: the
   * socket keeps order, so the model server has it before the request arrives. Throws
   * SAEGATE_ERR_TAP_ARGUMENT when the server cannot steer, a hook is unknown, or a vector was not
   * sent on this connection; SAEGATE_ERR_TAP_CLOSED when closed.
   */
  sendPlan(plan: Plan): void {
    this.checkPlan(plan);
    this.send(encodeMessage({ type: 'plan', ...plan }));
    remember(this.sentPlans, plan.planId, plan.requestId, RECENT_PLANS);
  }

  /** Replaces a running request's entries from its next decode step; use a new planId per update. Same checks as sendPlan. */
  sendPlanUpdate(update: PlanUpdate): void {
    this.checkPlan(update);
    this.send(encodeMessage({ type: 'plan_update', ...update }));
    remember(this.sentPlans, update.planId, update.requestId, RECENT_PLANS);
  }

  /**
   * Resolves with the model server's ack for `planId` (accepted or not), even if it arrived before
   * this call. Rejects with SAEGATE_ERR_PLAN_TIMEOUT after `timeoutMs` (default 2000 ms) and with
   * SAEGATE_ERR_TAP_CLOSED if the connection closes first.
   */
  waitForPlanAck(planId: string, timeoutMs = 2000): Promise<PlanAck> {
    const known = this.recentAcks.get(planId);
    if (known !== undefined) return Promise.resolve(known);
    if (!this.isOpen) return Promise.reject(err('SAEGATE_ERR_TAP_CLOSED', `connection ${this.sessionId} is closed`));
    return this.ackWaiters.wait(planId, {
      timeoutMs,
      timeoutError: () => new SaegateError('SAEGATE_ERR_PLAN_TIMEOUT', [planId, this.sentPlans.get(planId) ?? '?', timeoutMs]),
    });
  }

  /** Closes the connection (the model server will reconnect unless it is shutting down). */
  close(code: number = TapCloseCode.normal, reason = ''): void {
    this.isOpen = false;
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.close(code, reason);
  }

  /** Forcibly drops the socket without a closing handshake. */
  terminate(): void {
    this.isOpen = false;
    this.ws.terminate();
  }

  private checkPlan(plan: Plan): void {
    if (!this.hello.canSteer) throw err('SAEGATE_ERR_TAP_ARGUMENT', `'${this.hello.modelId}' cannot steer`);
    for (const entry of plan.entries) {
      if (!this.hookIndex.has(entry.hook)) throw err('SAEGATE_ERR_TAP_ARGUMENT', `plan ${plan.planId}: unknown hook point '${entry.hook}'`);
      if (!this.heldVectors.has(entry.vectorId)) {
        throw err('SAEGATE_ERR_TAP_ARGUMENT', `plan ${plan.planId}: vector ${entry.vectorId} was not sent on this connection (sendVector first)`);
      }
    }
  }

  private send(frame: Uint8Array): void {
    if (!this.open) throw err('SAEGATE_ERR_TAP_CLOSED', `connection ${this.sessionId} is closed`);
    this.ws.send(frame);
  }

  private fail(kind: 'malformed' | 'protocol', message: string, closeCode: number): void {
    if (kind === 'malformed') this.context.stats.malformedFrames++;
    else this.context.stats.protocolErrors++;
    this.context.logger.warn({ sessionId: this.sessionId, modelId: this.hello.modelId, reason: message }, `tap: ${kind} frame, closing the connection`);
    this.isOpen = false;
    sendErrorAndClose(this.ws, 'SAEGATE_ERR_TAP_FRAME', message, closeCode);
  }

  private onMessage(data: WebSocket.RawData, isBinary: boolean): void {
    // Frames that were already in flight when we gave up on the connection are ignored.
    if (!this.isOpen) return;
    if (!isBinary) {
      this.fail('malformed', 'text frames are not part of the tap protocol', TapCloseCode.unsupportedData);
      return;
    }
    const bytes = rawToBytes(data);
    let msg: TapMessage;
    try {
      msg = decodeMessage(bytes);
    } catch (e) {
      this.fail('malformed', describeError(e), TapCloseCode.invalidPayload);
      return;
    }
    if (!SERVER_TO_GATE.has(msg.type) || msg.type === 'hello') {
      this.fail('protocol', `'${msg.type}' is not expected from a model server after the handshake`, TapCloseCode.protocolError);
      return;
    }
    if (msg.type === 'activations') {
      const hook = this.hello.hookPoints[msg.hookIndex];
      if (hook === undefined) {
        this.fail('malformed', `hook index ${msg.hookIndex} is outside the hello's ${this.hello.hookPoints.length} hook points`, TapCloseCode.invalidPayload);
        return;
      }
      if (msg.dModel !== this.hello.dModel) {
        this.fail('malformed', `activations with dModel ${msg.dModel}, hello said ${this.hello.dModel}`, TapCloseCode.invalidPayload);
        return;
      }
      const rowCount = msg.positions.length;
      this.count(bytes.byteLength, rowCount, msg.droppedRowsSinceLastFrame);
      const frame: ActivationsFrame = { ...msg, hook, rowCount };
      if (tapFrameChannel.hasSubscribers) {
        tapFrameChannel.publish({
          sessionId: this.sessionId,
          hook,
          dtype: msg.dtype,
          dModel: msg.dModel,
          rowCount,
          requestCount: msg.requestIds.length,
          byteLength: bytes.byteLength,
          droppedRowsSinceLastFrame: msg.droppedRowsSinceLastFrame,
          frame,
        } satisfies TapFrameEvent);
      }
      this.emitSafely('activations', frame);
      return;
    }
    this.count(bytes.byteLength, 0, 0);
    switch (msg.type) {
      case 'tokens':
        this.emitSafely('tokens', msg);
        return;
      case 'end': {
        const { type: _type, ...end } = msg;
        this.emitSafely('end', end);
        return;
      }
      case 'plan_ack': {
        const { type: _type, ...ack } = msg;
        remember(this.recentAcks, ack.planId, ack, RECENT_ACKS);
        this.ackWaiters.resolve(ack.planId, ack);
        this.emitSafely('planAck', ack);
        return;
      }
      case 'error': {
        const { type: _type, ...body } = msg;
        this.context.logger.warn({ sessionId: this.sessionId, code: body.code, message: body.message }, 'tap: model server reported an error');
        this.emitSafely('peerError', body);
        return;
      }
    }
  }

  private count(bytes: number, rows: number, dropped: number): void {
    const stats = this.context.stats;
    stats.framesReceived++;
    stats.bytesReceived += bytes;
    stats.rowsReceived += rows;
    stats.rowsDroppedReported += dropped;
    this.counters.framesReceived++;
    this.counters.bytesReceived += bytes;
    this.counters.rowsReceived += rows;
    this.counters.rowsDroppedReported += dropped;
  }

  private onClose(code: number, reason: string): void {
    this.isOpen = false;
    const closed = err('SAEGATE_ERR_TAP_CLOSED', `connection ${this.sessionId} closed (${code})`);
    this.ackWaiters.close(closed);
    this.context.onClosed(this);
    this.emitSafely('close', { code, reason });
  }

  private emitSafely<K extends keyof TapConnectionEvents>(event: K, ...args: TapConnectionEvents[K]): void {
    try {
      (this.emit as (event: K, ...args: TapConnectionEvents[K]) => boolean)(event, ...args);
    } catch (e) {
      // A listener's bug must not take the protocol handling (or the process) down with it.
      this.context.logger.warn({ sessionId: this.sessionId, event, err: describeError(e) }, 'tap: event listener threw');
    }
  }
}

export interface TapServerEvents {
  connection: [connection: TapConnection];
}

/** Constant-time comparison of an Authorization header against the expected token's digest. */
function bearerMatches(header: string | undefined, expectedDigest: Buffer): boolean {
  if (header === undefined) return false;
  const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
  if (match === null) return false;
  // Hash both sides so timingSafeEqual gets equal lengths and the token length does not leak.
  return timingSafeEqual(createHash('sha256').update(match[1]).digest(), expectedDigest);
}

/** Answers an upgrade request with a plain HTTP error and closes the socket. */
function refuseUpgrade(socket: Duplex, status: number, statusText: string, error: SaegateError | null): void {
  const body = error === null ? '' : JSON.stringify(error.toJSON());
  const headers = [
    `HTTP/1.1 ${status} ${statusText}`,
    'Connection: close',
    ...(status === 401 ? ['WWW-Authenticate: Bearer'] : []),
    ...(body === '' ? [] : ['Content-Type: application/json']),
    `Content-Length: ${Buffer.byteLength(body)}`,
  ];
  socket.on('error', () => socket.destroy());
  socket.once('finish', () => socket.destroy());
  socket.end(`${headers.join('\r\n')}\r\n\r\n${body}`);
}

/** saegate's tap endpoint. Route `GET /v1/tap` upgrades to `handleUpgrade`, or call `attach`. */
export class TapServer extends EventEmitter<TapServerEvents> {
  private readonly wss: WebSocketServer;
  private readonly tokenDigest: Buffer | null;
  private readonly helloTimeoutMs: number;
  private readonly heartbeatIntervalMs: number;
  private readonly logger: TapLogger;
  /** Every accepted socket, handshake done or not, with its heartbeat flag. */
  private readonly sockets = new Map<WebSocket, { alive: boolean }>();
  private readonly live = new Set<TapConnection>();
  private readonly detachers: (() => void)[] = [];
  private heartbeat: NodeJS.Timeout | null = null;
  private closing = false;
  private readonly counters: TapServerStats = {
    connections: { current: 0, total: 0 },
    framesReceived: 0,
    rowsReceived: 0,
    bytesReceived: 0,
    malformedFrames: 0,
    protocolErrors: 0,
    rowsDroppedReported: 0,
    authFailures: 0,
  };
  private readonly context: ServerContext;

  constructor(options: TapServerOptions = {}) {
    super();
    assertLittleEndianHost();
    const maxFrameBytes = options.maxFrameBytes ?? 256 * MiB;
    if (!Number.isInteger(maxFrameBytes) || maxFrameBytes < 64) throw err('SAEGATE_ERR_TAP_ARGUMENT', `maxFrameBytes must be an integer >= 64, got ${maxFrameBytes}`);
    if (options.token !== undefined && options.token.length === 0) throw err('SAEGATE_ERR_TAP_ARGUMENT', 'token must not be empty (omit it to disable auth)');
    this.tokenDigest = options.token === undefined ? null : createHash('sha256').update(options.token).digest();
    this.helloTimeoutMs = options.helloTimeoutMs ?? 10_000;
    this.heartbeatIntervalMs = options.heartbeatIntervalMs ?? 30_000;
    this.logger = options.logger ?? silentLogger;
    this.wss = new WebSocketServer({ noServer: true, maxPayload: maxFrameBytes, perMessageDeflate: false, clientTracking: false });
    if (options.onConnection !== undefined) this.on('connection', options.onConnection);
    const live = this.live;
    const stats = this.counters;
    this.context = {
      stats,
      logger: this.logger,
      onClosed: (connection) => {
        if (live.delete(connection)) stats.connections.current--;
      },
    };
  }

  /** A snapshot of the server-wide counters. */
  get stats(): TapServerStats {
    return { ...this.counters, connections: { ...this.counters.connections } };
  }

  /** Connections past the handshake, in connection order. */
  get connections(): TapConnection[] {
    return [...this.live];
  }

  /** Adds a listener for connections past the handshake; returns a function that removes it. */
  onConnection(listener: (connection: TapConnection) => void): () => void {
    this.on('connection', listener);
    return () => this.off('connection', listener);
  }

  /** Resolves with the next connection to complete its handshake. */
  nextConnection(): Promise<TapConnection> {
    return new Promise((resolve) => this.once('connection', resolve));
  }

  /**
   * Takes over an HTTP upgrade request for the tap endpoint (the caller has matched the path).
   * Refuses with 401 when a token is configured and the request does not carry it, 503 after close().
   */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    if (this.closing) {
      refuseUpgrade(socket, 503, 'Service Unavailable', err('SAEGATE_ERR_SHUTTING_DOWN'));
      return;
    }
    if (this.tokenDigest !== null && !bearerMatches(req.headers.authorization, this.tokenDigest)) {
      this.counters.authFailures++;
      this.logger.warn({ remoteAddress: req.socket.remoteAddress }, 'tap: refused an upgrade without the right bearer token');
      refuseUpgrade(socket, 401, 'Unauthorized', err('SAEGATE_ERR_TAP_AUTH', 'missing or wrong bearer token'));
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.accept(ws, req.socket.remoteAddress));
  }

  /**
   * Routes upgrades for `path` (default `/v1/tap`) on `server` to this TapServer. Upgrades for
   * other paths are left to other listeners, or refused with 404 when there is none.
   * Returns a function that detaches.
   */
  attach(server: HttpServer | HttpsServer, path = '/v1/tap'): () => void {
    const listener = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
      let pathname: string | null = null;
      try {
        pathname = new URL(req.url ?? '/', 'http://localhost').pathname;
      } catch {
        pathname = null;
      }
      if (pathname === path) {
        this.handleUpgrade(req, socket, head);
      } else if (server.listenerCount('upgrade') === 1) {
        refuseUpgrade(socket, 404, 'Not Found', null);
      }
    };
    server.on('upgrade', listener);
    const detach = (): void => {
      server.off('upgrade', listener);
    };
    this.detachers.push(detach);
    return detach;
  }

  /**
   * Detaches from HTTP servers, closes every connection with 1001 (going away) and resolves when
   * all sockets are closed; sockets that do not finish the closing handshake within `graceMs`
   * (default 2000) are terminated.
   */
  async close(graceMs = 2000): Promise<void> {
    this.closing = true;
    for (const detach of this.detachers.splice(0)) detach();
    if (this.heartbeat !== null) clearInterval(this.heartbeat);
    this.heartbeat = null;
    const sockets = [...this.sockets.keys()];
    await Promise.all(
      sockets.map(
        (ws) =>
          new Promise<void>((resolve) => {
            if (ws.readyState === WebSocket.CLOSED) {
              resolve();
              return;
            }
            const timer = setTimeout(() => ws.terminate(), graceMs);
            ws.once('close', () => {
              clearTimeout(timer);
              resolve();
            });
            ws.close(TapCloseCode.goingAway, 'saegate shutting down');
          }),
      ),
    );
    await new Promise<void>((resolve) => this.wss.close(() => resolve()));
  }

  private accept(ws: WebSocket, remoteAddress: string | undefined): void {
    const heartbeat = { alive: true };
    this.sockets.set(ws, heartbeat);
    this.startHeartbeat();
    ws.on('pong', () => {
      heartbeat.alive = true;
    });
    ws.on('error', (e: Error & { code?: string }) => {
      // ws reports framing violations (oversized, bad opcode, unmasked...) here and then closes
      // the socket itself with the matching code; a reset connection lands here too.
      const error = fromWsError(e);
      if (error.code === 'SAEGATE_ERR_TAP_FRAME') this.counters.malformedFrames++;
      this.logger.warn({ remoteAddress, err: describeError(e), code: error.code, wsCode: e.code }, 'tap: socket error');
    });
    ws.on('close', () => {
      this.sockets.delete(ws);
      clearTimeout(helloTimer);
    });

    const helloTimer = setTimeout(() => {
      this.counters.protocolErrors++;
      this.logger.warn({ remoteAddress, timeoutMs: this.helloTimeoutMs }, 'tap: no hello in time, closing');
      sendErrorAndClose(ws, 'SAEGATE_ERR_TAP_FRAME', `no hello within ${this.helloTimeoutMs} ms`, TapCloseCode.protocolError);
    }, this.helloTimeoutMs);

    const onFirstMessage = (data: WebSocket.RawData, isBinary: boolean): void => {
      ws.off('message', onFirstMessage);
      clearTimeout(helloTimer);
      const refuse = (kind: 'malformed' | 'protocol', code: string, message: string, closeCode: number): void => {
        if (kind === 'malformed') this.counters.malformedFrames++;
        else this.counters.protocolErrors++;
        this.logger.warn({ remoteAddress, code, reason: message }, 'tap: handshake failed, closing');
        sendErrorAndClose(ws, code, message, closeCode);
      };
      if (!isBinary) {
        refuse('malformed', 'SAEGATE_ERR_TAP_FRAME', 'text frames are not part of the tap protocol', TapCloseCode.unsupportedData);
        return;
      }
      const bytes = rawToBytes(data);
      let msg: TapMessage;
      try {
        msg = decodeMessage(bytes);
      } catch (e) {
        refuse('malformed', 'SAEGATE_ERR_TAP_FRAME', describeError(e), TapCloseCode.invalidPayload);
        return;
      }
      if (msg.type !== 'hello') {
        refuse('protocol', 'SAEGATE_ERR_TAP_FRAME', `the first message must be hello, got '${msg.type}'`, TapCloseCode.protocolError);
        return;
      }
      const version = Math.max(...msg.protocolVersions.filter((v) => SUPPORTED_PROTOCOL_VERSIONS.includes(v)), -1);
      if (version < 0) {
        refuse(
          'protocol',
          'SAEGATE_ERR_TAP_VERSION',
          err('SAEGATE_ERR_TAP_VERSION', `model server speaks ${msg.protocolVersions.join(', ')}, saegate speaks ${SUPPORTED_PROTOCOL_VERSIONS.join(', ')}`).message,
          TapCloseCode.protocolError,
        );
        return;
      }
      const { type: _type, ...hello } = msg;
      const connection = new TapConnection(ws, hello, version, remoteAddress, this.context);
      this.counters.framesReceived++;
      this.counters.bytesReceived += bytes.byteLength;
      this.counters.connections.current++;
      this.counters.connections.total++;
      this.live.add(connection);
      ws.send(encodeMessage({ type: 'welcome', protocolVersion: version, sessionId: connection.sessionId }));
      this.logger.info(
        { sessionId: connection.sessionId, modelId: hello.modelId, serverId: hello.serverId, remoteAddress, hookPoints: hello.hookPoints.length },
        'tap: model server connected',
      );
      try {
        this.emit('connection', connection);
      } catch (e) {
        this.logger.warn({ sessionId: connection.sessionId, err: describeError(e) }, 'tap: connection listener threw');
      }
    };
    ws.on('message', onFirstMessage);
  }

  private startHeartbeat(): void {
    if (this.heartbeat !== null || this.heartbeatIntervalMs <= 0) return;
    this.heartbeat = setInterval(() => {
      for (const [ws, heartbeat] of this.sockets) {
        if (!heartbeat.alive) {
          this.logger.warn({}, 'tap: connection missed a heartbeat, terminating');
          ws.terminate();
          continue;
        }
        heartbeat.alive = false;
        ws.ping();
      }
    }, this.heartbeatIntervalMs);
    this.heartbeat.unref();
  }
}
