/**
 * TapHost: saegate's side of the tap above the wire. It owns a TapServer (the `GET /v1/tap`
 * endpoint) and does four things with its connections:
 *
 * - registry: which model servers are connected, and which of them the sink admitted;
 * - subscription fan-out: one subscription, kept on every admitted connection (new ones
 *   included), each connection getting the hooks it offers and the first dtype it offers;
 * - routing: rows, tokens, ends and plan acks go to the ActivationSink with the connection they came on,
 *   and the host learns which connection serves a request from the request's first frame;
 * - steering: a request's plan (vectors first) and later `plan_update`s go down to the
 *   connections that can apply them.
 *
 * Several model-server processes may connect (one upstream behind a load balancer). Rows carry
 * their request id, so they are routed by id whichever connection they come on. Before a
 * request's first frame (a plan is sent before the request is forwarded) saegate cannot tell which
 * process the load balancer will pick, so a plan goes to every connection able to apply it and
 * the others drop it unused (docs/tap-protocol.md §5). A `plan_update` changes a request that is
 * already running, so it goes to the serving connection only, or nowhere.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingMessage, Server as HttpServer } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import type { Duplex } from 'node:stream';
import { err, SaegateError } from '../common/errors.js';
import { vectorId } from './codec.js';
import type { TapLogger } from './logger.js';
import type { PlanEntry, StreamDtype, Subscription } from './messages.js';
import { TapServer, type TapConnection, type TapServerStats } from './server.js';
import type { ActivationSink, SubscribeResult, TapSource } from './sink.js';

/** One additive steering term for a request (docs/tap-protocol.md §4.7), with the vector itself. */
export interface SteeringTerm {
  /** TransformerLens hook name, e.g. `blocks.6.hook_resid_post`. */
  hook: string;
  /**
   * d_model values; sent to a model server once per connection, then referred to by content hash.
   * Treat it as immutable and reuse the same array across requests: its hash is computed once
   * per array and cached.
   */
  vector: Float32Array;
  scale: number;
  /** First steered position (0 = first prompt token). */
  fromPosition: number;
  /** First position no longer steered; null = to the end. */
  untilPosition: number | null;
  /**
   * Count `fromPosition`/`untilPosition` from the start of the prompt (and stop at its end) or of
   * the generation, as only the model server knows the prompt's token count; absent = absolute.
   */
  span?: 'prompt' | 'generated';
}

/**
 * The subscription a host keeps on its connections. Like the protocol's `subscribe`, except that
 * `dtype` may list dtypes in order of preference: each connection gets the first it offers.
 */
export interface HostSubscription {
  hooks: readonly string[];
  dtype: StreamDtype | readonly StreamDtype[];
  includePrompt: boolean;
  /** How long a model server may hold rows, tokens and ends before sending them (the protocol's `maxDelayMs`); absent: its own interval. */
  maxDelayMs?: number;
}

/** What `planUpdate` did: sent on the serving connection, or why not (the update went nowhere). */
export type PlanUpdateResult = { delivered: true; planId: string; sessionId: string } | { delivered: false; error: SaegateError };

export interface TapHostOptions {
  /** Where rows, tokens and ends go; it may also admit or refuse connections. */
  sink: ActivationSink;
  /** Bearer token model servers must present; null or undefined = none. */
  token?: string | null;
  /** Largest frame accepted, bytes. Default 256 MiB. */
  maxFrameBytes?: number;
  /** Time a new connection has to send its hello, ms. Default 10000. */
  helloTimeoutMs?: number;
  /** Ping interval, ms; 0 disables. Default 30000. */
  heartbeatIntervalMs?: number;
  logger?: TapLogger;
}

/** One connection, for `/admin/status`. */
export interface TapConnectionSummary {
  sessionId: string;
  modelId: string;
  serverId: string | null;
  remoteAddress: string | null;
  dModel: number;
  nLayers: number;
  hookPoints: number;
  canSteer: boolean;
  subscription: Subscription | null;
  framesReceived: number;
  rowsReceived: number;
  bytesReceived: number;
  rowsDroppedReported: number;
}

