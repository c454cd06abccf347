/**
 * Collecting activations for SAE training from any model server that speaks the tap protocol
 * (docs/tap-protocol.md), over a corpus. See docs/collect.md.
 *
 * Topology: the collector listens (a TapServer on its own port) and the model server dials in
 * (`saegate model serve --tap <collector.tapUrl>`, or vLLM with a tap plugin). The collector
 * subscribes every connection to one hook point with prompt rows and prompt tokens, then runs each
 * document through the server's OpenAI API as a one-token completion under a request id of its
 * own, and gathers that request's rows and tokens from the tap. Two connections, two orders: the
 * HTTP response and the tap messages race, so a document is done when the HTTP response came back
 * and the tap's `end` for it arrived with every prompt position's row (the reference server
 * flushes a request's rows before its `end`; a short grace period covers servers that do not).
 *
 * Never silently incomplete: a document whose rows do not cover every prompt position (the server
 * dropped rows when its send queue was full, the tap reconnected mid-request) is run again under a
 * new request id, once, and then fails the collection with SAEGATE_ERR_COLLECT_INCOMPLETE.
 *
 * Memory: at most `concurrency` documents are in flight or done and waiting to be yielded (they
 * are yielded in corpus order), each `promptTokens × dModel × 4` bytes of rows.
 */
import { randomUUID } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Agent, request } from 'undici';
import { err, SaegateError } from '../common/errors.js';
import { describeError, listenError } from '../common/errors-net.js';
import { f16ToF32 } from '../common/f16.js';
import type { RequestEnd, StreamDtype, TokensMessage } from '../tap/messages.js';
import { TapServer, type ActivationsFrame, type TapConnection } from '../tap/server.js';

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

/** What the connected model server said about itself in its hello. */
export interface CollectServerInfo {
  modelId: string;
  dModel: number;
  nLayers: number;
  hookPoints: string[];
  /** The hello's serverId, when it sent one. */
  serverId?: string;
}

/** A document to run: `{id, text}` (what `readCorpus` gives). */
export interface CollectInputDocument {
  id: string;
  text: string;
}

/** Counters reported after every document. */
export interface CollectProgress {
  /** Documents yielded so far. */
  documents: number;
  /** Rows yielded so far (after `maxTokensPerDocument`). */
  rows: number;
  /** Documents skipped because their prompt does not fit the model's context. */
  skipped: number;
  /** Documents that needed their second attempt. */
  retried: number;
}

/** Options of {@link ActivationCollector.collect}. */
export interface CollectOptions {
  /**
   * The model server's OpenAI base URL, e.g. `http://127.0.0.1:8000` (a trailing `/v1` is
   * accepted). Documents are POSTed to `<upstream>/v1/completions`.
   */
  upstream: string;
  /** The `model` of each request. Default: the connected server's hello `modelId`. */
  model?: string;
  /** Bearer token for the upstream's API (`Authorization`). Default none. */
  apiKey?: string;
  /** Documents in flight at once, and the most yielded ahead of the consumer. Default 8. */
  concurrency?: number;
  /**
   * Keep at most this many positions of each document (the first ones, BOS included). The server
   * still runs the whole prompt: this bounds how much one long document weighs in the data, it
   * does not avoid the context limit. Default: all.
   */
  maxTokensPerDocument?: number;
  /**
   * A document whose prompt does not fit the model's context (the upstream answers 400 with a
   * context-length error): `'skip'` it, counted in `CollectProgress.skipped` and logged, or fail
   * the collection with SAEGATE_ERR_COLLECT_UPSTREAM (`'error'`). Default 'skip'.
   */
  tooLong?: 'skip' | 'error';
  /** How long to wait for a model server on the tap (at start, and after it went away). Default 30000 ms. */
  serverTimeoutMs?: number;
  /** How long a document waits for its `end` on the tap after its HTTP response. Default 30000 ms. */
  endTimeoutMs?: number;
  /** How long a document whose `end` arrived waits for missing rows before it counts as incomplete. Default 1000 ms. */
  rowGraceMs?: number;
  /** Aborts the collection: in-flight requests are cancelled and the iteration throws the signal's reason. */
  signal?: AbortSignal;
  /** Called after each yielded or skipped document. */
  onProgress?(progress: CollectProgress): void;
}

