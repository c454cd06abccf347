/**
 * Scheduling documents: runs a corpus through the upstream, at most `concurrency` documents in
 * flight, and yields each one's rows in corpus order. A document is one request under a request id
 * of its own; it is done when its HTTP response came back and its RequestCapture (fed by the
 * collector's sink) covers every prompt position. An incomplete document is run again once under
 * a new id, then fails the collection with SAEGATE_ERR_COLLECT_INCOMPLETE.
 *
 * Before the first document, and after anything that may mean the tap reconnected, a readiness
 * probe must come back with its rows: the subscribe message and the HTTP request travel on
 * different connections, so the first requests after a (re)connect could otherwise run
 * unsubscribed. Probes are shared by the documents of a run.
 */
import { randomUUID } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { err } from '../../common/errors.js';
import { RequestCapture, type AttemptResult } from './capture.js';
import type { CollectSink } from './sink.js';
import { CompletionsClient, completionsUrl, isContextLengthFailure } from './upstream.js';

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

/** Options of `ActivationCollector.collect`. */
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
  /**
   * Extra fields of every request body (the readiness probe's too), e.g. the reference
   * server's `steering` field to collect steered activations. They cannot replace `model`,
   * `prompt`, `max_tokens` or `temperature`. Default none.
   */
  requestFields?: Readonly<Record<string, unknown>>;
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
/** Default of `serverTimeoutMs`, and of `ActivationCollector.waitForServer`. */
export const DEFAULT_SERVER_TIMEOUT_MS = 30_000;
const DEFAULT_END_TIMEOUT_MS = 30_000;
const DEFAULT_ROW_GRACE_MS = 1000;
/** Readiness probes before giving up: each one is a full request, none should be needed twice. */
const PROBE_ATTEMPTS = 5;
const PROBE_RETRY_MS = 50;
/** How long the probe waits for its `end`; a request the tap never sees means the wrong upstream. */
const PROBE_END_TIMEOUT_MS = 10_000;
const PROBE_TEXT = 'Hello';

function positiveInteger(name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback;
  if (!Number.isSafeInteger(v) || v < 1) throw err('SAEGATE_ERR_CONFIG', name, `a positive integer, got ${v}`);
  return v;
}

type DocumentOutcome = { kind: 'document'; document: CollectedDocument; retried: boolean } | { kind: 'skipped'; retried: boolean } | { kind: 'error'; error: unknown };

/** What one scheduler needs from its collector. */
export interface SchedulerContext {
  sink: CollectSink;
  log: (line: string) => void;
}

/** One `collect()` call: resolved options, its upstream client, and whether the subscription was seen working. */
export class CollectScheduler {
  private readonly sink: CollectSink;
  private readonly log: (line: string) => void;
  private readonly id = randomUUID().slice(0, 8);
  private readonly client: CompletionsClient;
  private readonly signal: AbortSignal;
  private readonly keep: number;
  private readonly tooLong: 'skip' | 'error';
  private readonly serverTimeoutMs: number;
  private readonly endTimeoutMs: number;
  private readonly graceMs: number;
  private readonly dModel: number;
  /** Connection generation the last successful probe ran under; -1 before the first. */
  private liveGeneration = -1;
  private liveProbe: Promise<void> | null = null;
  private probes = 0;

  private constructor(context: SchedulerContext, client: CompletionsClient, signal: AbortSignal, settings: { keep: number; tooLong: 'skip' | 'error'; serverTimeoutMs: number; endTimeoutMs: number; graceMs: number; dModel: number }) {
    this.sink = context.sink;
    this.log = context.log;
    this.client = client;
    this.signal = signal;
    this.keep = settings.keep;
    this.tooLong = settings.tooLong;
    this.serverTimeoutMs = settings.serverTimeoutMs;
    this.endTimeoutMs = settings.endTimeoutMs;
    this.graceMs = settings.graceMs;
    this.dModel = settings.dModel;
  }

  /**
   * Runs `documents` (see ActivationCollector.collect). `controller` aborts the run; the caller
   * links it to the user's signal and to close().
   */
  static async *run(
    context: SchedulerContext,
    documents: Iterable<CollectInputDocument> | AsyncIterable<CollectInputDocument>,
    options: CollectOptions,
    controller: AbortController,
  ): AsyncGenerator<CollectedDocument, void, undefined> {
    completionsUrl(options.upstream); // A bad URL fails now, not after waiting for a server.
    const concurrency = positiveInteger('concurrency', options.concurrency, DEFAULT_CONCURRENCY);
    const keep = options.maxTokensPerDocument === undefined ? Number.POSITIVE_INFINITY : positiveInteger('maxTokensPerDocument', options.maxTokensPerDocument, 1);
    const tooLong = options.tooLong ?? 'skip';
    if (tooLong !== 'skip' && tooLong !== 'error') throw err('SAEGATE_ERR_CONFIG', 'tooLong', `'skip' or 'error', got '${String(tooLong)}'`);
    // Every document in flight listens on it (its HTTP request and its wait for the tap).
    setMaxListeners(4 * concurrency + 16, controller.signal);
    let client: CompletionsClient | null = null;
    const window: Promise<DocumentOutcome>[] = [];
    const iterator = Symbol.asyncIterator in documents ? documents[Symbol.asyncIterator]() : documents[Symbol.iterator]();
    const progress: CollectProgress = { documents: 0, rows: 0, skipped: 0, retried: 0 };
    try {
      const serverTimeoutMs = positiveInteger('serverTimeoutMs', options.serverTimeoutMs, DEFAULT_SERVER_TIMEOUT_MS);
      const info = await context.sink.waitForServer(serverTimeoutMs, controller.signal);
      client = new CompletionsClient({
        upstream: options.upstream,
        model: options.model ?? info.modelId,
        apiKey: options.apiKey,
        requestFields: options.requestFields,
        connections: concurrency + 1,
        signal: controller.signal,
      });
      const scheduler = new CollectScheduler(context, client, controller.signal, {
        keep,
        tooLong,
        serverTimeoutMs,
        endTimeoutMs: positiveInteger('endTimeoutMs', options.endTimeoutMs, DEFAULT_END_TIMEOUT_MS),
        graceMs: positiveInteger('rowGraceMs', options.rowGraceMs, DEFAULT_ROW_GRACE_MS),
        dModel: info.dModel,
      });
      await scheduler.ensureLive();
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
          window.push(scheduler.collectDocument(document, index++));
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
      await Promise.all(window);
      if (iterator.return !== undefined) await iterator.return();
      await client?.close();
    }
  }

