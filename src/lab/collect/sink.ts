/**
 * The collector's ActivationSink, attached to a TapHost: it admits model servers that can serve the
 * collection (they offer the hook, send f32 or f16 rows, and share the first server's d_model),
 * and hands each collection request's rows and prompt tokens to that request's RequestCapture.
 * Frames for requests nobody captures (other traffic on the same model server) are ignored.
 *
 * It also keeps what the scheduler needs to know about the tap: whether a usable server is
 * connected (`waitForServer`), why the last one was refused, and a generation number bumped for
 * every newly subscribed connection (a new subscription must be seen working before documents
 * are trusted to it).
 */
import { err, type SaegateError } from '../../common/errors.js';
import type { Hello, RequestEnd, TokensMessage } from '../../tap/messages.js';
import type { ActivationsFrame } from '../../tap/server.js';
import type { ActivationSink, SubscribeResult, TapSource } from '../../tap/sink.js';
import type { RequestCapture } from './capture.js';

/** What the connected model server said about itself in its hello. */
export interface CollectServerInfo {
  modelId: string;
  dModel: number;
  nLayers: number;
  hookPoints: string[];
  /** The hello's serverId, when it sent one. */
  serverId?: string;
}

export interface CollectSinkOptions {
  /** The hook point collected. */
  hook: string;
  /** `ws://…/v1/tap`, named in errors. */
  tapUrl: string;
  log: (line: string) => void;
}

export class CollectSink implements ActivationSink {
  readonly hook: string;
  readonly tapUrl: string;
  private readonly log: (line: string) => void;
  private readonly captures = new Map<string, RequestCapture>();
  /** Hellos of admitted connections, by session id, until they close. */
  private readonly hellos = new Map<string, Hello>();
  /** Session ids of admitted connections whose subscription went out. */
  private readonly subscribed = new Set<string>();
  private readonly listeners = new Set<() => void>();
  private serverInfo: CollectServerInfo | null = null;
  /** Why the last connection that could not be used was refused, until a usable one connects. */
  private refusal: SaegateError | null = null;
  private closed = false;
  /** Bumped for every newly subscribed connection: a subscription must be seen working again. */
  generation = 0;
  /** Rows the model servers reported dropping (their send queue was full), over all connections. */
  rowsDroppedReported = 0;

  constructor(options: CollectSinkOptions) {
    this.hook = options.hook;
    this.tapUrl = options.tapUrl;
    this.log = options.log;
  }

  /** The first usable server's hello, once one connected. */
  get info(): CollectServerInfo | null {
    return this.serverInfo;
  }

  /** True while at least one usable model server is connected and subscribed. */
  get live(): boolean {
    return this.subscribed.size > 0 && this.serverInfo !== null;
  }

  /** Routes `capture.requestId`'s frames to `capture` until `release`. */
  capture(capture: RequestCapture): void {
    this.captures.set(capture.requestId, capture);
  }

  release(capture: RequestCapture): void {
    if (this.captures.get(capture.requestId) === capture) this.captures.delete(capture.requestId);
  }

  admit(hello: Hello, source: TapSource): string | null {
    let problem: string | null = null;
    if (!hello.hookPoints.includes(this.hook)) problem = `it offers no hook point '${this.hook}'; it offers: ${hello.hookPoints.join(', ')}`;
    else if (!hello.dtypes.includes('f32') && !hello.dtypes.includes('f16')) problem = `it sends neither f32 nor f16 rows (it offers ${hello.dtypes.join(', ')})`;
    else if (this.serverInfo !== null && hello.dModel !== this.serverInfo.dModel) problem = `its d_model is ${hello.dModel}, the first server's was ${this.serverInfo.dModel}`;
    if (problem !== null) {
      this.refuse(hello.modelId, problem);
      return problem;
    }
    this.hellos.set(source.sessionId, hello);
    return null;
  }