/** One document's activations at the hook, prompt positions only. */
export interface CollectedDocument {
  id: string;
  /** Position in the corpus (0-based); skipped documents leave gaps. */
  index: number;
  /** `T × dModel` values, row t = position t (0 = BOS where the model uses one). */
  rows: Float32Array;
  dModel: number;
  /** T: positions kept (the prompt's token count, capped by `maxTokensPerDocument`). */
  tokenCount: number;
  /** The prompt's token count as the server ran it, before `maxTokensPerDocument`. */
  promptTokens: number;
  /** Token id at each kept position; empty when the server sends no prompt tokens (the protocol's MAY). */
  tokenIds: Int32Array;
  /** Text piece at each kept position (docs/tap-protocol.md 4.5); empty like `tokenIds`. */
  tokenTexts: string[];
}

const DEFAULT_CONCURRENCY = 8;
const DEFAULT_SERVER_TIMEOUT_MS = 30_000;
const DEFAULT_END_TIMEOUT_MS = 30_000;
const DEFAULT_ROW_GRACE_MS = 1000;
/** Readiness probes before giving up: each one is a full request, none should be needed twice. */
const PROBE_ATTEMPTS = 5;
const PROBE_RETRY_MS = 50;
/** How long the probe waits for its `end`; a request the tap never sees means the wrong upstream. */
const PROBE_END_TIMEOUT_MS = 10_000;
const PROBE_TEXT = 'Hello';
/** Positions at or above this are refused rather than allocated for (no real prompt is this long). */
const MAX_POSITIONS = 1 << 22;
const INITIAL_POSITIONS = 64;

function positiveInteger(name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback;
  if (!Number.isSafeInteger(v) || v < 1) throw err('SAEGATE_ERR_CONFIG', name, `a positive integer, got ${v}`);
  return v;
}

