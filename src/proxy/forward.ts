/**
 * The last handler of the upstream path: it writes the upstream's response to the client as it
 * arrives, byte for byte, and turns every way an exchange can end into what the client must see.
 *
 * - Headers pass through (minus hop-by-hop ones) with `x-request-id` and `x-saegate-applied`.
 *   They are written with the first body chunk, not when the upstream sends them: until a byte
 *   of body has gone out, a failure (a first-token timeout, an upstream dying after its headers)
 *   can still be answered with a clean error status.
 * - Body chunks are written as the Buffers undici hands over: no copy, no parse, no per-chunk
 *   allocation here. When the client's socket is full we pause the upstream and resume on
 *   'drain', so a slow client holds back its own upstream, not saegate's memory.
 * - An event stream that ends cleanly gets one SSE comment line, `: x-saegate-applied=<value>`,
 *   after the upstream's last byte: the only byte saegate adds to a response (docs/proxy.md). The
 *   value is asked for again then, so it lists conditional triggers that fired mid-stream.
 * - A failure before the first body byte is an OpenAI-shaped error with its status (502, 504,
 *   503, …). After it, an event stream gets `event: error` with that JSON and is closed: the
 *   client never sees a clean end (or a `[DONE]` saegate made up) for a stream that broke. Other
 *   bodies cannot carry an error after they started, so their socket is destroyed.
 * - A client that goes away aborts the upstream request, which is how the model server learns
 *   to stop generating.
 * - A policy abort (`Forwarder.abortGeneration`) aborts the upstream request the same way and ends
 *   the response cleanly with `finish_reason: "content_filter"` (src/proxy/abort.ts). A stream is
 *   only ever ended between events: when the abort comes while an event is half forwarded, the
 *   rest of that event is forwarded first.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { FastifyBaseLogger } from 'fastify';
import { SaegateError } from '../common/errors.js';
import { abortedAppliedValue, abortResponseBody, abortStreamEnding, endsEvent, eventEnd, pushTail } from './abort.js';
import type { DispatchController, DispatchHandler, Exchange } from './dispatch.js';
import { failureKind, toUpstreamError } from './errors.js';
import { APPLIED_HEADER, clientResponseHeaders, isEventStream, REQUEST_ID_HEADER, upstreamRequestHeaders } from './headers.js';
import type { Abortable, InFlightExchanges } from './limits.js';
import type { AbortSide, ProxyMetrics, RouteLabel } from './metrics.js';
import type { GenerationAbort } from './plan.js';
import type { UpstreamClient } from './upstream.js';

/** Status recorded for a request whose client went away before the response ended (nginx's convention). */
export const CLIENT_CLOSED_STATUS = 499;

/** One request to forward. */
export interface ForwardRequest {
  route: RouteLabel;
  method: string;
  /** Path and query as the client sent them. */
  path: string;
  /** The client's raw headers, flat `[name, value, …]`. */
  rawHeaders: readonly string[];
  /** The raw body, or null for none. */
  body: Buffer | null;
  requestId: string;
  /** Sent as `x-saegate-plan-id` when not null. */
  planId: string | null;
  /** Sent as `x-saegate-tap-max-delay-ms` when given (RequestPlan.tapMaxDelayMs). */
  tapMaxDelayMs?: number | null;
  /**
   * The `x-saegate-applied` value, or a function giving it when asked: when the response head is
   * written (a non-streaming body is complete by then) and again for the final SSE comment.
   */
  applied: string | (() => string);
  /** The client asked for a stream. */
  stream: boolean;
  /** The client's response, hijacked from fastify. */
  res: ServerResponse;
  /** performance.now() when the request arrived. */
  arrivedAt: number;
  /** Called once when the exchange is over, however it ended. */
  onDone?: () => void;
}

/** What every exchange shares. */
export interface ForwarderOptions {
  upstream: UpstreamClient;
  metrics: ProxyMetrics;
  inFlight: InFlightExchanges;
  connectTimeoutMs: number;
  headersTimeoutMs: number;
  /** Retry-After seconds on saegate's own 503s. */
  retryAfterSeconds: number;
  logger: FastifyBaseLogger;
}

