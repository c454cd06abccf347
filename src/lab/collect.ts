/**
 * Collecting activations for SAE training from any model server that speaks the tap protocol
 * (docs/tap-protocol.md), over a corpus. See docs/collect.md.
 *
 * Topology: the collector listens (a TapHost on its own port) and the model server dials in
 * (`saegate model serve --tap <collector.tapUrl>`, or vLLM with a tap plugin). The host keeps one
 * subscription on every connection (the hook, prompt rows and prompt tokens, f32 when offered);
 * each document then runs through the server's OpenAI API as a one-token completion under a
 * request id of its own, and its rows and tokens come back through the host to the collector's
 * sink. Four parts, one file each under collect/:
 *
 * - sink.ts: the ActivationSink attached to the TapHost (admits usable servers, routes frames);
 * - capture.ts: assembling one request's rows by position, and deciding when they are complete;
 * - upstream.ts: the OpenAI client (the proxy's undici error translation, one place);
 * - scheduler.ts: documents in flight, corpus order, retries and the readiness probe.
 *
 * Never silently incomplete: a document whose rows do not cover every prompt position is run again
 * under a new request id, once, and then fails the collection with SAEGATE_ERR_COLLECT_INCOMPLETE.
 *
 * Memory: at most `concurrency` documents are in flight or done and waiting to be yielded (they
 * are yielded in corpus order), each `promptTokens × dModel × 4` bytes of rows.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { err } from '../common/errors.js';
import { listenError } from '../common/errors-net.js';
import { TapHost } from '../tap/host.js';
import { CollectScheduler, DEFAULT_SERVER_TIMEOUT_MS, type CollectedDocument, type CollectInputDocument, type CollectOptions } from './collect/scheduler.js';
import { CollectSink, type CollectServerInfo } from './collect/sink.js';

export type { CollectedDocument, CollectInputDocument, CollectOptions, CollectProgress } from './collect/scheduler.js';
export type { CollectServerInfo } from './collect/sink.js';

/** Options of {@link ActivationCollector.start}. */
export interface CollectorOptions {
  /** The hook point to collect, e.g. `blocks.6.hook_resid_post`; must be in the server's hello. */
  hook: string;
  /** Address the tap listens on. Default 127.0.0.1. */
  tapHost?: string;
  /** Port the tap listens on; 0 picks a free one (read it from `tapUrl`). Default 0. */
  tapPort?: number;
  /** Bearer token model servers must present (their `--tap-token`). Default none. */
  tapToken?: string;
  /** Progress and problems, one line each (connections, retries, skipped documents). Default silent. */
  log?: (line: string) => void;
}

/**
 * A tap endpoint that model servers connect to, and the loop that runs a corpus through their
 * OpenAI API and gathers each document's activations at one hook point. Start with
 * {@link ActivationCollector.start}; see docs/collect.md.
 */
export class ActivationCollector {
  /** `ws://host:port/v1/tap`: give it to the model server as `--tap`. */
  readonly tapUrl: string;
  /** The hook point collected. */
  readonly hook: string;
  private readonly host: TapHost;
  private readonly sink: CollectSink;
  private readonly server: http.Server;
  private readonly log: (line: string) => void;
  private readonly runs = new Set<AbortController>();
  private closed = false;

  private constructor(options: { host: TapHost; sink: CollectSink; server: http.Server; log: (line: string) => void }) {
    this.host = options.host;
    this.sink = options.sink;
    this.server = options.server;
    this.tapUrl = options.sink.tapUrl;
    this.hook = options.sink.hook;
    this.log = options.log;
  }

  /** Starts listening for model servers. Throws SAEGATE_ERR_CONFIG for a bad option or a port that cannot be bound. */
  static async start(options: CollectorOptions): Promise<ActivationCollector> {
    if (typeof options.hook !== 'string' || options.hook === '') throw err('SAEGATE_ERR_CONFIG', 'hook', 'a hook point name such as blocks.6.hook_resid_post');
    const bindHost = options.tapHost ?? '127.0.0.1';
    const port = options.tapPort ?? 0;
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw err('SAEGATE_ERR_CONFIG', 'tapPort', `a port number (0 = any free port), got ${port}`);
    const server = http.createServer((req, res) => {
      // Only the tap upgrade lives here; anything else (a curl to check the port) gets a clear 404.
      const body = JSON.stringify(err('SAEGATE_ERR_NOT_FOUND', req.method ?? 'GET', `${req.url ?? '/'} (this port only serves the tap: ws://…/v1/tap)`).toJSON());
      res.writeHead(404, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
    });
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, bindHost, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (error) {
      throw listenError(error, bindHost, port);
    }
    const address = server.address() as AddressInfo;
    const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    const log = options.log ?? (() => {});
    const sink = new CollectSink({ hook: options.hook, tapUrl: `ws://${shownHost}:${address.port}/v1/tap`, log });
    const host = new TapHost({ sink, token: options.tapToken });
    // f32 when offered: rows are kept as f32 anyway, and f16 would round them.
    host.subscribeAll({ hooks: [options.hook], dtype: ['f32', 'f16'], includePrompt: true });
    host.attach(server);
    return new ActivationCollector({ host, sink, server, log });
  }

  /**
   * Resolves with the connected model server's hello once one is connected and subscribed.
   * Rejects with SAEGATE_ERR_COLLECT_SERVER as soon as a server that cannot serve the hook
   * connects (and no usable one is), SAEGATE_ERR_COLLECT_NO_SERVER after `timeoutMs` (default 30000).
   */
  waitForServer(timeoutMs = DEFAULT_SERVER_TIMEOUT_MS, signal?: AbortSignal): Promise<CollectServerInfo> {
    return this.sink.waitForServer(timeoutMs, signal);
  }

  /**
   * Runs `documents` through the upstream and yields each one's activations at the hook, in corpus
   * order. Before the first document it waits for a model server on the tap and sends a readiness
   * probe (a request whose rows must come back, proving that the upstream is the server on the tap
   * and its subscription is in effect). Breaking out of the loop cancels what is in flight.
   *
   * Throws SAEGATE_ERR_CONFIG for bad options, SAEGATE_ERR_COLLECT_NO_SERVER / _SERVER when there
   * is no usable model server, SAEGATE_ERR_COLLECT_UPSTREAM when the upstream fails a request,
   * SAEGATE_ERR_COLLECT_INCOMPLETE when a document comes back incomplete twice, and the signal's
   * reason on abort.
   */
  async *collect(documents: Iterable<CollectInputDocument> | AsyncIterable<CollectInputDocument>, options: CollectOptions): AsyncGenerator<CollectedDocument, void, undefined> {
    if (this.closed) throw err('SAEGATE_ERR_SHUTTING_DOWN');
    const controller = new AbortController();
    const onAbort = (): void => controller.abort(options.signal?.reason);
    if (options.signal?.aborted) throw options.signal.reason;
    options.signal?.addEventListener('abort', onAbort, { once: true });
    this.runs.add(controller);
    try {
      yield* CollectScheduler.run({ sink: this.sink, log: this.log }, documents, options, controller);
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
      this.runs.delete(controller);
    }
  }

  /** Stops listening and closes the tap connections; running collections fail with SAEGATE_ERR_SHUTTING_DOWN. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const run of this.runs) run.abort(err('SAEGATE_ERR_SHUTTING_DOWN'));
    this.sink.close();
    await this.host.close();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  /** Rows the model servers reported dropping (their send queue was full), over all connections. */
  get droppedRows(): number {
    return this.sink.rowsDroppedReported;
  }
}