/** Requests whose serving connection is remembered; the oldest go first when no `end` arrives. */
const MAX_ROUTED_REQUESTS = 65_536;

function sourceOf(connection: TapConnection): TapSource {
  return { sessionId: connection.sessionId, modelId: connection.hello.modelId, serverId: connection.hello.serverId };
}

export class TapHost {
  readonly server: TapServer;
  readonly sink: ActivationSink;
  private readonly logger: TapLogger | undefined;
  private subscription: HostSubscription | null = null;
  /** Connections the sink admitted, with their source (built once per connection). */
  private readonly admitted = new Map<TapConnection, TapSource>();
  private readonly servedBy = new Map<string, TapConnection>();
  /** Content hash per vector object, so a vector reused by many requests is hashed once. */
  private readonly vectorIds = new WeakMap<Float32Array, string>();
  private readonly planPrefix = `plan-${randomBytes(4).toString('hex')}`;
  private planSeq = 0;
  private droppedBySink = 0;

  constructor(options: TapHostOptions) {
    this.sink = options.sink;
    this.logger = options.logger;
    this.server = new TapServer({
      token: options.token ?? undefined,
      maxFrameBytes: options.maxFrameBytes,
      helloTimeoutMs: options.helloTimeoutMs,
      heartbeatIntervalMs: options.heartbeatIntervalMs,
      logger: options.logger,
      onConnection: (connection) => this.adopt(connection),
    });
  }

  /** TapServer's counters (every connection, admitted or not). */
  get stats(): TapServerStats {
    return this.server.stats;
  }

  /** Rows the sink refused so far. */
  get sinkDroppedRows(): number {
    return this.droppedBySink;
  }

  /** Open connections the sink admitted, in connection order. */
  get connections(): TapConnection[] {
    return this.server.connections.filter((connection) => this.admitted.has(connection));
  }

  /** The subscription kept on every connection, or null. */
  get currentSubscription(): HostSubscription | null {
    return this.subscription;
  }

  /** Routes upgrades for `path` (default `/v1/tap`) on `server` here; returns a function that detaches. */
  attach(server: HttpServer | HttpsServer, path?: string): () => void {
    return this.server.attach(server, path);
  }

