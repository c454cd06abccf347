/**
 * Where activation rows go once the tap has received them. The SAE pipeline (src/sae) will
 * implement ActivationSink with its micro-batcher; until then CountingSink counts what arrives per
 * request and hook, which is what the proxy's tests and `/admin/status` look at.
 *
 * Rows arrive on the event loop, straight from the socket. A sink must not block: it copies the
 * rows it keeps (frames are views into the received bytes) into a bounded queue and returns how
 * many it dropped instead of waiting (ARCHITECTURE decision 4). Dropped rows are counted in
 * `saegate_tap_rows_dropped_total{reason="sink"}`.
 */
import type { Hello, PlanAck, RequestEnd, StreamDtype, TokensMessage } from './messages.js';
import type { ActivationsFrame } from './server.js';

/** The connection a frame came from. */
export interface TapSource {
  /** The connection's session id (from `welcome`). */
  sessionId: string;
  /** The model id from its hello. */
  modelId: string;
  /** The server id from its hello, when given. */
  serverId: string | undefined;
}

/** Consumer of tap traffic. Every method runs on the event loop and must return quickly. */
export interface ActivationSink {
  /**
   * Takes the rows of one activations frame (row `i` belongs to `requestIds[rowRequestIndexes[i]]`
   * at `positions[i]`). The frame's arrays view the socket's buffer: copy what you keep. Returns
   * the number of rows dropped (0 when all were taken).
   */
  write(frame: ActivationsFrame, source: TapSource): number;
  /** Generated (or prompt) tokens with their text pieces. */
  tokens?(message: TokensMessage, source: TapSource): void;
  /** A request finished on the model server; its per-request state can go. */
  end?(end: RequestEnd, source: TapSource): void;
  /** The model server acknowledged (or rejected) a `plan` or `plan_update` (conditional steering measures its lag from it). */
  planAck?(ack: PlanAck, source: TapSource): void;
  /**
   * A model server finished its handshake. Return null to use it, or why not: a refused
   * connection stays open but gets no subscription and no plans, and none of its traffic reaches
   * the sink. Called before the host subscribes it. Omitted: every connection is used.
   */
  admit?(hello: Hello, source: TapSource): string | null;
  /**
   * An admitted connection was subscribed (`subscription` says to what, and why not when its
   * `error` is set), or is waiting for a subscription (null: the host has none yet).
   */
  connected?(source: TapSource, subscription: SubscribeResult | null): void;
  /** An admitted connection closed; requests it served get no more traffic. */
  disconnected?(source: TapSource): void;
}

/** What the host's subscription became on one connection (TapHost.subscribeAll). */
export interface SubscribeResult {
  sessionId: string;
  modelId: string;
  /** Hooks subscribed on this connection (those of the subscription it offers). */
  hooks: string[];
  /** The dtype subscribed, when it was. */
  dtype?: StreamDtype;
  /** Why the connection was not subscribed, when it was not. */
  error?: string;
}

/** Rows one request sent on one hook. */
export interface RequestRowCounts {
  /** Rows per hook point. */
  rowsByHook: Map<string, number>;
  /** Rows in all. */
  rows: number;
  /** Tokens received. */
  tokens: number;
  /** The `end` message, once received. */
  end: RequestEnd | null;
  /** Session id of the connection that sent the rows. */
  sessionId: string;
}

export interface CountingSinkOptions {
  /** Requests whose counts are kept, most recent first; older ones are forgotten. Default 4096. */
  maxRequests?: number;
}

/** The placeholder sink: counts rows, per request and hook, and drops nothing. */
export class CountingSink implements ActivationSink {
  /** Rows received in all. */
  rows = 0;
  /** Frames received in all. */
  frames = 0;
  private readonly maxRequests: number;
  private readonly requests = new Map<string, RequestRowCounts>();
  /** Rows per request-table index of the current frame, reused between frames. */
  private perIndex = new Uint32Array(64);

  constructor(options: CountingSinkOptions = {}) {
    this.maxRequests = options.maxRequests ?? 4096;
  }

  write(frame: ActivationsFrame, source: TapSource): number {
    this.frames++;
    this.rows += frame.rowCount;
    const ids = frame.requestIds;
    if (this.perIndex.length < ids.length) this.perIndex = new Uint32Array(Math.max(ids.length, this.perIndex.length * 2));
    const perIndex = this.perIndex;
    perIndex.fill(0, 0, ids.length);
    const indexes = frame.rowRequestIndexes;
    for (let r = 0; r < frame.rowCount; r++) perIndex[indexes[r]]++;
    for (let k = 0; k < ids.length; k++) {
      if (perIndex[k] === 0) continue;
      const counts = this.entry(ids[k], source);
      counts.rows += perIndex[k];
      counts.rowsByHook.set(frame.hook, (counts.rowsByHook.get(frame.hook) ?? 0) + perIndex[k]);
    }
    return 0;
  }

  tokens(message: TokensMessage, source: TapSource): void {
    for (let i = 0; i < message.rowRequestIndexes.length; i++) this.entry(message.requestIds[message.rowRequestIndexes[i]], source).tokens++;
  }

  end(end: RequestEnd, source: TapSource): void {
    this.entry(end.requestId, source).end = end;
  }

  /** Counts for one request, or undefined when none arrived (or they were forgotten). */
  request(requestId: string): RequestRowCounts | undefined {
    return this.requests.get(requestId);
  }

  /** Requests with counts, oldest first. */
  get requestIds(): string[] {
    return [...this.requests.keys()];
  }

  private entry(requestId: string, source: TapSource): RequestRowCounts {
    let counts = this.requests.get(requestId);
    if (counts === undefined) {
      counts = { rowsByHook: new Map(), rows: 0, tokens: 0, end: null, sessionId: source.sessionId };
      this.requests.set(requestId, counts);
      if (this.requests.size > this.maxRequests) {
        const oldest = this.requests.keys().next();
        if (oldest.done !== true) this.requests.delete(oldest.value);
      }
    }
    return counts;
  }
}
