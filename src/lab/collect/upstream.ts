/**
 * The collector's OpenAI client: each collection request is a one-token, temperature-0
 * `POST <upstream>/v1/completions` under a request id of the collector's own (`x-request-id`), so
 * the model server's tap frames carry that id. Bodies are small and read whole.
 *
 * Errors: undici's are described by the proxy's one translation helper (describeUpstreamError in
 * src/proxy/errors.ts) and become SAEGATE_ERR_COLLECT_UPSTREAM here, the only place they do; an
 * upstream's error answer is parsed in the shapes OpenAI and vLLM give it.
 */
import { Agent, request } from 'undici';
import { err, SaegateError } from '../../common/errors.js';
import { describeUpstreamError } from '../../proxy/errors.js';

/** `<upstream>/v1/completions`, accepting a base URL with or without `/v1`. Throws SAEGATE_ERR_CONFIG. */
export function completionsUrl(upstream: string): string {
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

/** An upstream's error answer, as OpenAI (`{error: {message, code}}`) or vLLM (`{message, code}`) shape it. */
export interface UpstreamFailure {
  status: number;
  message: string;
  code: string | null;
}

export function parseFailure(status: number, body: string): UpstreamFailure {
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
export function isContextLengthFailure(failure: UpstreamFailure): boolean {
  if (failure.status !== 400) return false;
  return failure.code === 'SAEGATE_ERR_CONTEXT_LENGTH' || failure.code === 'context_length_exceeded' || /maximum context length|context length/i.test(failure.message);
}

export interface CompletionsClientOptions {
  /** The upstream base URL as the user gave it (named in errors). */
  upstream: string;
  /** The `model` of each request. */
  model: string;
  /** Bearer token for the upstream's API. Default none. */
  apiKey?: string;
  /** Extra body fields of every request (`CollectOptions.requestFields`). Default none. */
  requestFields?: Readonly<Record<string, unknown>>;
  /** Sockets to the upstream at most (documents in flight plus the probe). */
  connections: number;
  /** Aborts every request in flight. */
  signal: AbortSignal;
}

/** What came back for one completion: 200, or the parsed failure. */
export type CompletionAnswer = { ok: true } | { ok: false; failure: UpstreamFailure };

export class CompletionsClient {
  readonly upstream: string;
  private readonly url: string;
  private readonly model: string;
  private readonly headers: Record<string, string>;
  private readonly requestFields: Readonly<Record<string, unknown>>;
  private readonly agent: Agent;
  private readonly signal: AbortSignal;

  /** Throws SAEGATE_ERR_CONFIG for an upstream that is not an http(s) URL. */
  constructor(options: CompletionsClientOptions) {
    this.upstream = options.upstream;
    this.url = completionsUrl(options.upstream);
    this.model = options.model;
    this.headers = { 'content-type': 'application/json', ...(options.apiKey === undefined ? {} : { authorization: `Bearer ${options.apiKey}` }) };
    this.requestFields = options.requestFields ?? {};
    this.agent = new Agent({ connections: options.connections });
    this.signal = options.signal;
  }

  /**
   * Runs `prompt` as a one-token completion under `requestId`. Resolves with the answer (any
   * status); rejects with the signal's reason on abort and SAEGATE_ERR_COLLECT_UPSTREAM when no
   * response came at all (`label` names what the request was for). The body carries
   * `requestFields` too.
   */
  async complete(requestId: string, prompt: string, label: string): Promise<CompletionAnswer> {
    let status: number;
    let body: string;
    try {
      const response = await request(this.url, {
        method: 'POST',
        headers: { ...this.headers, 'x-request-id': requestId },
        // The fixed fields last: requestFields cannot turn a collection request into something else.
        body: JSON.stringify({ ...this.requestFields, model: this.model, prompt, max_tokens: 1, temperature: 0 }),
        signal: this.signal,
        dispatcher: this.agent,
      });
      status = response.statusCode;
      body = await response.body.text();
    } catch (error) {
      if (this.signal.aborted) throw this.signal.reason;
      if (error instanceof SaegateError) throw error;
      throw new SaegateError('SAEGATE_ERR_COLLECT_UPSTREAM', [this.upstream, label, `no response: ${describeUpstreamError(error)}`], { cause: error });
    }
    return status === 200 ? { ok: true } : { ok: false, failure: parseFailure(status, body) };
  }

  /** The upstream's failure as the error a collection fails with. */
  failed(label: string, failure: UpstreamFailure): SaegateError {
    return err('SAEGATE_ERR_COLLECT_UPSTREAM', this.upstream, label, `HTTP ${failure.status}${failure.code === null ? '' : ` ${failure.code}`}: ${failure.message}`);
  }

  /** Closes the sockets (after requests in flight). */
  close(): Promise<void> {
    return this.agent.close();
  }
}
