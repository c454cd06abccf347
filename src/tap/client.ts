/**
 * TapClient: the model-server end of the tap protocol (docs/tap-protocol.md). It connects to
 * saegate, says hello, and from then on streams activation rows, tokens and request ends up while
 * taking subscriptions, steering vectors and plans down.
 *
 * The decode loop of a model server must never wait for saegate, so every send here is
 * synchronous and bounded: activation frames go out only while the bytes already waiting
 * (`ws.bufferedAmount` plus the client's own pre-connection queue) leave room under
 * `maxQueueBytes`; otherwise the rows are dropped, counted, and reported in the next frame.
 * Tokens, ends and plan acks are small and carry state saegate needs, so flow control never drops
 * them; while disconnected they wait in the client's own queue (bounded by the same budget) and go
 * out after the next welcome.
 *
 * The connection is re-established with exponential backoff and jitter whenever it ends, for
 * whatever reason (server gone, 401, protocol error), until `close()`.
 */
import { EventEmitter } from 'node:events';
import WebSocket from 'ws';
import { err, SaegateError } from '../common/errors.js';
import { ActivationFrameBuilder, encodeTokensFrame, type ActivationRows, type TokenEntries } from './builders.js';
import { decodeMessage, encodeMessage, isVectorIdValid } from './codec.js';
import { assertLittleEndianHost } from './layout.js';
import { silentLogger, type TapLogger } from './logger.js';
import {
  GATE_TO_SERVER,
  SUPPORTED_PROTOCOL_VERSIONS,
  type HelloInfo,
  type Plan,
  type PlanAck,
  type PlanEntry,
  type RequestEnd,
  type Subscription,
  type TapMessage,
} from './messages.js';
import { describeError, rawToBytes, sendErrorAndClose, TapCloseCode } from './socket.js';

/** Backoff between connection attempts: min(maxDelayMs, initialDelayMs × 2^attempt), jittered. */
export interface TapReconnectOptions {
  /** Delay before the first retry, in ms. Default 100. */
  initialDelayMs?: number;
  /** Upper bound on the delay between attempts, in ms. Default 5000. */
  maxDelayMs?: number;
}

export interface TapClientOptions {
  /** saegate's tap endpoint, e.g. `ws://saegate:8080/v1/tap`. */
  url: string;
  /** Bearer token sent on the upgrade request (`Authorization: Bearer <token>`). Default none. */
  token?: string;
  /** What this server can tap and apply; `protocolVersions` is filled in by the client. */
  hello: HelloInfo;
  /**
   * Bytes that may wait to be sent (ws.bufferedAmount + the client's own queue) before activation
   * rows are dropped, in bytes. Also bounds the control messages queued while disconnected.
   * Default 64 MiB.
   */
  maxQueueBytes?: number;
  /** Reconnect backoff. Defaults: 100 ms initial, 5000 ms cap. */
  reconnect?: TapReconnectOptions;
  /** Time allowed for the upgrade plus the welcome, in ms, before the attempt is abandoned. Default 10000. */
  handshakeTimeoutMs?: number;
  /** Largest frame accepted from saegate, in bytes. Default 64 MiB. */
  maxFrameBytes?: number;
  /** Plans kept for `waitForPlan` until taken, at most. Oldest go first. Default 1024. */
  maxPendingPlans?: number;
  /** How long a received plan is kept for `waitForPlan`, in ms. Default 60000. */
  pendingPlanTtlMs?: number;
  /**
   * Acknowledge each plan and plan update (`accepted: true`) as soon as it is validated and
   * stored, so saegate learns that it landed. Set false to ack yourself with `sendPlanAck` once
   * the plan is applied. Plans that fail validation are always rejected by the client. Default true.
   */
  autoAckPlans?: boolean;
  /**
   * Mask outgoing frames with an all-zero key, which lets `ws` send activation frames without
   * copying and XOR-ing them. Masking (RFC 6455 §10.3) protects HTTP intermediaries from
   * payloads chosen by hostile browser scripts; a tap client is not a browser and its payloads are
   * not attacker-chosen, so the copy buys nothing on a sidecar link. Default true.
   */
  zeroMask?: boolean;
  /** pino-compatible logger. Default silent. */
  logger?: TapLogger;
}

/** A plan entry with its vector looked up, ready to apply. */
export interface ResolvedPlanEntry extends PlanEntry {
  /** dModel values (the vector `vectorId` names). */
  vector: Float32Array;
}

