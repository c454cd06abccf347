/**
 * The tap client's connection state machine: connect, send hello, wait (bounded) for the welcome,
 * pass saegate's messages on, and when the connection ends for whatever reason (server gone, 401,
 * protocol error) schedule the next attempt with `ReconnectBackoff`, until `close()`.
 *
 * This part checks what the protocol says about any message (binary only, decodes, sent by
 * saegate, welcome first with a supported version); what a subscribe, vector or plan means is the
 * owner's business, through `ConnectionHandlers`.
 */
import type { Socket } from 'node:net';
import WebSocket from 'ws';
import { decodeMessage } from './codec.js';
import type { ReconnectBackoff } from './backoff.js';
import type { TapLogger } from './logger.js';
import { GATE_TO_SERVER, SUPPORTED_PROTOCOL_VERSIONS, type TapMessage } from './messages.js';
import { describeError, rawToBytes, sendErrorAndClose, TapCloseCode } from './socket.js';

/** What the owner of a connection does at each step. Handlers must not throw. */
export interface ConnectionHandlers {
  /** The socket opened; send the hello on it. */
  open(ws: WebSocket): void;
  /** The welcome arrived: the session is up. */
  welcome(ws: WebSocket, sessionId: string): void;
  /** A message from saegate after the welcome (not `welcome` or `error`). */
  message(ws: WebSocket, msg: TapMessage): void;
  /** The socket closed; `welcomed` tells whether the session had started. Reconnecting follows unless closing. */
  ended(info: { welcomed: boolean; code: number; reason: string }): void;
}

export interface ClientConnectionOptions {
  url: string;
  /** Bearer token for the upgrade request, or undefined. */
  token: string | undefined;
  /** Time for the upgrade plus the welcome, in ms. */
  handshakeTimeoutMs: number;
  /** Largest frame accepted from saegate, in bytes. */
  maxFrameBytes: number;
  /** Mask outgoing frames with an all-zero key (see TapClientOptions.zeroMask). */
  zeroMask: boolean;
  backoff: ReconnectBackoff;
  logger: TapLogger;
  handlers: ConnectionHandlers;
}

/** Grace for a peer that never answers our close frame, in ms, before the socket is cut. */
const CLOSE_GRACE_MS = 2000;

const zeroMask = (mask: Buffer): void => {
  mask.fill(0);
};

export class ClientConnection {
  private readonly options: ClientConnectionOptions;
  private ws: WebSocket | null = null;
  private welcomed = false;
  private closing = false;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private handshakeTimer: NodeJS.Timeout | null = null;
  private closeGraceTimer: NodeJS.Timeout | null = null;
  private closed: Promise<void> | null = null;
  private resolveClosed: (() => void) | null = null;
  private connectsCount = 0;
  private failuresCount = 0;
  /** The TCP socket under the current WebSocket, from its upgrade response. */
  private tcp: Socket | null = null;

  constructor(options: ClientConnectionOptions) {
    this.options = options;
  }

  /** The socket of a welcomed session that is still open, or null. */
  get socket(): WebSocket | null {
    const ws = this.ws;
    // A socket that is already closing counts as gone: its 'close' event just has not run yet.
    return this.welcomed && ws !== null && ws.readyState === WebSocket.OPEN ? ws : null;
  }

  /**
   * Runs `sends` with the TCP socket corked, so the frames they write leave in one `writev`
   * instead of one system call each (on loopback a write costs the sender the receiver's TCP work
   * too, about as much as encoding a frame). Runs `sends` plainly when there is no socket.
   */
  corked(sends: () => void): void {
    const tcp = this.tcp;
    if (tcp === null || tcp.destroyed) {
      sends();
      return;
    }
    tcp.cork();
    try {
      sends();
    } finally {
      tcp.uncork();
    }
  }

  /** True between the welcome and the end of that connection. */
  get isWelcomed(): boolean {
    return this.welcomed;
  }

  /** The current socket, welcomed or not (for its bufferedAmount). */
  get rawSocket(): WebSocket | null {
    return this.ws;
  }

  get isClosing(): boolean {
    return this.closing;
  }

  /** Handshakes completed (welcome received). */
  get connects(): number {
    return this.connectsCount;
  }

  /** Connection attempts that ended before a welcome. */
  get connectFailures(): number {
    return this.failuresCount;
  }

  /** First attempt; later ones follow from each close. */
  start(): void {
    if (this.closing || this.ws !== null || this.reconnectTimer !== null) return;
    this.connect();
  }

  /** Stops reconnecting and closes the socket; resolves once it is closed. Idempotent. */
  close(): Promise<void> {
    if (this.closed !== null) return this.closed;
    this.closing = true;
    this.closed = new Promise<void>((resolve) => {
      this.resolveClosed = resolve;
    });
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    const ws = this.ws;
    if (ws === null) {
      this.finishClose();
    } else {
      ws.close(TapCloseCode.normal, 'client closing');
      // A peer that never answers the close frame must not keep close() pending for ws's 30 s.
      this.closeGraceTimer = setTimeout(() => ws.terminate(), CLOSE_GRACE_MS);
      this.closeGraceTimer.unref();
    }
    return this.closed;
  }