  connected(source: TapSource, subscription: SubscribeResult | null): void {
    const hello = this.hellos.get(source.sessionId);
    if (hello === undefined) return;
    if (subscription === null || subscription.error !== undefined || !subscription.hooks.includes(this.hook)) {
      this.hellos.delete(source.sessionId);
      this.refuse(hello.modelId, `its subscription failed: ${subscription?.error ?? 'none was sent'}`);
      return;
    }
    this.subscribed.add(source.sessionId);
    this.serverInfo ??= {
      modelId: hello.modelId,
      dModel: hello.dModel,
      nLayers: hello.nLayers,
      hookPoints: [...hello.hookPoints],
      ...(hello.serverId === undefined ? {} : { serverId: hello.serverId }),
    };
    this.refusal = null;
    this.generation++;
    this.log(`collect: model server '${hello.modelId}' connected (d_model ${hello.dModel}); collecting ${this.hook} as ${subscription.dtype ?? '?'}`);
    this.notify();
  }

  disconnected(source: TapSource): void {
    this.hellos.delete(source.sessionId);
    if (this.subscribed.delete(source.sessionId)) this.log(`collect: model server '${source.modelId}' disconnected from the tap`);
    this.notify();
  }

  write(frame: ActivationsFrame): number {
    if (frame.droppedRowsSinceLastFrame > 0) {
      this.rowsDroppedReported += frame.droppedRowsSinceLastFrame;
      this.log(`collect: the model server dropped ${frame.droppedRowsSinceLastFrame} rows (its tap send queue was full); affected documents are retried`);
    }
    if (frame.hook !== this.hook || frame.rowCount === 0) return 0;
    const captures = frame.requestIds.map((id) => this.captures.get(id));
    const { rowRequestIndexes, positions } = frame;
    // Runs of consecutive positions of one request are copied in one go (a prefill is one run).
    let r = 0;
    while (r < frame.rowCount) {
      const start = r;
      const requestIndex = rowRequestIndexes[r];
      while (r + 1 < frame.rowCount && rowRequestIndexes[r + 1] === requestIndex && positions[r + 1] === positions[r] + 1) r++;
      r++;
      captures[requestIndex]?.putRows(positions[start], r - start, frame.data, start);
    }
    return 0;
  }

  tokens(message: TokensMessage): void {
    const captures = message.requestIds.map((id) => this.captures.get(id));
    for (let i = 0; i < message.tokenIds.length; i++) captures[message.rowRequestIndexes[i]]?.putToken(message.positions[i], message.tokenIds[i], message.texts[i]);
  }

  end(end: RequestEnd): void {
    this.captures.get(end.requestId)?.ended(end);
  }

  /**
   * Resolves with the connected model server's hello once one is connected and subscribed.
   * Rejects with SAEGATE_ERR_COLLECT_SERVER as soon as a server that cannot serve the hook
   * connects (and no usable one is), SAEGATE_ERR_COLLECT_NO_SERVER after `timeoutMs`,
   * SAEGATE_ERR_SHUTTING_DOWN once closed, and the signal's reason on abort.
   */
  waitForServer(timeoutMs: number, signal?: AbortSignal): Promise<CollectServerInfo> {
    return new Promise<CollectServerInfo>((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        this.listeners.delete(check);
        signal?.removeEventListener('abort', onAbort);
      };
      const check = (): void => {
        if (this.live) {
          done();
          resolve(this.serverInfo!);
        } else if (this.refusal !== null) {
          done();
          reject(this.refusal);
        } else if (this.closed) {
          done();
          reject(err('SAEGATE_ERR_SHUTTING_DOWN'));
        }
      };
      const onAbort = (): void => {
        done();
        reject(signal!.reason);
      };
      const timer = setTimeout(() => {
        done();
        reject(err('SAEGATE_ERR_COLLECT_NO_SERVER', `no model server connected to the tap at ${this.tapUrl} within ${timeoutMs} ms (start it with --tap ${this.tapUrl})`));
      }, timeoutMs);
      if (signal?.aborted) {
        onAbort();
        return;
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      this.listeners.add(check);
      check();
    });
  }

  /** Fails every `waitForServer` with SAEGATE_ERR_SHUTTING_DOWN, now and later. */
  close(): void {
    this.closed = true;
    this.notify();
  }

  private refuse(modelId: string, problem: string): void {
    this.refusal = err('SAEGATE_ERR_COLLECT_SERVER', modelId, problem);
    this.log(`collect: ${this.refusal.message}`);
    this.notify();
  }

  private notify(): void {
    for (const listener of [...this.listeners]) listener();
  }
}