/** `<upstream>/v1/completions`, accepting a base URL with or without `/v1`. */
function completionsUrl(upstream: string): string {
  let url: URL;
  try {
    url = new URL(upstream);
  } catch {
    throw err('SAEGATE_ERR_CONFIG', 'upstream', `an http(s) URL such as http://127.0.0.1:8000, got '${upstream}'`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw err('SAEGATE_ERR_CONFIG', 'upstream', `an http(s) URL, got '${upstream}'`);
  const base = url.pathname.replace(/\/+$/, '');
  url.pathname = base.endsWith('/v1') ? `${base}/completions` : `${base}/v1/completions`;
  return url.toString();
}

/** The one place undici's errors become ours: no response from the upstream at all. */
function unreachable(upstream: string, label: string, error: unknown): SaegateError {
  if (error instanceof SaegateError) return error;
  return new SaegateError('SAEGATE_ERR_COLLECT_UPSTREAM', [upstream, label, `no response: ${describeError(error)}`], { cause: error });
}

/** An upstream's error answer, as OpenAI (`{error: {message, code}}`) or vLLM (`{message, code}`) shape it. */
interface UpstreamFailure {
  status: number;
  message: string;
  code: string | null;
}

function parseFailure(status: number, body: string): UpstreamFailure {
  let message = body.slice(0, 500);
  let code: string | null = null;
  try {
    const parsed = JSON.parse(body) as { error?: { message?: unknown; code?: unknown }; message?: unknown; code?: unknown };
    const source = typeof parsed.error === 'object' && parsed.error !== null ? parsed.error : parsed;
    if (typeof source.message === 'string') message = source.message;
    if (typeof source.code === 'string') code = source.code;
  } catch {
    // Not JSON: the start of the body is the message.
  }
  return { status, message, code };
}

/** A 400 saying the prompt does not fit the context: ours, OpenAI's code, or the wording vLLM and others use. */
function isContextLengthFailure(failure: UpstreamFailure): boolean {
  if (failure.status !== 400) return false;
  return failure.code === 'SAEGATE_ERR_CONTEXT_LENGTH' || failure.code === 'context_length_exceeded' || /maximum context length|context length/i.test(failure.message);
}

type AttemptResult = { ok: true } | { ok: false; problem: string; noEnd: boolean };

const EMPTY_F32 = new Float32Array(0);
const EMPTY_U8 = new Uint8Array(0);
const EMPTY_I32 = new Int32Array(0);

/**
 * One request's rows and tokens as they arrive from the tap, indexed by position. Positions are
 * only known to be prompt positions once the `end` gives the prompt length, so everything is kept
 * until then (with a one-token completion that is the prompt plus at most one position).
 */
class RequestCapture {
  private capacity = 0;
  private rowData = EMPTY_F32;
  private rowSeen = EMPTY_U8;
  private ids = EMPTY_I32;
  private idSeen = EMPTY_U8;
  private texts: string[] = [];
  private end: RequestEnd | null = null;
  /** Prompt positions without a row / a token; counted when the end arrives, then kept up to date. */
  private missingRows = 0;
  private tokensHeld = 0;
  private outOfRange: number | null = null;
  /** Called after anything arrived, while someone waits for the outcome. */
  private onChange: (() => void) | null = null;

  constructor(
    readonly requestId: string,
    private readonly dModel: number,
  ) {}

  /** Copies `count` rows at positions `position…` from `data` (row `firstRow` on), f16 converted. */
  putRows(position: number, count: number, data: Float32Array | Uint16Array, firstRow: number): void {
    if (!this.reserve(position + count)) return;
    const d = this.dModel;
    const source = data.subarray(firstRow * d, (firstRow + count) * d);
    const target = this.rowData.subarray(position * d, (position + count) * d);
    if (source instanceof Float32Array) target.set(source);
    else f16ToF32(source, target);
    const promptLength = this.end?.promptTokens ?? -1;
    for (let p = position; p < position + count; p++) {
      if (this.rowSeen[p] === 0 && p < promptLength) this.missingRows--;
      this.rowSeen[p] = 1;
    }
    this.onChange?.();
  }

  putToken(position: number, tokenId: number, text: string): void {
    if (!this.reserve(position + 1)) return;
    if (this.idSeen[position] === 0 && this.end !== null && position < this.end.promptTokens) this.tokensHeld++;
    this.idSeen[position] = 1;
    this.ids[position] = tokenId;
    this.texts[position] = text;
    this.onChange?.();
  }

  ended(end: RequestEnd): void {
    if (this.end !== null) return;
    this.end = end;
    const p = Math.min(end.promptTokens, this.capacity);
    let rows = 0;
    let tokens = 0;
    for (let i = 0; i < p; i++) {
      rows += this.rowSeen[i];
      tokens += this.idSeen[i];
    }
    this.missingRows = end.promptTokens - rows;
    this.tokensHeld = tokens;
    this.onChange?.();
  }

  /** Null while waiting for the end; then 'complete' or what is missing. */
  private status(): 'complete' | string | null {
    const end = this.end;
    if (end === null) return null;
    if (this.outOfRange !== null) return `position ${this.outOfRange} is beyond any prompt (${MAX_POSITIONS} positions)`;
    if (end.finishReason === 'error' || end.finishReason === 'abort') return `the model server ended the request with finishReason '${end.finishReason}'`;
    if (end.promptTokens < 1) return 'the model server reported an empty prompt';
    // Prompt tokens are all or nothing: a server need not send them, but half of them is a loss.
    const tokensOk = this.tokensHeld === 0 || this.tokensHeld === end.promptTokens;
    if (this.missingRows === 0 && tokensOk) return 'complete';
    const parts: string[] = [];
    if (this.missingRows > 0) parts.push(`${this.missingRows} of ${end.promptTokens} prompt rows missing (first at position ${this.firstMissing(this.rowSeen, end.promptTokens)})`);
    if (!tokensOk) parts.push(`${end.promptTokens - this.tokensHeld} of ${end.promptTokens} prompt tokens missing`);
    return parts.join(', ');
  }

  private firstMissing(seen: Uint8Array, length: number): number {
    for (let i = 0; i < length; i++) if (i >= seen.length || seen[i] === 0) return i;
    return -1;
  }

  /**
   * Resolves once the request is complete, or with what is missing: rows still missing `graceMs`
   * after the end, no end `endTimeoutMs` after this call (made when the HTTP response is in).
   * Rejects with the signal's reason on abort.
   */
  outcome(timing: { endTimeoutMs: number; graceMs: number }, signal: AbortSignal): Promise<AttemptResult> {
    return new Promise<AttemptResult>((resolve, reject) => {
      let grace: NodeJS.Timeout | null = null;
      const settle = (): void => {
        clearTimeout(endTimer);
        if (grace !== null) clearTimeout(grace);
        signal.removeEventListener('abort', onAbort);
        this.onChange = null;
      };
      const onAbort = (): void => {
        settle();
        reject(signal.reason);
      };
      const check = (): void => {
        const status = this.status();
        if (status === null) return;
        if (status === 'complete') {
          settle();
          resolve({ ok: true });
          return;
        }
        // Rows may trail the end on servers that do not flush first: wait a little for them.
        grace ??= setTimeout(() => {
          settle();
          resolve({ ok: false, problem: this.status() ?? 'no end', noEnd: false });
        }, timing.graceMs);
      };
      const endTimer = setTimeout(() => {
        settle();
        resolve({ ok: false, problem: `no end message on the tap within ${timing.endTimeoutMs} ms of the HTTP response`, noEnd: true });
      }, timing.endTimeoutMs);
      if (signal.aborted) {
        onAbort();
        return;
      }
      signal.addEventListener('abort', onAbort, { once: true });
      this.onChange = check;
      check();
    });
  }

  /** The first `keep` prompt positions, trimmed to size. Call after a complete outcome. */
  take(keep: number): { rows: Float32Array; tokenIds: Int32Array; tokenTexts: string[]; promptTokens: number; tokenCount: number } {
    const promptTokens = this.end!.promptTokens;
    const n = Math.min(promptTokens, keep);
    const values = n * this.dModel;
    const rows = this.rowData.length === values ? this.rowData : this.rowData.slice(0, values);
    const hasTokens = this.tokensHeld > 0;
    return {
      rows,
      tokenIds: hasTokens ? this.ids.slice(0, n) : new Int32Array(0),
      tokenTexts: hasTokens ? this.texts.slice(0, n) : [],
      promptTokens,
      tokenCount: n,
    };
  }

  /** Grows the position arrays to hold `positions`; false (and remembered) past MAX_POSITIONS. */
  private reserve(positions: number): boolean {
    if (positions <= this.capacity) return true;
    if (positions > MAX_POSITIONS) {
      this.outOfRange ??= positions - 1;
      this.onChange?.();
      return false;
    }
    const capacity = Math.min(MAX_POSITIONS, Math.max(positions, INITIAL_POSITIONS, this.capacity * 2));
    const rowData = new Float32Array(capacity * this.dModel);
    rowData.set(this.rowData);
    const rowSeen = new Uint8Array(capacity);
    rowSeen.set(this.rowSeen);
    const ids = new Int32Array(capacity);
    ids.set(this.ids);
    const idSeen = new Uint8Array(capacity);
    idSeen.set(this.idSeen);
    this.rowData = rowData;
    this.rowSeen = rowSeen;
    this.ids = ids;
    this.idSeen = idSeen;
    this.capacity = capacity;
    return true;
  }
}

/** Per `collect()` call: resolved options, its HTTP agent, and whether the subscription was seen working. */
interface CollectRun {
  readonly id: string;
  readonly upstream: string;
  readonly url: string;
  readonly model: string;
  readonly headers: Record<string, string>;
  readonly agent: Agent;
  readonly signal: AbortSignal;
  readonly keep: number;
  readonly tooLong: 'skip' | 'error';
  readonly serverTimeoutMs: number;
  readonly endTimeoutMs: number;
  readonly graceMs: number;
  /** Connection generation the last successful probe ran under; -1 before the first. */
  liveGeneration: number;
  liveProbe: Promise<void> | null;
  probes: number;
}

type DocumentOutcome = { kind: 'document'; document: CollectedDocument; retried: boolean } | { kind: 'skipped'; retried: boolean } | { kind: 'error'; error: unknown };

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
  private readonly tap: TapServer;
  private readonly server: http.Server;
  private readonly log: (line: string) => void;
  private readonly captures = new Map<string, RequestCapture>();
  private readonly subscribed = new Set<TapConnection>();
  private readonly listeners = new Set<() => void>();
  private readonly runs = new Set<AbortController>();
  private info: CollectServerInfo | null = null;
  /** Why the last connection that could not be used was refused, until a usable one connects. */
  private refusal: SaegateError | null = null;
  /** Bumped for every newly subscribed connection: a subscription must be seen working again. */
  private generation = 0;
  private rowsDroppedReported = 0;
  private closed = false;

  private constructor(options: { tap: TapServer; server: http.Server; tapUrl: string; hook: string; log: (line: string) => void }) {
    this.tap = options.tap;
    this.server = options.server;
    this.tapUrl = options.tapUrl;
    this.hook = options.hook;
    this.log = options.log;
    this.tap.onConnection((connection) => this.accept(connection));
  }

  /** Starts listening for model servers. Throws SAEGATE_ERR_CONFIG for a bad option or a port that cannot be bound. */
  static async start(options: CollectorOptions): Promise<ActivationCollector> {
    if (typeof options.hook !== 'string' || options.hook === '') throw err('SAEGATE_ERR_CONFIG', 'hook', 'a hook point name such as blocks.6.hook_resid_post');
    const host = options.tapHost ?? '127.0.0.1';
    const port = options.tapPort ?? 0;
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw err('SAEGATE_ERR_CONFIG', 'tapPort', `a port number (0 = any free port), got ${port}`);
    const tap = new TapServer({ token: options.tapToken });
    const server = http.createServer((req, res) => {
      // Only the tap upgrade lives here; anything else (a curl to check the port) gets a clear 404.
      const body = JSON.stringify(err('SAEGATE_ERR_NOT_FOUND', req.method ?? 'GET', `${req.url ?? '/'} (this port only serves the tap: ws://…/v1/tap)`).toJSON());
      res.writeHead(404, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
    });
    tap.attach(server);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (error) {
      await tap.close();
      throw listenError(error, host, port);
    }
    const address = server.address() as AddressInfo;
    const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    return new ActivationCollector({ tap, server, tapUrl: `ws://${shownHost}:${address.port}/v1/tap`, hook: options.hook, log: options.log ?? (() => {}) });
  }

  /**
   * Resolves with the connected model server's hello once one is connected and subscribed.
   * Rejects with SAEGATE_ERR_COLLECT_SERVER as soon as a server that cannot serve the hook
   * connects (and no usable one is), SAEGATE_ERR_COLLECT_NO_SERVER after `timeoutMs` (default 30000).
   */
  waitForServer(timeoutMs = DEFAULT_SERVER_TIMEOUT_MS, signal?: AbortSignal): Promise<CollectServerInfo> {
    return new Promise<CollectServerInfo>((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        this.listeners.delete(check);
        signal?.removeEventListener('abort', onAbort);
      };
      const check = (): void => {
        if (this.subscribed.size > 0 && this.info !== null) {
          done();
          resolve(this.info);
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
    const url = completionsUrl(options.upstream);
    const concurrency = positiveInteger('concurrency', options.concurrency, DEFAULT_CONCURRENCY);
    const keep = options.maxTokensPerDocument === undefined ? Number.POSITIVE_INFINITY : positiveInteger('maxTokensPerDocument', options.maxTokensPerDocument, 1);
    const tooLong = options.tooLong ?? 'skip';
    if (tooLong !== 'skip' && tooLong !== 'error') throw err('SAEGATE_ERR_CONFIG', 'tooLong', `'skip' or 'error', got '${String(tooLong)}'`);
    const controller = new AbortController();
    // Every document in flight listens on it (its HTTP request and its wait for the tap).
    setMaxListeners(4 * concurrency + 16, controller.signal);
    const onAbort = (): void => controller.abort(options.signal?.reason);
    if (options.signal?.aborted) throw options.signal.reason;
    options.signal?.addEventListener('abort', onAbort, { once: true });
    this.runs.add(controller);
    const agent = new Agent({ connections: concurrency + 1 });
    const window: Promise<DocumentOutcome>[] = [];
    const iterator = Symbol.asyncIterator in documents ? documents[Symbol.asyncIterator]() : documents[Symbol.iterator]();
    const progress: CollectProgress = { documents: 0, rows: 0, skipped: 0, retried: 0 };
    try {
      const serverTimeoutMs = positiveInteger('serverTimeoutMs', options.serverTimeoutMs, DEFAULT_SERVER_TIMEOUT_MS);
      const info = await this.waitForServer(serverTimeoutMs, controller.signal);
      const run: CollectRun = {
        id: randomUUID().slice(0, 8),
        upstream: options.upstream,
        url,
        model: options.model ?? info.modelId,
        headers: { 'content-type': 'application/json', ...(options.apiKey === undefined ? {} : { authorization: `Bearer ${options.apiKey}` }) },
        agent,
        signal: controller.signal,
        keep,
        tooLong,
        serverTimeoutMs,
        endTimeoutMs: positiveInteger('endTimeoutMs', options.endTimeoutMs, DEFAULT_END_TIMEOUT_MS),
        graceMs: positiveInteger('rowGraceMs', options.rowGraceMs, DEFAULT_ROW_GRACE_MS),
        liveGeneration: -1,
        liveProbe: null,
        probes: 0,
      };
      await this.ensureLive(run);
      let index = 0;
      let exhausted = false;
      for (;;) {
        // Keep `concurrency` documents launched ahead of the one to yield next.
        while (!exhausted && window.length < concurrency) {
          const next = await iterator.next();
          if (next.done === true) {
            exhausted = true;
            break;
          }
          const document = next.value;
          if (typeof document?.id !== 'string' || typeof document.text !== 'string') {
            throw err('SAEGATE_ERR_CONFIG', `documents[${index}]`, 'an object with string id and text');
          }
          window.push(this.collectDocument(run, document, index++));
        }
        const head = window.shift();
        if (head === undefined) break;
        const outcome = await head;
        // A document that finished before an abort is not handed out after it.
        if (controller.signal.aborted) throw controller.signal.reason;
        if (outcome.kind === 'error') throw outcome.error;
        if (outcome.retried) progress.retried++;
        if (outcome.kind === 'skipped') {
          progress.skipped++;
          options.onProgress?.({ ...progress });
          continue;
        }
        progress.documents++;
        progress.rows += outcome.document.tokenCount;
        options.onProgress?.({ ...progress });
        yield outcome.document;
      }
    } finally {
      // Whatever ended the loop (done, error, consumer break), nothing may keep running.
      controller.abort(controller.signal.reason ?? err('SAEGATE_ERR_SHUTTING_DOWN'));
      options.signal?.removeEventListener('abort', onAbort);
      this.runs.delete(controller);
      await Promise.all(window);
      if (iterator.return !== undefined) await iterator.return();
      await agent.close();
    }
  }

  /** Stops listening and closes the tap connections; running collections fail with SAEGATE_ERR_SHUTTING_DOWN. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const run of this.runs) run.abort(err('SAEGATE_ERR_SHUTTING_DOWN'));
    this.notify();
    await this.tap.close();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  /** Rows the model servers reported dropping (their send queue was full), over all connections. */
  get droppedRows(): number {
    return this.rowsDroppedReported;
  }

  private notify(): void {
    for (const listener of [...this.listeners]) listener();
  }

  /** Subscribes a new connection, or records why it cannot be used. */
  private accept(connection: TapConnection): void {
    const hello = connection.hello;
    const refuse = (problem: string): void => {
      this.refusal = err('SAEGATE_ERR_COLLECT_SERVER', hello.modelId, problem);
      this.log(`collect: ${this.refusal.message}`);
      this.notify();
    };
    if (!hello.hookPoints.includes(this.hook)) {
      refuse(`it offers no hook point '${this.hook}'; it offers: ${hello.hookPoints.join(', ')}`);
      return;
    }
    // f32 when offered: rows are kept as f32 anyway, and f16 would round them.
    const dtype: StreamDtype | null = hello.dtypes.includes('f32') ? 'f32' : hello.dtypes.includes('f16') ? 'f16' : null;
    if (dtype === null) {
      refuse(`it sends neither f32 nor f16 rows (it offers ${hello.dtypes.join(', ')})`);
      return;
    }
    if (this.info !== null && hello.dModel !== this.info.dModel) {
      refuse(`its d_model is ${hello.dModel}, the first server's was ${this.info.dModel}`);
      return;
    }
    connection.on('activations', (frame) => this.onActivations(frame));
    connection.on('tokens', (tokens) => this.onTokens(tokens));
    connection.on('end', (end) => this.captures.get(end.requestId)?.ended(end));
    connection.on('close', () => {
      if (this.subscribed.delete(connection)) this.log(`collect: model server '${hello.modelId}' disconnected from the tap`);
      this.notify();
    });
    connection.subscribe({ hooks: [this.hook], dtype, includePrompt: true });
    this.subscribed.add(connection);
    this.info ??= { modelId: hello.modelId, dModel: hello.dModel, nLayers: hello.nLayers, hookPoints: [...hello.hookPoints], ...(hello.serverId === undefined ? {} : { serverId: hello.serverId }) };
    this.refusal = null;
    this.generation++;
    this.log(`collect: model server '${hello.modelId}' connected (d_model ${hello.dModel}); collecting ${this.hook} as ${dtype}`);
    this.notify();
  }

  private onActivations(frame: ActivationsFrame): void {
    if (frame.droppedRowsSinceLastFrame > 0) {
      this.rowsDroppedReported += frame.droppedRowsSinceLastFrame;
      this.log(`collect: the model server dropped ${frame.droppedRowsSinceLastFrame} rows (its tap send queue was full); affected documents are retried`);
    }
    if (frame.hook !== this.hook || frame.rowCount === 0) return;
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
  }

  private onTokens(tokens: TokensMessage): void {
    const captures = tokens.requestIds.map((id) => this.captures.get(id));
    for (let i = 0; i < tokens.tokenIds.length; i++) captures[tokens.rowRequestIndexes[i]]?.putToken(tokens.positions[i], tokens.tokenIds[i], tokens.texts[i]);
  }

  /** One document: an attempt, and a second one when the first came back incomplete. Never rejects. */
  private async collectDocument(run: CollectRun, document: CollectInputDocument, index: number): Promise<DocumentOutcome> {
    try {
      const problems: string[] = [];
      for (let attempt = 0; attempt < 2; attempt++) {
        await this.ensureLive(run);
        const requestId = `collect-${run.id}-${index}-${attempt}`;
        const capture = new RequestCapture(requestId, this.info!.dModel);
        const result = await this.attempt(run, capture, document.text, `document '${document.id}' (corpus index ${index})`, run.endTimeoutMs);
        if (result === 'too-long') return { kind: 'skipped', retried: attempt > 0 };
        if (result.ok) {
          const taken = capture.take(run.keep);
          return { kind: 'document', retried: attempt > 0, document: { id: document.id, index, dModel: this.info!.dModel, ...taken } };
        }
        problems.push(result.problem);
        this.log(`collect: document '${document.id}' (request ${requestId}) came back incomplete: ${result.problem}${attempt === 0 ? '; retrying' : ''}`);
        // A lost end or lost rows may mean the tap reconnected: prove the new subscription works first.
        run.liveGeneration = -1;
      }
      const dropped = this.rowsDroppedReported > 0 ? ` (the model server has reported ${this.rowsDroppedReported} dropped rows so far)` : '';
      return { kind: 'error', error: err('SAEGATE_ERR_COLLECT_INCOMPLETE', document.id, `${problems.join('; then: ')}${dropped}`) };
    } catch (error) {
      return { kind: 'error', error };
    }
  }

  /**
   * Sends one request and waits for its rows. 'too-long' when the upstream refused the prompt
   * for the context length and the run skips those; throws for other upstream failures.
   */
  private async attempt(run: CollectRun, capture: RequestCapture, text: string, label: string, endTimeoutMs: number): Promise<AttemptResult | 'too-long'> {
    this.captures.set(capture.requestId, capture);
    try {
      let status: number;
      let body: string;
      try {
        const response = await request(run.url, {
          method: 'POST',
          headers: { ...run.headers, 'x-request-id': capture.requestId },
          body: JSON.stringify({ model: run.model, prompt: text, max_tokens: 1, temperature: 0 }),
          signal: run.signal,
          dispatcher: run.agent,
        });
        status = response.statusCode;
        body = await response.body.text();
      } catch (error) {
        if (run.signal.aborted) throw run.signal.reason;
        throw unreachable(run.upstream, label, error);
      }
      if (status !== 200) {
        const failure = parseFailure(status, body);
        if (isContextLengthFailure(failure) && run.tooLong === 'skip') {
          this.log(`collect: skipped ${label}: it does not fit the model's context (${failure.message})`);
          return 'too-long';
        }
        throw err('SAEGATE_ERR_COLLECT_UPSTREAM', run.upstream, label, `HTTP ${failure.status}${failure.code === null ? '' : ` ${failure.code}`}: ${failure.message}`);
      }
      return await capture.outcome({ endTimeoutMs, graceMs: run.graceMs }, run.signal);
    } finally {
      this.captures.delete(capture.requestId);
    }
  }

  /**
   * Makes sure the subscription on the current connection is in effect: a probe request must come
   * back with its rows. The subscribe message and the HTTP request travel on different
   * connections, so the first requests after a (re)connect could otherwise run unsubscribed.
   * Shared by the documents of a run; a no-op while nothing reconnected.
   */
  private ensureLive(run: CollectRun): Promise<void> {
    if (run.liveGeneration === this.generation && this.subscribed.size > 0) return Promise.resolve();
    run.liveProbe ??= this.probe(run).finally(() => {
      run.liveProbe = null;
    });
    return run.liveProbe;
  }

  private async probe(run: CollectRun): Promise<void> {
    const problems: string[] = [];
    for (let attempt = 0; attempt < PROBE_ATTEMPTS; attempt++) {
      await this.waitForServer(run.serverTimeoutMs, run.signal);
      const generation = this.generation;
      const capture = new RequestCapture(`collect-${run.id}-probe-${run.probes++}`, this.info!.dModel);
      const result = await this.attempt(run, capture, PROBE_TEXT, 'the readiness probe', Math.min(run.endTimeoutMs, PROBE_END_TIMEOUT_MS));
      if (result === 'too-long') throw err('SAEGATE_ERR_COLLECT_UPSTREAM', run.upstream, 'the readiness probe', `the one-word prompt '${PROBE_TEXT}' does not fit the context`);
      if (result.ok) {
        run.liveGeneration = generation;
        return;
      }
      if (result.noEnd) {
        throw err(
          'SAEGATE_ERR_COLLECT_NO_SERVER',
          `requests sent to ${run.upstream} do not show up on the tap at ${this.tapUrl} (${result.problem}); is that server started with --tap ${this.tapUrl}?`,
        );
      }
      problems.push(result.problem);
      await new Promise<void>((resolve) => setTimeout(resolve, PROBE_RETRY_MS));
    }
    throw err('SAEGATE_ERR_COLLECT_NO_SERVER', `the model server's rows for requests to ${run.upstream} do not arrive on the tap at ${this.tapUrl}: ${problems.join('; ')}`);
  }
}