/** A plan or plan update whose vectors and hooks this client has checked. */
export interface ResolvedPlan {
  requestId: string;
  planId: string;
  entries: ResolvedPlanEntry[];
}

/**
 * Rows of one hook point to stream. Offer only hooks in `subscription.hooks`, and prompt
 * (prefill) rows only when `subscription.includePrompt` is set: the client cannot tell a prompt row
 * from a generated one, and fetching untapped hooks from the model costs the server time.
 */
export interface ActivationBatch {
  /** Hook point name, one of the hello's `hookPoints`. */
  hook: string;
  /** Request id of each row. */
  requestIds: readonly string[];
  /** Token position of each row (0 = first prompt token). */
  positions: Int32Array;
  /**
   * rows × dModel values, row-major: a Float32Array of f32 values or a Uint16Array of f16 bit
   * patterns. Converted to the subscribed dtype while the frame is built.
   */
  data: Float32Array | Uint16Array;
}

export type TapDropReason = 'queue_full' | 'disconnected';

export interface TapClientStats {
  /** Frames handed to the socket (all message types). */
  framesSent: number;
  /** Activation rows handed to the socket. */
  rowsSent: number;
  /** Bytes handed to the socket. */
  bytesSent: number;
  /** Activation rows dropped, by reason. */
  rowsDropped: Record<TapDropReason, number>;
  /** Tokens, end and plan_ack messages dropped because the client was closed or its queue was full while disconnected. */
  messagesDropped: number;
  /** Vectors discarded because their id did not match their content or their length was not dModel. */
  vectorsRejected: number;
  /** Handshakes completed (welcome received). */
  connects: number;
  /** Connection attempts that ended before a welcome. */
  connectFailures: number;
}

export interface TapClientEvents {
  /** Handshake done; activations may flow once a subscription arrives. */
  connected: [session: { sessionId: string }];
  /** A welcomed connection ended; the client is reconnecting unless closed. */
  disconnected: [info: { code: number; reason: string }];
  /** saegate replaced the subscription (empty hooks = stop streaming). */
  subscribe: [subscription: Subscription];
  /** A vector whose id matched its content; it stays available through `getVector` for this connection. */
  vector: [vector: { id: string; values: Float32Array }];
  /** A plan for a request about to be sent over HTTP (also kept for `waitForPlan`). */
  plan: [plan: ResolvedPlan];
  /** New entries for a running request, effective from its next decode step. */
  planUpdate: [update: ResolvedPlan];
}

interface PendingPlan {
  receivedAt: number;
  requestId: string;
  plan: ResolvedPlan | null;
  /** Why the client rejected it, when it did. */
  rejection: string | null;
}

interface PlanWaiter {
  resolve: (plan: ResolvedPlan) => void;
  reject: (e: Error) => void;
}

const MiB = 1024 * 1024;

function positiveNumber(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0) throw err('SAEGATE_ERR_TAP_ARGUMENT', `${name} must be a positive number, got ${value}`);
  return value;
}

const zeroMask = (mask: Buffer): void => {
  mask.fill(0);
};

/** The model-server side of the tap. Call `start()` to connect; `close()` to stop for good. */
export class TapClient extends EventEmitter<TapClientEvents> {
  private readonly url: string;
  private readonly token: string | undefined;
  private readonly hello: HelloInfo;
  private readonly helloFrame: Uint8Array;
  private readonly hookIndexByName: Map<string, number>;
  private readonly maxQueueBytes: number;
  private readonly initialDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly handshakeTimeoutMs: number;
  private readonly maxFrameBytes: number;
  private readonly maxPendingPlans: number;
  private readonly pendingPlanTtlMs: number;
  private readonly autoAckPlans: boolean;
  private readonly zeroMask: boolean;
  private readonly logger: TapLogger;
  private readonly builder = new ActivationFrameBuilder();

  private ws: WebSocket | null = null;
  private started = false;
  private closing = false;
  private ready = false;
  private attempt = 0;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private handshakeTimer: NodeJS.Timeout | null = null;
  private closed: Promise<void> | null = null;
  private resolveClosed: (() => void) | null = null;

  // Per-connection state, reset when a connection ends.
  private sessionIdValue: string | null = null;
  private sub: Subscription | null = null;
  private readonly subscribedHooks = new Set<string>();
  private readonly vectors = new Map<string, Float32Array>();
  private pendingDroppedRows = 0;