/** Sends requests upstream and their responses back. */
export class Forwarder {
  /** Generation exchanges in flight by request id (a client may reuse an id: then all of them). */
  private readonly generations = new Map<string, Set<ForwardExchange>>();

  constructor(private readonly options: ForwarderOptions) {}

  /** Forwards `request`; the response (or the error) is written to `request.res`. */
  forward(request: ForwardRequest): Abortable {
    const exchange = new ForwardExchange(request, this.options);
    this.options.inFlight.add(exchange);
    if (request.route === 'chat_completions' || request.route === 'completions') {
      const id = request.requestId;
      let set = this.generations.get(id);
      if (set === undefined) this.generations.set(id, (set = new Set()));
      set.add(exchange);
      const onDone = request.onDone;
      exchange.onFinished = () => {
        const current = this.generations.get(id);
        if (current?.delete(exchange) === true && current.size === 0) this.generations.delete(id);
        onDone?.();
      };
    }
    this.options.upstream.dispatch(
      {
        method: request.method,
        path: request.path,
        headers: upstreamRequestHeaders(request.rawHeaders, request.requestId, request.planId, request.tapMaxDelayMs ?? null),
        body: request.body,
        exchange: exchange.info,
      },
      exchange,
    );
    return exchange;
  }

  /** Stops the generation request `requestId` for a policy (RequestAborter in plan.ts says when it takes). */
  abortGeneration(requestId: string, abort: GenerationAbort): boolean {
    const set = this.generations.get(requestId);
    if (set === undefined) return false;
    let taken = false;
    for (const exchange of [...set]) if (exchange.abortGeneration(abort)) taken = true;
    return taken;
  }
}

/** The error a policy abort cancels the upstream request with (never shown to the client). */
function policyAbortError(abort: GenerationAbort): Error {
  return new Error(`generation stopped by policy ${abort.policy}`);
}

/** The error a client disconnect aborts the upstream request with. */
function clientClosedError(): Error {
  return new Error('the client closed the connection');
}

class ForwardExchange implements DispatchHandler, Abortable {
  readonly info: Exchange;
  private controller: DispatchController | null = null;
  /** An abort that came before there was a controller; applied in onRequestStart. */
  private pendingAbort: Error | null = null;
  private done = false;
  private sse = false;
  /** The stream may carry saegate's trailing comment and error event (no length, no encoding). */
  private sseWritable = false;
  /**
   * The client's response head, held until the first body chunk (or the end): until then a
   * failure (a first-token timeout, the upstream dying) can still be a clean error status.
   */
  private head: OutgoingHttpHeaders | null = null;
  private status = 0;
  /** A policy abort taken but waiting for the event in progress to end. */
  private generationAbort: GenerationAbort | null = null;
  /** Last four bytes forwarded on an event stream (initially "an event just ended"). */
  private tail = 0x0a0a;
  /**
   * The first body chunk forwarded (a reference, not a copy): an abort reads the completion id and
   * `created` from it (OpenAI streams repeat both in every chunk; the first one starts an event).
   */
  private firstChunk: Buffer | null = null;
  /** Called once when the exchange is over (the Forwarder's bookkeeping, then the request's onDone). */
  onFinished: (() => void) | undefined;

  constructor(
    private readonly request: ForwardRequest,
    private readonly shared: ForwarderOptions,
  ) {
    this.info = { route: request.route, stream: request.stream, upstreamStartedAt: 0, upstreamEndedAt: 0 };
    shared.metrics.inFlight.inc();
    if (request.stream) shared.metrics.activeStreams.inc();
    request.res.on('close', this.onClientClose);
    request.res.on('drain', this.onDrain);
  }

  /** Cuts the exchange short (shutdown deadline): the client gets `reason` as an error. */
  abort(reason: Error): void {
    if (this.done) return;
    if (this.controller !== null) {
      this.controller.abort(reason);
      return;
    }
    this.pendingAbort = reason;
    this.fail(reason);
  }

