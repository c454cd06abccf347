/**
 * TapClient: the model-server end of the tap protocol (docs/tap-protocol.md). It connects to
 * saegate, says hello, and from then on streams activation rows, tokens and request ends up while
 * taking subscriptions, steering vectors and plans down.
 *
 * This class is the composition; each concern lives in its own part:
 * - `ClientConnection` (client-connection.ts): connect, hello, welcome, reconnect with the
 *   jittered exponential backoff of `ReconnectBackoff` (backoff.ts), whenever the connection ends,
 *   until `close()`;
 * - `SendQueue` (send-queue.ts): flow control. Every send is synchronous and bounded, because the
 *   decode loop of a model server must never wait for saegate; rows over budget are dropped and
 *   reported, control messages wait for the next welcome;
 * - `VectorStore` (vector-store.ts): the vectors saegate sent on this connection, by content hash;
 * - `PlanBook` (plan-book.ts): plans per plan id until the HTTP request naming them takes them.
 * What is left here is the meaning of each message from saegate and the public API.
 */
import { EventEmitter } from 'node:events';
import type WebSocket from 'ws';
import { err } from '../common/errors.js';
import { encodeTokensFrame, type TokenEntries } from './builders.js';
import { ReconnectBackoff, type TapReconnectOptions } from './backoff.js';
import { ClientConnection } from './client-connection.js';
import { encodeMessage, type ActivationData } from './codec.js';
import { assertLittleEndianHost } from './layout.js';
import { silentLogger, type TapLogger } from './logger.js';
import { SUPPORTED_PROTOCOL_VERSIONS, type HelloInfo, type Plan, type PlanAck, type PlanUpdate, type RequestEnd, type Subscription, type TapMessage } from './messages.js';
import { PlanBook, type PlanWaitOptions, type ResolvedPlan, type ResolvedPlanEntry } from './plan-book.js';
import { SendQueue, type SendQueueStats } from './send-queue.js';
import { describeError, TapCloseCode } from './socket.js';
import { VectorStore } from './vector-store.js';

export type { TapReconnectOptions } from './backoff.js';
export type { ResolvedPlan, ResolvedPlanEntry } from './plan-book.js';
export type { TapDropReason } from './send-queue.js';

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
  /** Uniform numbers in [0, 1) for the reconnect jitter. Default `Math.random`; tests pass a seeded one. */
  random?: () => number;
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
  positions: ArrayLike<number>;
  /**
   * rows × dModel values, row-major: a Float32Array of f32 values or a Uint16Array of f16 bit
   * patterns, or consecutive parts of them (rows of several steps, copied straight into the frame).
   * Converted to the subscribed dtype while the frame is built.
   */
  data: ActivationData;
}


export interface TapClientStats extends SendQueueStats {
  /** Vectors discarded because their id did not match their content or their length was not dModel. */
  vectorsRejected: number;
  /** Handshakes completed (welcome received). */
  connects: number;
  /** Connection attempts that ended before a welcome. */
  connectFailures: number;
  /**
   * Writes to the socket: one per `batch()` that sent anything (its frames leave together), one
   * per frame sent outside a batch, one for what was queued while disconnected (sent at the
   * welcome). The hello is not counted. Each costs a system call and, on loopback, the receiver's
   * TCP work and wakeup, so it is what the tap's cost to a fast model server scales with.
   */
  writes: number;
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

const MiB = 1024 * 1024;

function positiveNumber(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0) throw err('SAEGATE_ERR_TAP_ARGUMENT', `${name} must be a positive number, got ${value}`);
  return value;
}

/** The model-server side of the tap. Call `start()` to connect; `close()` to stop for good. */
export class TapClient extends EventEmitter<TapClientEvents> {
  private readonly url: string;
  private readonly hello: HelloInfo;
  private readonly helloFrame: Uint8Array;
  private readonly hookIndexByName: Map<string, number>;
  private readonly autoAckPlans: boolean;
  /** Inside batch(): frames leave together, counted as one write. */
  private batching = false;
  private writes = 0;
  private readonly logger: TapLogger;
  private readonly connection: ClientConnection;
  private readonly queue: SendQueue;
  private readonly vectors: VectorStore;
  // Plans live across reconnects: a request admitted during an outage still wants its plan.
  private readonly plans: PlanBook;
  private started = false;

