/**
 * The proxy's side of the tap: owns the TapServer behind `GET /v1/tap`, feeds every connection's
 * rows, tokens and ends to the ActivationSink, keeps the subscription the SAE pipeline asked for
 * on every connection (new ones included), and sends requests' steering plans down.
 *
 * Several model-server processes may connect (one upstream behind a load balancer). Rows carry
 * their request id, so they are routed by id whichever connection they come on; the hub also
 * learns which connection serves a request from its first frame, so later plan updates can go to
 * that connection alone. Before that is known (a plan is sent before the request is forwarded),
 * saegate cannot tell which process the load balancer will pick, so a plan goes to every
 * connection able to apply it; the others drop it unused (docs/tap-protocol.md §5).
 */
import { randomBytes } from 'node:crypto';
import { vectorId } from '../tap/codec.js';
import type { TapLogger } from '../tap/logger.js';
import type { PlanEntry, Subscription } from '../tap/messages.js';
import { TapServer, type TapConnection, type TapServerStats } from '../tap/server.js';
import type { SteeringTerm } from './plan.js';
import type { ActivationSink, TapSource } from '../tap/sink.js';

export interface TapHubOptions {
  /** Where rows go. */
  sink: ActivationSink;
  /** Bearer token model servers must present; null = none (allowed on loopback only, see startProxy). */
  token: string | null;
  /** Largest frame accepted, bytes. Default 256 MiB. */
  maxFrameBytes?: number;
  /** Ping interval, ms; 0 disables. Default 30000. */
  heartbeatIntervalMs?: number;
  logger?: TapLogger;
}

/** What `subscribeAll` did on one connection. */
export interface SubscribeResult {
  sessionId: string;
  modelId: string;
  /** Hooks subscribed on this connection (those of the request it offers). */
  hooks: string[];
  /** Why the connection was not subscribed, when it was not. */
  error?: string;
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

export class TapHub {
  readonly server: TapServer;
  readonly sink: ActivationSink;
  private readonly logger: TapLogger | undefined;
  private subscription: Subscription | null = null;
  private readonly servedBy = new Map<string, TapConnection>();
  /** Content hash per vector object, so a vector reused by many requests is hashed once. */
  private readonly vectorIds = new WeakMap<Float32Array, string>();
  private readonly planPrefix = `plan-${randomBytes(4).toString('hex')}`;
  private planSeq = 0;
  private droppedBySink = 0;

  constructor(options: TapHubOptions) {
    this.sink = options.sink;
    this.logger = options.logger;
    this.server = new TapServer({
      token: options.token ?? undefined,
      maxFrameBytes: options.maxFrameBytes,
      heartbeatIntervalMs: options.heartbeatIntervalMs,
      logger: options.logger,
      onConnection: (connection) => this.adopt(connection),
    });
  }

  /** TapServer's counters. */
  get stats(): TapServerStats {
    return this.server.stats;
  }

  /** Rows the sink refused so far. */
  get sinkDroppedRows(): number {
    return this.droppedBySink;
  }

  /** Open connections, in connection order. */
  get connections(): TapConnection[] {
    return this.server.connections;
  }

  /** The subscription applied to every connection, or null. */
  get currentSubscription(): Subscription | null {
    return this.subscription;
  }

  /**
   * Subscribes every connection, now and later, to `subscription`. A connection that does not
   * offer some of the hooks is subscribed to the ones it offers. Returns what happened per open
   * connection.
   */
  subscribeAll(subscription: Subscription): SubscribeResult[] {
    this.subscription = { hooks: [...subscription.hooks], dtype: subscription.dtype, includePrompt: subscription.includePrompt };
    return this.server.connections.map((connection) => this.subscribe(connection, subscription));
  }

  /** The connection that sent rows or tokens for `requestId`, once one has. */
  connectionFor(requestId: string): TapConnection | undefined {
    return this.servedBy.get(requestId);
  }

  /**
   * Sends a request's steering (its vectors, then its plan) to the connections that can apply
   * it: the one serving the request when known, else every open connection that can steer, has
   * the hooks and the vector width. Returns the plan id to forward in `x-saegate-plan-id`, or
   * null when no connection took the plan.
   */
  deliverPlan(requestId: string, steering: readonly SteeringTerm[]): string | null {
    const known = this.servedBy.get(requestId);
    const targets = known !== undefined && known.open ? [known] : this.server.connections;
    const planId = `${this.planPrefix}-${(++this.planSeq).toString(36)}`;
    let delivered = 0;
    for (const connection of targets) {
      if (!this.canApply(connection, steering)) continue;
      try {
        const entries: PlanEntry[] = steering.map((term) => ({
          hook: term.hook,
          vectorId: this.ensureVector(connection, term.vector),
          scale: term.scale,
          fromPosition: term.fromPosition,
          untilPosition: term.untilPosition,
        }));
        connection.sendPlan({ requestId, planId, entries });
        delivered++;
      } catch (error) {
        // The connection closed between the check and the send; the others still count.
        this.logger?.warn({ sessionId: connection.sessionId, requestId, err: (error as Error).message }, 'tap: could not send a plan');
      }
    }
    return delivered > 0 ? planId : null;
  }

  /** Connections for `/admin/status`. */
  summary(): TapConnectionSummary[] {
    return this.server.connections.map((c) => {
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
    const source: TapSource = { sessionId: connection.sessionId, modelId: connection.hello.modelId, serverId: connection.hello.serverId };
    const sink = this.sink;
    connection.on('activations', (frame) => {
      this.route(frame.requestIds, connection);
      const dropped = sink.write(frame, source);
      if (dropped > 0) this.droppedBySink += dropped;
    });
    connection.on('tokens', (message) => {
      this.route(message.requestIds, connection);
      sink.tokens?.(message, source);
    });
    connection.on('end', (end) => {
      if (this.servedBy.get(end.requestId) === connection) this.servedBy.delete(end.requestId);
      sink.end?.(end, source);
    });
    connection.on('close', () => {
      for (const [requestId, servedBy] of this.servedBy) if (servedBy === connection) this.servedBy.delete(requestId);
    });
    if (this.subscription !== null) this.subscribe(connection, this.subscription);
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

  private subscribe(connection: TapConnection, subscription: Subscription): SubscribeResult {
    const offered = new Set(connection.hello.hookPoints);
    const hooks = subscription.hooks.filter((h) => offered.has(h));
    const result: SubscribeResult = { sessionId: connection.sessionId, modelId: connection.hello.modelId, hooks };
    try {
      connection.subscribe({ hooks, dtype: subscription.dtype, includePrompt: subscription.includePrompt });
    } catch (error) {
      result.hooks = [];
      result.error = (error as Error).message;
      this.logger?.warn({ sessionId: connection.sessionId, err: result.error }, 'tap: subscription not applied');
    }
    return result;
  }

  private canApply(connection: TapConnection, steering: readonly SteeringTerm[]): boolean {
    if (!connection.open || !connection.hello.canSteer) return false;
    const hello = connection.hello;
    return steering.every((term) => term.vector.length === hello.dModel && hello.hookPoints.includes(term.hook));
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