  onRequestStart(controller: DispatchController): void {
    this.controller = controller;
    if (this.pendingAbort !== null) controller.abort(this.pendingAbort);
  }

  onResponseStart(_controller: DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    if (this.done || statusCode < 200) return;
    this.status = statusCode;
    this.sse = isEventStream(headers['content-type']);
    const encoding = headers['content-encoding'];
    this.sseWritable = this.sse && headers['content-length'] === undefined && (encoding === undefined || encoding === 'identity');
    this.head = clientResponseHeaders(headers, this.request.requestId, '');
  }

  onResponseData(controller: DispatchController, chunk: Buffer): void {
    if (this.done) return;
    const res = this.request.res;
    if (this.head !== null) {
      this.writeHead();
      if (this.request.stream && this.sse) this.shared.metrics.timeToFirstToken.observe({ route: this.request.route }, (performance.now() - this.request.arrivedAt) / 1000);
    }
    if (this.sse) {
      if (this.generationAbort !== null) {
        // Forward the rest of the event in progress, then end the stream there.
        const end = eventEnd(this.tail, chunk);
        if (end < 0) {
          this.tail = pushTail(this.tail, chunk);
          if (!res.write(chunk)) controller.pause();
          return;
        }
        if (end > 0) res.write(chunk.subarray(0, end));
        this.completeAbort(this.generationAbort);
        return;
      }
      this.tail = pushTail(this.tail, chunk);
      this.firstChunk ??= chunk;
    }
    if (!res.write(chunk)) controller.pause();
  }

  /** A policy abort: see Forwarder.abortGeneration. */
  abortGeneration(abort: GenerationAbort): boolean {
    if (this.done || this.generationAbort !== null) return false;
    // An upstream error answer passes as it is; so does a non-stream body that already started
    // (the upstream sends it only once generation is over) or a stream saegate cannot append to.
    if (this.status !== 0 && (this.status < 200 || this.status > 299)) return false;
    if (this.request.res.headersSent && !(this.sse && this.sseWritable)) return false;
    this.generationAbort = abort;
    if (this.request.res.headersSent && !endsEvent(this.tail)) return true; // completes in onResponseData
    this.completeAbort(abort);
    return true;
  }