  /** Gives up on `ws` for a protocol violation: error frame, then close (the retry follows). */
  fail(ws: WebSocket, code: string, message: string, closeCode: number): void {
    this.options.logger.warn({ url: this.options.url, code, message }, 'tap: protocol error, closing the connection');
    sendErrorAndClose(ws, code, message, closeCode);
  }

  private connect(): void {
    this.reconnectTimer = null;
    if (this.closing) return;
    const { url, token, logger } = this.options;
    let refusedStatus: number | null = null;
    const ws = new WebSocket(url, {
      headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
      // Activations are dense floats: deflate costs CPU on the decode host and saves little.
      perMessageDeflate: false,
      handshakeTimeout: this.options.handshakeTimeoutMs,
      maxPayload: this.options.maxFrameBytes,
      ...(this.options.zeroMask ? { generateMask: zeroMask } : {}),
    });
    this.ws = ws;
    ws.on('upgrade', (res) => {
      if (this.ws === ws) this.tcp = res.socket as Socket;
    });
    ws.on('unexpected-response', (_req, res) => {
      // The upgrade was refused (401 for a wrong token, 404 for a wrong path...). Note the status
      // for the log and abandon the attempt; 'close' then schedules the retry.
      refusedStatus = res.statusCode ?? 0;
      res.resume();
      ws.terminate();
    });
    ws.on('open', () => {
      this.options.handlers.open(ws);
      this.handshakeTimer = setTimeout(() => {
        logger.warn({ url, timeoutMs: this.options.handshakeTimeoutMs }, 'tap: no welcome in time, reconnecting');
        ws.terminate();
      }, this.options.handshakeTimeoutMs);
    });
    ws.on('message', (data, isBinary) => this.onMessage(ws, data, isBinary));
    ws.on('error', (e) => {
      // close() on a connecting socket aborts the handshake with an error nobody needs to see.
      if (this.closing) return;
      if (refusedStatus !== null) {
        logger.warn(
          { url, status: refusedStatus, code: refusedStatus === 401 ? 'SAEGATE_ERR_TAP_AUTH' : undefined },
          refusedStatus === 401 ? 'tap: saegate refused the bearer token, will retry' : 'tap: saegate refused the upgrade, will retry',
        );
      } else {
        logger.warn({ url, err: describeError(e) }, 'tap: socket error');
      }
    });
    ws.on('close', (code, reason) => this.onClose(ws, code, reason.toString('utf8')));
  }

  private onClose(ws: WebSocket, code: number, reason: string): void {
    if (this.ws !== ws) return;
    this.ws = null;
    this.tcp = null;
    this.clearHandshakeTimer();
    const welcomed = this.welcomed;
    this.welcomed = false;
    if (!welcomed) this.failuresCount++;
    this.options.handlers.ended({ welcomed, code, reason });
    if (this.closing) {
      this.finishClose();
      return;
    }
    this.scheduleReconnect();
  }

  private finishClose(): void {
    if (this.closeGraceTimer !== null) clearTimeout(this.closeGraceTimer);
    this.closeGraceTimer = null;
    const resolve = this.resolveClosed;
    this.resolveClosed = null;
    resolve?.();
  }

  private scheduleReconnect(): void {
    const delay = this.options.backoff.next();
    this.options.logger.debug({ url: this.options.url, attempt: this.options.backoff.attempt, delayMs: Math.round(delay) }, 'tap: reconnect scheduled');
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
    this.reconnectTimer.unref();
  }

  private clearHandshakeTimer(): void {
    if (this.handshakeTimer !== null) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
  }

  private onMessage(ws: WebSocket, data: WebSocket.RawData, isBinary: boolean): void {
    if (this.ws !== ws || ws.readyState !== WebSocket.OPEN) return;
    if (!isBinary) {
      this.fail(ws, 'SAEGATE_ERR_TAP_FRAME', 'text frames are not part of the tap protocol', TapCloseCode.unsupportedData);
      return;
    }
    let msg: TapMessage;
    try {
      msg = decodeMessage(rawToBytes(data));
    } catch (e) {
      this.fail(ws, 'SAEGATE_ERR_TAP_FRAME', describeError(e), TapCloseCode.invalidPayload);
      return;
    }
    if (!GATE_TO_SERVER.has(msg.type)) {
      this.fail(ws, 'SAEGATE_ERR_TAP_FRAME', `'${msg.type}' is not sent by saegate`, TapCloseCode.protocolError);
      return;
    }
    if (msg.type === 'error') {
      // saegate closes after an error; the retry follows from 'close'.
      this.options.logger.warn({ url: this.options.url, code: msg.code, message: msg.message }, 'tap: saegate reported an error');
      return;
    }
    if (this.welcomed) {
      this.options.handlers.message(ws, msg);
      return;
    }
    if (msg.type !== 'welcome') {
      this.fail(ws, 'SAEGATE_ERR_TAP_FRAME', `expected welcome, got '${msg.type}'`, TapCloseCode.protocolError);
    } else if (!SUPPORTED_PROTOCOL_VERSIONS.includes(msg.protocolVersion)) {
      this.fail(ws, 'SAEGATE_ERR_TAP_VERSION', `welcome chose version ${msg.protocolVersion}`, TapCloseCode.protocolError);
    } else {
      this.clearHandshakeTimer();
      this.welcomed = true;
      this.options.backoff.reset();
      this.connectsCount++;
      this.options.handlers.welcome(ws, msg.sessionId);
    }
  }
}