  // Control frames waiting for a welcome, in order.
  private readonly outbox: Uint8Array[] = [];
  private outboxBytes = 0;

  // Plans live across reconnects: a request admitted during an outage still wants its plan.
  private readonly pendingPlans = new Map<string, PendingPlan>();
  private readonly planWaiters = new Map<string, PlanWaiter[]>();

  private readonly counters: TapClientStats = {
    framesSent: 0,
    rowsSent: 0,
    bytesSent: 0,
    rowsDropped: { queue_full: 0, disconnected: 0 },
    messagesDropped: 0,
    vectorsRejected: 0,
    connects: 0,
    connectFailures: 0,
  };

  constructor(options: TapClientOptions) {
    super();
    assertLittleEndianHost();
    let protocol: string;
    try {
      protocol = new URL(options.url).protocol;
    } catch {
      throw err('SAEGATE_ERR_TAP_ARGUMENT', `url '${options.url}' is not a URL`);
    }
    if (protocol !== 'ws:' && protocol !== 'wss:') throw err('SAEGATE_ERR_TAP_ARGUMENT', `url '${options.url}' must be ws:// or wss://`);
    this.url = options.url;
    this.token = options.token;
    this.hello = options.hello;
    // Encoding validates the hello against the schema once, here, instead of failing at connect time.
    this.helloFrame = encodeMessage({ type: 'hello', protocolVersions: [...SUPPORTED_PROTOCOL_VERSIONS], ...options.hello });
    this.hookIndexByName = new Map(options.hello.hookPoints.map((hook, i) => [hook, i]));
    this.maxQueueBytes = positiveNumber(options.maxQueueBytes, 64 * MiB, 'maxQueueBytes');
    this.initialDelayMs = positiveNumber(options.reconnect?.initialDelayMs, 100, 'reconnect.initialDelayMs');
    this.maxDelayMs = Math.max(this.initialDelayMs, positiveNumber(options.reconnect?.maxDelayMs, 5000, 'reconnect.maxDelayMs'));
    this.handshakeTimeoutMs = positiveNumber(options.handshakeTimeoutMs, 10_000, 'handshakeTimeoutMs');
    this.maxFrameBytes = positiveNumber(options.maxFrameBytes, 64 * MiB, 'maxFrameBytes');
    this.maxPendingPlans = positiveNumber(options.maxPendingPlans, 1024, 'maxPendingPlans');
    this.pendingPlanTtlMs = positiveNumber(options.pendingPlanTtlMs, 60_000, 'pendingPlanTtlMs');
    this.autoAckPlans = options.autoAckPlans ?? true;
    this.zeroMask = options.zeroMask ?? true;
    this.logger = options.logger ?? silentLogger;
  }

  /** True between the welcome and the end of that connection. */
  get connected(): boolean {
    return this.ready;
  }

  /** Session id from the current welcome, or null while not connected. */
  get sessionId(): string | null {
    return this.sessionIdValue;
  }

  /** The current subscription, or null (none yet on this connection, or not connected). */
  get subscription(): Subscription | null {
    return this.sub;
  }

  /** A snapshot of the counters. */
  get stats(): TapClientStats {
    return { ...this.counters, rowsDropped: { ...this.counters.rowsDropped } };
  }

  /** Bytes waiting to be sent: the socket's buffer plus the client's own queue. */
  get queuedBytes(): number {
    return (this.ws?.bufferedAmount ?? 0) + this.outboxBytes;
  }

  /** A vector received on the current connection, by id. */
  getVector(id: string): Float32Array | undefined {
    return this.vectors.get(id);
  }

  /** Starts connecting (and reconnecting). Idempotent. */
  start(): void {
    if (this.started || this.closing) return;
    this.started = true;
    this.connect();
  }

  /** Stops reconnecting, closes the socket, and rejects pending `waitForPlan` calls. */
  close(): Promise<void> {
    if (this.closed !== null) return this.closed;
    this.closing = true;
    this.closed = new Promise<void>((resolve) => {
      this.resolveClosed = resolve;
    });
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    const closedError = err('SAEGATE_ERR_TAP_CLOSED', 'the tap client was closed');
    for (const waiters of this.planWaiters.values()) for (const w of waiters) w.reject(closedError);
    this.planWaiters.clear();
    this.outbox.length = 0;
    this.outboxBytes = 0;
    const ws = this.ws;
    if (ws === null) {
      this.finishClose();
    } else {
      ws.close(TapCloseCode.normal, 'client closing');
      // A peer that never answers the close frame must not keep close() pending for ws's 30 s.
      setTimeout(() => ws.terminate(), 2000).unref();
    }
    return this.closed;
  }