  /** One document: an attempt, and a second one when the first came back incomplete. Never rejects. */
  private async collectDocument(document: CollectInputDocument, index: number): Promise<DocumentOutcome> {
    try {
      const problems: string[] = [];
      for (let attempt = 0; attempt < 2; attempt++) {
        await this.ensureLive();
        const requestId = `collect-${this.id}-${index}-${attempt}`;
        const capture = new RequestCapture(requestId, this.dModel);
        const result = await this.attempt(capture, document.text, `document '${document.id}' (corpus index ${index})`, this.endTimeoutMs);
        if (result === 'too-long') return { kind: 'skipped', retried: attempt > 0 };
        if (result.ok) {
          const taken = capture.take(this.keep);
          return { kind: 'document', retried: attempt > 0, document: { id: document.id, index, dModel: this.dModel, ...taken } };
        }
        problems.push(result.problem);
        this.log(`collect: document '${document.id}' (request ${requestId}) came back incomplete: ${result.problem}${attempt === 0 ? '; retrying' : ''}`);
        // A lost end or lost rows may mean the tap reconnected: prove the new subscription works first.
        this.liveGeneration = -1;
      }
      const reported = this.sink.rowsDroppedReported;
      const dropped = reported > 0 ? ` (the model server has reported ${reported} dropped rows so far)` : '';
      return { kind: 'error', error: err('SAEGATE_ERR_COLLECT_INCOMPLETE', document.id, `${problems.join('; then: ')}${dropped}`) };
    } catch (error) {
      return { kind: 'error', error };
    }
  }

  /**
   * Sends one request and waits for its rows. 'too-long' when the upstream refused the prompt
   * for the context length and the run skips those; throws for other upstream failures.
   */
  private async attempt(capture: RequestCapture, text: string, label: string, endTimeoutMs: number): Promise<AttemptResult | 'too-long'> {
    this.sink.capture(capture);
    try {
      const answer = await this.client.complete(capture.requestId, text, label);
      if (!answer.ok) {
        if (isContextLengthFailure(answer.failure) && this.tooLong === 'skip') {
          this.log(`collect: skipped ${label}: it does not fit the model's context (${answer.failure.message})`);
          return 'too-long';
        }
        throw this.client.failed(label, answer.failure);
      }
      return await capture.outcome({ endTimeoutMs, graceMs: this.graceMs }, this.signal);
    } finally {
      this.sink.release(capture);
    }
  }

  /** Makes sure the subscription on the current connection is in effect (see the module comment). */
  private ensureLive(): Promise<void> {
    if (this.liveGeneration === this.sink.generation && this.sink.live) return Promise.resolve();
    this.liveProbe ??= this.probe().finally(() => {
      this.liveProbe = null;
    });
    return this.liveProbe;
  }

  private async probe(): Promise<void> {
    const problems: string[] = [];
    const { upstream } = this.client;
    const tapUrl = this.sink.tapUrl;
    for (let attempt = 0; attempt < PROBE_ATTEMPTS; attempt++) {
      await this.sink.waitForServer(this.serverTimeoutMs, this.signal);
      const generation = this.sink.generation;
      const capture = new RequestCapture(`collect-${this.id}-probe-${this.probes++}`, this.dModel);
      const result = await this.attempt(capture, PROBE_TEXT, 'the readiness probe', Math.min(this.endTimeoutMs, PROBE_END_TIMEOUT_MS));
      if (result === 'too-long') throw err('SAEGATE_ERR_COLLECT_UPSTREAM', upstream, 'the readiness probe', `the one-word prompt '${PROBE_TEXT}' does not fit the context`);
      if (result.ok) {
        this.liveGeneration = generation;
        return;
      }
      if (result.noEnd) {
        throw err(
          'SAEGATE_ERR_COLLECT_NO_SERVER',
          `requests sent to ${upstream} do not show up on the tap at ${tapUrl} (${result.problem}); is that server started with --tap ${tapUrl}?`,
        );
      }
      problems.push(result.problem);
      await new Promise<void>((resolve) => setTimeout(resolve, PROBE_RETRY_MS));
    }
    throw err('SAEGATE_ERR_COLLECT_NO_SERVER', `the model server's rows for requests to ${upstream} do not arrive on the tap at ${tapUrl}: ${problems.join('; ')}`);
  }
}