  // Per-connection state, reset when a connection ends.
  private sessionIdValue: string | null = null;
  private sub: Subscription | null = null;
  private readonly subscribedHooks = new Set<string>();

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
    this.hello = options.hello;
    // Encoding validates the hello against the schema once, here, instead of failing at connect time.
    this.helloFrame = encodeMessage({ type: 'hello', protocolVersions: [...SUPPORTED_PROTOCOL_VERSIONS], ...options.hello });
    this.hookIndexByName = new Map(options.hello.hookPoints.map((hook, i) => [hook, i]));
    const initialDelayMs = positiveNumber(options.reconnect?.initialDelayMs, 100, 'reconnect.initialDelayMs');
    const maxDelayMs = positiveNumber(options.reconnect?.maxDelayMs, 5000, 'reconnect.maxDelayMs');
    this.autoAckPlans = options.autoAckPlans ?? true;
    this.logger = options.logger ?? silentLogger;
    this.queue = new SendQueue(positiveNumber(options.maxQueueBytes, 64 * MiB, 'maxQueueBytes'));
    this.vectors = new VectorStore(options.hello.dModel);
    this.plans = new PlanBook({
      maxPlans: positiveNumber(options.maxPendingPlans, 1024, 'maxPendingPlans'),
      ttlMs: positiveNumber(options.pendingPlanTtlMs, 60_000, 'pendingPlanTtlMs'),
    });
    this.connection = new ClientConnection({
      url: options.url,
      token: options.token,
      handshakeTimeoutMs: positiveNumber(options.handshakeTimeoutMs, 10_000, 'handshakeTimeoutMs'),
      maxFrameBytes: positiveNumber(options.maxFrameBytes, 64 * MiB, 'maxFrameBytes'),
      zeroMask: options.zeroMask ?? true,
      backoff: new ReconnectBackoff({ initialDelayMs, maxDelayMs, random: options.random }),
      logger: this.logger,
      handlers: {
        open: (ws) => this.queue.write(ws, this.helloFrame),
        welcome: (ws, sessionId) => this.onWelcome(ws, sessionId),
        message: (ws, msg) => this.onMessage(ws, msg),
        ended: (info) => this.onEnded(info),
      },
    });
  }

  /** True between the welcome and the end of that connection. */
  get connected(): boolean {
    return this.connection.isWelcomed;
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
    return {
      ...this.queue.stats,
      vectorsRejected: this.vectors.rejected,
      connects: this.connection.connects,
      connectFailures: this.connection.connectFailures,
      writes: this.writes,
    };
  }

  /** Bytes waiting to be sent: the socket's buffer plus the client's own queue. */
  get queuedBytes(): number {
    return this.queue.queuedBytes(this.connection.rawSocket);
  }

  /** A vector received on the current connection, by id. */
  getVector(id: string): Float32Array | undefined {
    return this.vectors.get(id);
  }

  /** Starts connecting (and reconnecting). Idempotent. */
  start(): void {
    if (this.started || this.connection.isClosing) return;
    this.started = true;
    this.connection.start();
  }

  /** Stops reconnecting, closes the socket, and rejects pending `waitForPlan` calls. */
  close(): Promise<void> {
    if (!this.connection.isClosing) {
      this.plans.close();
      this.queue.clearOutbox();
    }
    return this.connection.close();
  }

  /**
   * Streams rows of one hook point. Never blocks and never throws for flow-control reasons.
   * Returns false when the rows were not sent: not connected (counted as 'disconnected'), hook not
   * subscribed (not counted: saegate did not ask), or the queue would exceed `maxQueueBytes`
   * (counted as 'queue_full' and reported to saegate in the next frame's
   * `droppedRowsSinceLastFrame`). Throws SAEGATE_ERR_TAP_ARGUMENT for inconsistent input.
   */
  sendActivations(batch: ActivationBatch): boolean {
    const ws = this.connection.socket;
    if (ws === null) return this.queue.dropDisconnected(batch.requestIds.length);
    const sub = this.sub;
    if (sub === null || !this.subscribedHooks.has(batch.hook)) return false;
    const hookIndex = this.hookIndexByName.get(batch.hook);
    if (hookIndex === undefined) return false;
    const before = this.queue.framesSent;
    const sent = this.queue.sendRows(ws, {
      hookIndex,
      dtype: sub.dtype,
      dModel: this.hello.dModel,
      requestIds: batch.requestIds,
      positions: batch.positions,
      data: batch.data,
    });
    this.countWrite(before);
    return sent;
  }

  /** Runs `sends` (several `send…` calls) so that their frames leave in one system call. */
  batch(sends: () => void): void {
    if (this.batching) {
      sends();
      return;
    }
    const before = this.queue.framesSent;
    this.batching = true;
    try {
      this.connection.corked(sends);
    } finally {
      this.batching = false;
      if (this.queue.framesSent > before) this.writes++;
    }
  }

  /** Counts the write of frames sent since `before` outside a batch (see TapClientStats.writes). */
  private countWrite(before: number): void {
    if (!this.batching && this.queue.framesSent > before) this.writes++;
  }

  /** Sends token entries (one `tokens` message). Queued while disconnected; false only when dropped (see stats.messagesDropped). */
  sendTokens(entries: TokenEntries): boolean {
    return this.sendControl(encodeTokensFrame(entries));
  }

  /** Tells saegate a request finished, so it can release the request's state. */
  sendEnd(end: RequestEnd): boolean {
    this.plans.forgetRequest(end.requestId);
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
  waitForPlan(planId: string, options: PlanWaitOptions = {}): Promise<ResolvedPlan> {
    return this.plans.wait(planId, options);
  }

  // -------------------------------------------------------------------------------------------
  // Connection events

  private onWelcome(ws: WebSocket, sessionId: string): void {
    this.sessionIdValue = sessionId;
    // What was produced while disconnected goes first, in order, before anything new: one write.
    this.batch(() => this.queue.flushOutbox(ws));
    this.logger.info({ url: this.url, sessionId }, 'tap: connected');
    this.emitSafely('connected', { sessionId });
  }

  private onEnded({ welcomed, code, reason }: { welcomed: boolean; code: number; reason: string }): void {
    this.sessionIdValue = null;
    this.sub = null;
    this.subscribedHooks.clear();
    // saegate tracks which vectors a connection holds; a new connection starts from none.
    this.vectors.clear();
    this.queue.connectionEnded();
    if (welcomed) {
      this.logger.info({ url: this.url, code, reason }, 'tap: disconnected');
      this.emitSafely('disconnected', { code, reason });
    }
  }

  private onMessage(ws: WebSocket, msg: TapMessage): void {
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
        this.connection.fail(ws, 'SAEGATE_ERR_TAP_FRAME', `unexpected '${msg.type}' after welcome`, TapCloseCode.protocolError);
    }
  }

  private onSubscribe(ws: WebSocket, sub: Subscription): void {
    const unknown = sub.hooks.filter((h) => !this.hookIndexByName.has(h));
    if (unknown.length > 0) {
      this.connection.fail(ws, 'SAEGATE_ERR_TAP_FRAME', `subscribe names unknown hook points: ${unknown.join(', ')}`, TapCloseCode.protocolError);
      return;
    }
    this.sub = { hooks: [...sub.hooks], dtype: sub.dtype, includePrompt: sub.includePrompt, ...(sub.maxDelayMs !== undefined && { maxDelayMs: sub.maxDelayMs }) };
    this.subscribedHooks.clear();
    for (const h of sub.hooks) this.subscribedHooks.add(h);
    this.emitSafely('subscribe', this.sub);
  }

  private onVector(id: string, values: Float32Array): void {
    const stored = this.vectors.accept(id, values);
    if (stored === null) {
      this.logger.warn({ url: this.url, vectorId: id, length: values.length }, 'tap: rejected a vector whose id or length does not match its content');
      return;
    }
    this.emitSafely('vector', { id, values: stored });
  }

  /** Looks up a plan's vectors and checks its hooks; a string says why it cannot be applied. */
  private resolvePlan(plan: Plan | PlanUpdate): ResolvedPlan | string {
    if (!this.hello.canSteer) return 'this model server cannot steer';
    const entries: ResolvedPlanEntry[] = [];
    for (const entry of plan.entries) {
      if (!this.hookIndexByName.has(entry.hook)) return `unknown hook '${entry.hook}'`;
      const vector = this.vectors.get(entry.vectorId);
      if (vector === undefined) return `unknown vector id '${entry.vectorId}'`;
      entries.push({ ...entry, vector });
    }
    return { requestId: plan.requestId, planId: plan.planId, entries, ...('maxDelayMs' in plan && plan.maxDelayMs !== undefined && { maxDelayMs: plan.maxDelayMs }) };
  }

  private onPlan(type: 'plan' | 'plan_update', plan: Plan | PlanUpdate): void {
    const resolved = this.resolvePlan(plan);
    if (typeof resolved === 'string') {
      this.logger.warn({ requestId: plan.requestId, planId: plan.planId, reason: resolved }, `tap: rejected ${type}`);
      this.sendPlanAck({ requestId: plan.requestId, planId: plan.planId, accepted: false, reason: resolved });
      if (type === 'plan') this.plans.offerRejection(plan.planId, plan.requestId, resolved);
      return;
    }
    // One write: whatever a listener sends while taking the plan (a model server flushes the tokens
    // of the steps it finished before the update), then the ack.
    this.batch(() => {
      if (type === 'plan') {
        this.plans.offer(resolved);
        this.emitSafely('plan', resolved);
      } else {
        this.plans.update(resolved);
        this.emitSafely('planUpdate', resolved);
      }
      if (this.autoAckPlans) this.sendPlanAck({ requestId: plan.requestId, planId: plan.planId, accepted: true });
    });
  }

  // -------------------------------------------------------------------------------------------
  // Sending

  private sendControl(frame: Uint8Array): boolean {
    if (this.connection.isClosing) {
      this.queue.dropControl();
      return false;
    }
    const before = this.queue.framesSent;
    const sent = this.queue.sendControl(this.connection.socket, frame);
    this.countWrite(before);
    return sent;
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