  /**
   * Streams rows of one hook point. Never blocks and never throws for flow-control reasons.
   * Returns false when the rows were not sent: not connected (counted as 'disconnected'), hook not
   * subscribed (not counted: saegate did not ask), or the queue would exceed `maxQueueBytes`
   * (counted as 'queue_full' and reported to saegate in the next frame's
   * `droppedRowsSinceLastFrame`). Throws SAEGATE_ERR_TAP_ARGUMENT for inconsistent input.
   */
  sendActivations(batch: ActivationBatch): boolean {
    const rowCount = batch.requestIds.length;
    const ws = this.ws;
    // A socket that is already closing counts as gone: its 'close' event just has not run yet.
    if (!this.ready || ws === null || ws.readyState !== WebSocket.OPEN) {
      this.counters.rowsDropped.disconnected += rowCount;
      return false;
    }
    const sub = this.sub;
    if (sub === null || !this.subscribedHooks.has(batch.hook)) return false;
    const hookIndex = this.hookIndexByName.get(batch.hook);
    if (hookIndex === undefined) return false;
    const rows: ActivationRows = {
      hookIndex,
      dtype: sub.dtype,
      dModel: this.hello.dModel,
      requestIds: batch.requestIds,
      positions: batch.positions,
      data: batch.data,
    };
    // Measure before building: under overload the copy and f16 conversion are skipped entirely.
    const frameBytes = this.builder.measure(rows);
    if (this.queuedBytes + frameBytes > this.maxQueueBytes) {
      this.pendingDroppedRows += rowCount;
      this.counters.rowsDropped.queue_full += rowCount;
      return false;
    }
    const frame = this.builder.build(rows, this.pendingDroppedRows);
    this.pendingDroppedRows = 0;
    this.write(ws, frame);
    this.counters.rowsSent += rowCount;
    return true;
  }

  /** Sends the tokens of a step. Queued while disconnected; false only when dropped (see stats.messagesDropped). */
  sendTokens(entries: TokenEntries): boolean {
    return this.sendControl(encodeTokensFrame(entries));
  }

  /** Tells saegate a request finished, so it can release the request's state. */
  sendEnd(end: RequestEnd): boolean {
    // The request is over: a plan nobody took for it can go.
    for (const [planId, pending] of this.pendingPlans) {
      if (pending.requestId === end.requestId) this.pendingPlans.delete(planId);
    }
    return this.sendControl(encodeMessage({ type: 'end', ...end }));
  }

  /** Acknowledges (or rejects) a plan or plan update. */
  sendPlanAck(ack: PlanAck): boolean {
    return this.sendControl(encodeMessage({ type: 'plan_ack', ...ack }));
  }