  /** Ends the client's response for a policy abort, then cancels the upstream request. */
  private completeAbort(abort: GenerationAbort): void {
    const { res, route, requestId, body, stream } = this.request;
    const applied = abortedAppliedValue(this.applied(), abort);
    const input = { route: route === 'chat_completions' ? ('chat_completions' as const) : ('completions' as const), requestId, body, firstChunk: this.firstChunk, nowSeconds: Math.floor(Date.now() / 1000) };
    if (stream) {
      if (!res.headersSent && !res.destroyed) {
        const head: OutgoingHttpHeaders =
          this.head !== null && this.sseWritable
            ? { ...this.head, [APPLIED_HEADER]: applied }
            : { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', [REQUEST_ID_HEADER]: requestId, [APPLIED_HEADER]: applied };
        this.head = null;
        res.writeHead(200, head);
      }
      res.end(abortStreamEnding(input, applied));
      this.shared.metrics.streamAborts.inc({ side: 'policy' });
    } else if (!res.destroyed) {
      const text = abortResponseBody(input);
      this.head = null;
      res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), [REQUEST_ID_HEADER]: requestId, [APPLIED_HEADER]: applied });
      res.end(text);
    }
    this.status = 200;
    this.shared.logger.info({ reqId: requestId, policy: abort.policy, reason: abort.reason }, 'generation stopped by policy');
    const reason = policyAbortError(abort);
    // Finish first: the abort calls back into onResponseError, which must find the exchange done.
    this.finish(null);
    if (this.controller !== null) this.controller.abort(reason);
    else this.pendingAbort = reason;
  }

  onResponseEnd(): void {
    if (this.done) return;
    const res = this.request.res;
    if (this.head !== null) this.writeHead();
    if (this.sseWritable) res.end(`: ${APPLIED_HEADER}=${this.applied()}\n\n`);
    else res.end();
    this.finish(null);
  }

  onResponseError(_controller: DispatchController, error: Error): void {
    this.fail(error);
  }

  private fail(thrown: Error): void {
    if (this.done) return;
    const res = this.request.res;
    const error = toUpstreamError(thrown, {
      upstream: this.shared.upstream.url,
      responseStarted: this.status !== 0,
      connectTimeoutMs: this.shared.connectTimeoutMs,
      headersTimeoutMs: this.shared.headersTimeoutMs,
    });
    const shutdown = error.code === 'SAEGATE_ERR_SHUTTING_DOWN';
    if (!shutdown) this.shared.metrics.upstreamFailures.inc({ kind: failureKind(error) });
    if (res.headersSent) {
      const side: AbortSide = shutdown ? 'shutdown' : error.code === 'SAEGATE_ERR_UPSTREAM_TIMEOUT' ? 'timeout' : 'upstream';
      if (this.request.stream) this.shared.metrics.streamAborts.inc({ side });
      this.shared.logger.warn({ reqId: this.request.requestId, code: error.code, err: thrown.message }, 'upstream response broke off');
      if (this.sseWritable) res.end(`event: error\ndata: ${JSON.stringify(error.toJSON())}\n\n`);
      else res.destroy();
    } else {
      this.shared.logger.warn({ reqId: this.request.requestId, code: error.code, err: thrown.message }, error.message);
      this.writeError(error);
    }
    this.finish(error);
  }

  private writeHead(): void {
    const res = this.request.res;
    const head = this.head;
    // Asked now, not at the upstream's headers: a live plan may have more to say by the first byte.
    if (head !== null) head[APPLIED_HEADER] = this.applied();
    res.writeHead(this.status, head ?? undefined);
    this.head = null;
  }

  private applied(): string {
    const applied = this.request.applied;
    return typeof applied === 'string' ? applied : applied();
  }

  private writeError(error: SaegateError): void {
    const res = this.request.res;
    if (res.destroyed) return;
    const body = JSON.stringify(error.toJSON());
    this.status = error.status;
    res.writeHead(error.status, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(body),
      [REQUEST_ID_HEADER]: this.request.requestId,
      [APPLIED_HEADER]: this.applied(),
      ...(error.status === 503 || error.status === 429 ? { 'retry-after': String(this.shared.retryAfterSeconds) } : {}),
    });
    res.end(body);
  }

  private readonly onDrain = (): void => {
    this.controller?.resume();
  };

  private readonly onClientClose = (): void => {
    if (this.done || this.request.res.writableFinished) return;
    this.status = CLIENT_CLOSED_STATUS;
    if (this.request.stream) this.shared.metrics.streamAborts.inc({ side: 'client' });
    const reason = clientClosedError();
    // Finish first: the abort calls back into onResponseError, which must find the exchange done.
    this.finish(reason);
    if (this.controller !== null) this.controller.abort(reason);
    else this.pendingAbort = reason;
  };

  private finish(error: Error | null): void {
    this.done = true;
    const { res, route, stream, arrivedAt } = this.request;
    res.off('close', this.onClientClose);
    res.off('drain', this.onDrain);
    const metrics = this.shared.metrics;
    this.shared.inFlight.delete(this);
    metrics.inFlight.dec();
    if (stream) metrics.activeStreams.dec();
    const seconds = (performance.now() - arrivedAt) / 1000;
    metrics.requests.inc({ route, status: String(this.status || (error instanceof SaegateError ? error.status : 502)) });
    metrics.requestDuration.observe({ route }, seconds);
    const { upstreamStartedAt, upstreamEndedAt } = this.info;
    if (upstreamStartedAt > 0 && upstreamEndedAt >= upstreamStartedAt) {
      metrics.overhead.observe({ route }, Math.max(0, seconds - (upstreamEndedAt - upstreamStartedAt) / 1000));
    }
    if (this.onFinished !== undefined) this.onFinished();
    else this.request.onDone?.();
  }
}