  /** Takes over one upgrade request whose path the caller has matched (see TapServer.handleUpgrade). */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    this.server.handleUpgrade(req, socket, head);
  }

  /**
   * Subscribes every admitted connection, now and later, to `subscription`. A connection that
   * does not offer some of the hooks is subscribed to the ones it offers. Returns what happened
   * per open admitted connection.
   */
  subscribeAll(subscription: HostSubscription): SubscribeResult[] {
    const dtype = typeof subscription.dtype === 'string' ? subscription.dtype : [...subscription.dtype];
    this.subscription = { ...subscription, hooks: [...subscription.hooks], dtype };
    return this.connections.map((connection) => this.subscribe(connection, this.subscription!));
  }

  /** The connection that sent rows or tokens for `requestId`, once one has, until its end. */
  connectionFor(requestId: string): TapConnection | undefined {
    return this.servedBy.get(requestId);
  }

  /**
   * Sends a request's steering (its vectors, then its plan) to the connections that can apply
   * it: the one serving the request when known, else every admitted connection that can steer,
   * has the hooks and the vector width. Returns the plan id to forward in `x-saegate-plan-id`, or
   * null when no connection took the plan.
   */
  deliverPlan(requestId: string, steering: readonly SteeringTerm[]): string | null {
    const known = this.servedBy.get(requestId);
    const targets = known !== undefined && known.open ? [known] : this.connections;
    const planId = this.nextPlanId();
    let delivered = 0;
    for (const connection of targets) {
      if (this.cannotApply(connection, steering) !== null) continue;
      try {
        connection.sendPlan({ requestId, planId, entries: this.entries(connection, steering) });
        delivered++;
      } catch (error) {
        // The connection closed between the check and the send; the others still count.
        this.logger?.warn({ sessionId: connection.sessionId, requestId, err: (error as Error).message }, 'tap: could not send a plan');
      }
    }
    return delivered > 0 ? planId : null;
  }

  /**
   * Replaces a running request's steering from its next decode step (`plan_update`, docs/tap-protocol.md
   * §4.8), on the connection serving it. Never throws: returns the update's plan id and the
   * connection, or the reason it went nowhere: SAEGATE_ERR_TAP_UNROUTED (no row or token of the
   * request has arrived, or it ended), SAEGATE_ERR_TAP_CLOSED (its connection is gone),
   * SAEGATE_ERR_TAP_ARGUMENT (that model server cannot steer, lacks a hook or has another d_model).
   * `maxDelayMs`, when given, goes with it: from now on the request's own tap hold.
   */
  planUpdate(requestId: string, steering: readonly SteeringTerm[], maxDelayMs?: number): PlanUpdateResult {
    const connection = this.servedBy.get(requestId);
    if (connection === undefined) {
      return { delivered: false, error: err('SAEGATE_ERR_TAP_UNROUTED', requestId, 'no row or token of it has arrived, or it has ended') };
    }
    if (!connection.open) return { delivered: false, error: err('SAEGATE_ERR_TAP_CLOSED', `connection ${connection.sessionId} serving request '${requestId}' is closed`) };
    const problem = this.cannotApply(connection, steering);
    if (problem !== null) return { delivered: false, error: err('SAEGATE_ERR_TAP_ARGUMENT', `plan update for request '${requestId}': ${problem}`) };
    const planId = this.nextPlanId();
    try {
      connection.sendPlanUpdate({ requestId, planId, entries: this.entries(connection, steering), ...(maxDelayMs !== undefined && { maxDelayMs }) });
    } catch (error) {
      const reason = error instanceof SaegateError ? error : err('SAEGATE_ERR_TAP_CLOSED', (error as Error).message);
      return { delivered: false, error: reason };
    }
    return { delivered: true, planId, sessionId: connection.sessionId };
  }

  /** Admitted connections, for `/admin/status`. */
  summary(): TapConnectionSummary[] {
    return this.connections.map((c) => {
      const s = c.stats;
      return {
        sessionId: c.sessionId,
        modelId: c.hello.modelId,
        serverId: c.hello.serverId ?? null,
        remoteAddress: c.remoteAddress ?? null,
        dModel: c.hello.dModel,
        nLayers: c.hello.nLayers,
        hookPoints: c.hello.hookPoints.length,
        canSteer: c.hello.canSteer,
        subscription: c.subscription,
        framesReceived: s.framesReceived,
        rowsReceived: s.rowsReceived,
        bytesReceived: s.bytesReceived,
        rowsDroppedReported: s.rowsDroppedReported,
      };
    });
  }

  /** Closes every connection (1001) and stops accepting; see TapServer.close. */
  close(graceMs?: number): Promise<void> {
    return this.server.close(graceMs);
  }

  private adopt(connection: TapConnection): void {
    const source = sourceOf(connection);
    const sink = this.sink;
    const refusal = sink.admit?.(connection.hello, source) ?? null;
    if (refusal !== null) {
      this.logger?.warn({ sessionId: connection.sessionId, modelId: connection.hello.modelId, reason: refusal }, 'tap: connection not used');
      return;
    }
    this.admitted.set(connection, source);
    connection.on('activations', (frame) => {
      this.route(frame.requestIds, connection);
      const dropped = sink.write(frame, source);
      if (dropped > 0) this.droppedBySink += dropped;
    });
    connection.on('tokens', (message) => {
      this.route(message.requestIds, connection);
      sink.tokens?.(message, source);
    });
    if (sink.planAck) connection.on('planAck', (ack) => sink.planAck?.(ack, source));
    connection.on('end', (end) => {
      if (this.servedBy.get(end.requestId) === connection) this.servedBy.delete(end.requestId);
      sink.end?.(end, source);
    });
    connection.on('close', () => {
      this.admitted.delete(connection);
      for (const [requestId, servedBy] of this.servedBy) if (servedBy === connection) this.servedBy.delete(requestId);
      sink.disconnected?.(source);
    });
    const result = this.subscription === null ? null : this.subscribe(connection, this.subscription);
    sink.connected?.(source, result);
  }

  /** Remembers which connection serves each request of a frame; per frame, not per row. */
  private route(requestIds: readonly string[], connection: TapConnection): void {
    const servedBy = this.servedBy;
    for (let i = 0; i < requestIds.length; i++) {
      const id = requestIds[i];
      if (servedBy.get(id) === connection) continue;
      servedBy.set(id, connection);
      if (servedBy.size > MAX_ROUTED_REQUESTS) {
        const oldest = servedBy.keys().next();
        if (oldest.done !== true) servedBy.delete(oldest.value);
      }
    }
  }

  private subscribe(connection: TapConnection, subscription: HostSubscription): SubscribeResult {
    const hello = connection.hello;
    const offered = new Set(hello.hookPoints);
    const hooks = subscription.hooks.filter((h) => offered.has(h));
    const result: SubscribeResult = { sessionId: connection.sessionId, modelId: hello.modelId, hooks };
    // A single dtype is sent as asked (the connection refuses it when not offered); a preference
    // list takes the first one offered.
    const dtype = typeof subscription.dtype === 'string' ? subscription.dtype : (subscription.dtype.find((d) => hello.dtypes.includes(d)) ?? subscription.dtype[0]);
    try {
      if (dtype === undefined) throw err('SAEGATE_ERR_TAP_ARGUMENT', 'the subscription lists no dtype');
      connection.subscribe({ ...subscription, hooks, dtype });
      if (typeof subscription.dtype !== 'string') result.dtype = dtype;
    } catch (error) {
      result.hooks = [];
      result.error = (error as Error).message;
      this.logger?.warn({ sessionId: connection.sessionId, err: result.error }, 'tap: subscription not applied');
    }
    return result;
  }

  private nextPlanId(): string {
    return `${this.planPrefix}-${(++this.planSeq).toString(36)}`;
  }

  /** Null when `connection` can apply every term, else why not. */
  private cannotApply(connection: TapConnection, steering: readonly SteeringTerm[]): string | null {
    const hello = connection.hello;
    if (!connection.open) return `connection ${connection.sessionId} is closed`;
    if (!hello.canSteer) return `'${hello.modelId}' cannot steer`;
    for (const term of steering) {
      if (term.vector.length !== hello.dModel) return `a vector has ${term.vector.length} values, '${hello.modelId}' has d_model ${hello.dModel}`;
      if (!hello.hookPoints.includes(term.hook)) return `'${hello.modelId}' offers no hook point '${term.hook}'`;
      if (term.span !== undefined && hello.relativeSpans !== true) return `'${hello.modelId}' cannot steer '${term.span}' positions (its hello has no relativeSpans)`;
    }
    return null;
  }

  /** The plan entries for `connection`, sending the vectors it does not hold yet. */
  private entries(connection: TapConnection, steering: readonly SteeringTerm[]): PlanEntry[] {
    return steering.map((term) => ({
      hook: term.hook,
      vectorId: this.ensureVector(connection, term.vector),
      scale: term.scale,
      fromPosition: term.fromPosition,
      untilPosition: term.untilPosition,
      ...(term.span !== undefined && { span: term.span }),
    }));
  }

  private ensureVector(connection: TapConnection, vector: Float32Array): string {
    let id = this.vectorIds.get(vector);
    if (id === undefined) {
      id = vectorId(vector);
      this.vectorIds.set(vector, id);
    }
    return connection.hasVector(id) ? id : connection.sendVector(vector);
  }
}