  /**
   * Resolves with the plan `planId` (the `x-saegate-plan-id` header of an incoming request) once
   * it has arrived, taking it out of the pending set. Rejects with SAEGATE_ERR_PLAN_TIMEOUT after
   * `timeoutMs` (default 2000 ms), SAEGATE_ERR_TAP_PLAN_REJECTED when the client rejected the plan,
   * SAEGATE_ERR_TAP_CLOSED on close(), or the signal's reason when `signal` aborts.
   */
  waitForPlan(planId: string, options: { requestId?: string; timeoutMs?: number; signal?: AbortSignal } = {}): Promise<ResolvedPlan> {
    const requestId = options.requestId ?? '?';
    const pending = this.pendingPlans.get(planId);
    if (pending !== undefined) {
      this.pendingPlans.delete(planId);
      if (pending.plan !== null) return Promise.resolve(pending.plan);
      return Promise.reject(err('SAEGATE_ERR_TAP_PLAN_REJECTED', planId, pending.requestId, pending.rejection ?? 'rejected'));
    }
    if (this.closing) return Promise.reject(err('SAEGATE_ERR_TAP_CLOSED', 'the tap client was closed'));
    const timeoutMs = options.timeoutMs ?? 2000;
    const signal = options.signal;
    const abortError = (): Error => (signal?.reason instanceof Error ? signal.reason : err('SAEGATE_ERR_TAP_CLOSED', `wait for plan '${planId}' aborted`));
    if (signal?.aborted) return Promise.reject(abortError());
    return new Promise<ResolvedPlan>((resolve, reject) => {
      const settle = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        const list = this.planWaiters.get(planId);
        if (list === undefined) return;
        const i = list.indexOf(waiter);
        if (i >= 0) list.splice(i, 1);
        if (list.length === 0) this.planWaiters.delete(planId);
      };
      const waiter: PlanWaiter = {
        resolve: (plan) => {
          settle();
          resolve(plan);
        },
        reject: (e) => {
          settle();
          reject(e);
        },
      };
      const onAbort = (): void => waiter.reject(abortError());
      const timer = setTimeout(() => waiter.reject(new SaegateError('SAEGATE_ERR_PLAN_TIMEOUT', [planId, requestId, timeoutMs])), timeoutMs);
      signal?.addEventListener('abort', onAbort, { once: true });
      const list = this.planWaiters.get(planId);
      if (list === undefined) this.planWaiters.set(planId, [waiter]);
      else list.push(waiter);
    });
  }

  // -------------------------------------------------------------------------------------------
  // Connection lifecycle

  private connect(): void {
    this.reconnectTimer = null;
    if (this.closing) return;
    let refusedStatus: number | null = null;
    const ws = new WebSocket(this.url, {
      headers: this.token === undefined ? {} : { authorization: `Bearer ${this.token}` },
      // Activations are dense floats: deflate costs CPU on the decode host and saves little.
      perMessageDeflate: false,
      handshakeTimeout: this.handshakeTimeoutMs,
      maxPayload: this.maxFrameBytes,
      ...(this.zeroMask ? { generateMask: zeroMask } : {}),
    });
    this.ws = ws;
    ws.on('unexpected-response', (_req, res) => {
      // The upgrade was refused (401 for a wrong token, 404 for a wrong path...). Note the status
      // for the log and abandon the attempt; 'close' then schedules the retry.
      refusedStatus = res.statusCode ?? 0;
      res.resume();
      ws.terminate();
    });
    ws.on('open', () => {
      ws.send(this.helloFrame);
      this.counters.framesSent++;
      this.counters.bytesSent += this.helloFrame.byteLength;
      this.handshakeTimer = setTimeout(() => {
        this.logger.warn({ url: this.url, timeoutMs: this.handshakeTimeoutMs }, 'tap: no welcome in time, reconnecting');
        ws.terminate();
      }, this.handshakeTimeoutMs);
    });
    ws.on('message', (data, isBinary) => this.onMessage(ws, data, isBinary));
    ws.on('error', (e) => {
      // close() on a connecting socket aborts the handshake with an error nobody needs to see.
      if (this.closing) return;
      if (refusedStatus !== null) {
        this.logger.warn(
          { url: this.url, status: refusedStatus, code: refusedStatus === 401 ? 'SAEGATE_ERR_TAP_AUTH' : undefined },
          refusedStatus === 401 ? 'tap: saegate refused the bearer token, will retry' : 'tap: saegate refused the upgrade, will retry',
        );
      } else {
        this.logger.warn({ url: this.url, err: describeError(e) }, 'tap: socket error');
      }
    });
    ws.on('close', (code, reason) => this.onClose(ws, code, reason.toString('utf8')));
  }

  private onClose(ws: WebSocket, code: number, reason: string): void {
    if (this.ws !== ws) return;
    this.ws = null;
    if (this.handshakeTimer !== null) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
    const wasReady = this.ready;
    this.ready = false;
    this.sessionIdValue = null;
    this.sub = null;
    this.subscribedHooks.clear();
    // saegate tracks which vectors a connection holds; a new connection starts from none.
    this.vectors.clear();
    // Drops from a connection that is gone mean nothing to the next session's frames.
    this.pendingDroppedRows = 0;
    if (!wasReady) this.counters.connectFailures++;
    if (wasReady) {
      this.logger.info({ url: this.url, code, reason }, 'tap: disconnected');
      this.emitSafely('disconnected', { code, reason });
    }
    if (this.closing) {
      this.finishClose();
      return;
    }
    this.scheduleReconnect();
  }

  private finishClose(): void {
    const resolve = this.resolveClosed;
    this.resolveClosed = null;
    resolve?.();
  }

  private scheduleReconnect(): void {
    const base = Math.min(this.maxDelayMs, this.initialDelayMs * 2 ** Math.min(this.attempt, 30));
    // "Equal jitter": half fixed, half random, so a fleet of servers that lost saegate together
    // does not reconnect in lockstep, yet no retry comes sooner than half the backoff.
    const delay = base / 2 + Math.random() * (base / 2);
    this.attempt++;
    this.logger.debug({ url: this.url, attempt: this.attempt, delayMs: Math.round(delay) }, 'tap: reconnect scheduled');
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
    this.reconnectTimer.unref();
  }

  // -------------------------------------------------------------------------------------------
  // Receiving

  private onMessage(ws: WebSocket, data: WebSocket.RawData, isBinary: boolean): void {
    if (this.ws !== ws || ws.readyState !== WebSocket.OPEN) return;
    if (!isBinary) {
      this.protocolFailure(ws, 'SAEGATE_ERR_TAP_FRAME', 'text frames are not part of the tap protocol', TapCloseCode.unsupportedData);
      return;
    }
    let msg: TapMessage;
    try {
      msg = decodeMessage(rawToBytes(data));
    } catch (e) {
      this.protocolFailure(ws, 'SAEGATE_ERR_TAP_FRAME', describeError(e), TapCloseCode.invalidPayload);
      return;
    }
    if (!GATE_TO_SERVER.has(msg.type)) {
      this.protocolFailure(ws, 'SAEGATE_ERR_TAP_FRAME', `'${msg.type}' is not sent by saegate`, TapCloseCode.protocolError);
      return;
    }
    if (msg.type === 'error') {
      // saegate closes after an error; the retry follows from 'close'.
      this.logger.warn({ url: this.url, code: msg.code, message: msg.message }, 'tap: saegate reported an error');
      return;
    }
    if (!this.ready) {
      if (msg.type !== 'welcome') {
        this.protocolFailure(ws, 'SAEGATE_ERR_TAP_FRAME', `expected welcome, got '${msg.type}'`, TapCloseCode.protocolError);
      } else if (!SUPPORTED_PROTOCOL_VERSIONS.includes(msg.protocolVersion)) {
        this.protocolFailure(ws, 'SAEGATE_ERR_TAP_VERSION', `welcome chose version ${msg.protocolVersion}`, TapCloseCode.protocolError);
      } else {
        this.onWelcome(ws, msg.sessionId);
      }
      return;
    }
    switch (msg.type) {
      case 'subscribe':
        this.onSubscribe(ws, msg);
        return;
      case 'vector':
        this.onVector(msg.id, msg.values);
        return;
      case 'plan':
      case 'plan_update':
        this.onPlan(msg.type, msg);
        return;
      default:
        this.protocolFailure(ws, 'SAEGATE_ERR_TAP_FRAME', `unexpected '${msg.type}' after welcome`, TapCloseCode.protocolError);
    }
  }

  private protocolFailure(ws: WebSocket, code: string, message: string, closeCode: number): void {
    this.logger.warn({ url: this.url, code, message }, 'tap: protocol error, closing the connection');
    sendErrorAndClose(ws, code, message, closeCode);
  }

  private onWelcome(ws: WebSocket, sessionId: string): void {
    if (this.handshakeTimer !== null) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
    this.ready = true;
    this.attempt = 0;
    this.sessionIdValue = sessionId;
    this.counters.connects++;
    // What was produced while disconnected goes first, in order, before anything new.
    for (const frame of this.outbox) this.write(ws, frame);
    this.outbox.length = 0;
    this.outboxBytes = 0;
    this.logger.info({ url: this.url, sessionId }, 'tap: connected');
    this.emitSafely('connected', { sessionId });
  }

  private onSubscribe(ws: WebSocket, sub: Subscription): void {
    const unknown = sub.hooks.filter((h) => !this.hookIndexByName.has(h));
    if (unknown.length > 0) {
      this.protocolFailure(ws, 'SAEGATE_ERR_TAP_FRAME', `subscribe names unknown hook points: ${unknown.join(', ')}`, TapCloseCode.protocolError);
      return;
    }
    this.sub = { hooks: [...sub.hooks], dtype: sub.dtype, includePrompt: sub.includePrompt };
    this.subscribedHooks.clear();
    for (const h of sub.hooks) this.subscribedHooks.add(h);
    this.emitSafely('subscribe', this.sub);
  }

  private onVector(id: string, values: Float32Array): void {
    if (values.length !== this.hello.dModel || !isVectorIdValid({ id, values })) {
      // Not fatal to the connection: a plan naming this id is rejected as "unknown vector", which
      // tells saegate precisely what went wrong without a reconnect loop.
      this.counters.vectorsRejected++;
      this.logger.warn({ url: this.url, vectorId: id, length: values.length }, 'tap: rejected a vector whose id or length does not match its content');
      return;
    }
    // Own the values: the decoded array may be a view of a socket buffer.
    const owned = new Float32Array(values);
    this.vectors.set(id, owned);
    this.emitSafely('vector', { id, values: owned });
  }

  private resolvePlan(plan: Plan): ResolvedPlan | string {
    if (!this.hello.canSteer) return 'this model server cannot steer';
    const entries: ResolvedPlanEntry[] = [];
    for (const entry of plan.entries) {
      if (!this.hookIndexByName.has(entry.hook)) return `unknown hook '${entry.hook}'`;
      const vector = this.vectors.get(entry.vectorId);
      if (vector === undefined) return `unknown vector id '${entry.vectorId}'`;
      entries.push({ ...entry, vector });
    }
    return { requestId: plan.requestId, planId: plan.planId, entries };
  }

  private onPlan(type: 'plan' | 'plan_update', plan: Plan): void {
    const resolved = this.resolvePlan(plan);
    if (typeof resolved === 'string') {
      this.logger.warn({ requestId: plan.requestId, planId: plan.planId, reason: resolved }, `tap: rejected ${type}`);
      this.sendPlanAck({ requestId: plan.requestId, planId: plan.planId, accepted: false, reason: resolved });
      if (type === 'plan') this.offerPlan(plan.planId, { receivedAt: Date.now(), requestId: plan.requestId, plan: null, rejection: resolved });
      return;
    }
    if (type === 'plan') {
      this.offerPlan(plan.planId, { receivedAt: Date.now(), requestId: plan.requestId, plan: resolved, rejection: null });
      this.emitSafely('plan', resolved);
    } else {
      // An update can overtake a request that has not yet taken its plan: fold it in.
      for (const pending of this.pendingPlans.values()) {
        if (pending.plan?.requestId === resolved.requestId) pending.plan.entries = resolved.entries;
      }
      this.emitSafely('planUpdate', resolved);
    }
    if (this.autoAckPlans) this.sendPlanAck({ requestId: plan.requestId, planId: plan.planId, accepted: true });
  }

  /** Hands a plan to its waiters, or keeps it (bounded in count and age) until one asks. */
  private offerPlan(planId: string, pending: PendingPlan): void {
    const waiters = this.planWaiters.get(planId);
    if (waiters !== undefined) {
      for (const w of [...waiters]) {
        if (pending.plan !== null) w.resolve(pending.plan);
        else w.reject(err('SAEGATE_ERR_TAP_PLAN_REJECTED', planId, pending.requestId, pending.rejection ?? 'rejected'));
      }
      return;
    }
    this.pendingPlans.delete(planId);
    this.pendingPlans.set(planId, pending);
    // Maps iterate in insertion order, so the oldest plans are first.
    const now = pending.receivedAt;
    for (const [id, p] of this.pendingPlans) {
      if (this.pendingPlans.size <= this.maxPendingPlans && now - p.receivedAt <= this.pendingPlanTtlMs) break;
      this.pendingPlans.delete(id);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Sending

  private write(ws: WebSocket, frame: Uint8Array): void {
    ws.send(frame);
    this.counters.framesSent++;
    this.counters.bytesSent += frame.byteLength;
  }

  private sendControl(frame: Uint8Array): boolean {
    if (this.closing) {
      this.counters.messagesDropped++;
      return false;
    }
    const ws = this.ws;
    if (this.ready && ws !== null && ws.readyState === WebSocket.OPEN) {
      this.write(ws, frame);
      return true;
    }
    if (this.outboxBytes + frame.byteLength > this.maxQueueBytes) {
      this.counters.messagesDropped++;
      return false;
    }
    this.outbox.push(frame);
    this.outboxBytes += frame.byteLength;
    return true;
  }

  private emitSafely<K extends keyof TapClientEvents>(event: K, ...args: TapClientEvents[K]): void {
    try {
      (this.emit as (event: K, ...args: TapClientEvents[K]) => boolean)(event, ...args);
    } catch (e) {
      // A listener's bug must not tear down the protocol state machine mid-message.
      this.logger.warn({ event, err: describeError(e) }, 'tap: event listener threw');
    }
  }
}
