/**
 * Every error saegate raises on purpose carries a stable `SAEGATE_ERR_*` code, documented in
 * docs/errors.md. Modeled on fastify's `lib/errors.js`: one table maps a code to its message
 * template, HTTP status and class, so a code means the same thing wherever it is thrown.
 */

/** Error kinds as OpenAI clients see them in `error.type`. */
export type OpenAIErrorType =
  | 'invalid_request_error'
  | 'not_found_error'
  | 'server_error'
  | 'timeout_error'
  | 'rate_limit_error';

/**
 * Who is at fault, which decides what to do about an error (docs/errors.md, "Kinds"):
 * - `client`: the input of whoever called saegate (an HTTP request, a flag, a config or model
 *   file) is wrong; fixing the input fixes it. HTTP status 4xx, or 500 for operator files at start.
 * - `upstream`: a server or peer saegate depends on (the model server, a tap peer) failed or
 *   misbehaved. 502/503/504.
 * - `runtime`: the environment or load (a device, a worker thread, a taken port, shutdown, limits
 *   on concurrency). 429/500/503.
 * - `bug`: saegate code called one of its own APIs with arguments it cannot use. Always 500: a
 *   programmer error never borrows a client status.
 */
export type ErrorKind = 'client' | 'upstream' | 'runtime' | 'bug';

interface ErrorSpec {
  /** Message template; `%s` placeholders are filled in order. */
  readonly message: string;
  /** HTTP status when the error reaches an HTTP client. */
  readonly status: number;
  readonly type: OpenAIErrorType;
  readonly kind: ErrorKind;
}

const specs = {
  // Model files
  SAEGATE_ERR_MODEL_FILE: { message: "model file '%s': %s", status: 500, type: 'server_error', kind: 'client' },
  SAEGATE_ERR_MODEL_CONFIG: { message: "model config '%s': %s", status: 500, type: 'server_error', kind: 'client' },
  SAEGATE_ERR_TOKENIZER_FILE: { message: "tokenizer file '%s': %s", status: 500, type: 'server_error', kind: 'client' },
  SAEGATE_ERR_TOKENIZER_MISMATCH: {
    message: "tokenizer '%s' does not match model '%s': %s",
    status: 500,
    type: 'server_error',
    kind: 'client',
  },
  SAEGATE_ERR_ROWS_FILE: { message: "activation rows file '%s': %s", status: 400, type: 'invalid_request_error', kind: 'client' },
  SAEGATE_ERR_SAFETENSORS: { message: "safetensors file '%s': %s", status: 500, type: 'server_error', kind: 'client' },
  SAEGATE_ERR_SAE_FILE: { message: "SAE '%s': %s", status: 500, type: 'server_error', kind: 'client' },
  SAEGATE_ERR_TRAIN_CHECKPOINT: { message: "training checkpoint '%s': %s", status: 500, type: 'server_error', kind: 'client' },
  SAEGATE_ERR_CORPUS_FILE: { message: "corpus file '%s': %s", status: 400, type: 'invalid_request_error', kind: 'client' },
  SAEGATE_ERR_FEATURE_REPORT: { message: "feature report '%s': %s", status: 400, type: 'invalid_request_error', kind: 'client' },
  SAEGATE_ERR_FEATURE_LABELS: { message: "feature labels '%s': %s", status: 400, type: 'invalid_request_error', kind: 'client' },
  SAEGATE_ERR_VECTOR_FILE: { message: "steering vector '%s': %s", status: 400, type: 'invalid_request_error', kind: 'client' },
  SAEGATE_ERR_VECTOR_REFERENCE: { message: "steering vector reference '%s': %s", status: 400, type: 'invalid_request_error', kind: 'client' },
  SAEGATE_ERR_DOWNLOAD: { message: "download '%s' failed: %s", status: 502, type: 'server_error', kind: 'upstream' },
  // Drift monitoring (src/monitor)
  SAEGATE_ERR_BASELINE_FILE: { message: "baseline file '%s': %s", status: 500, type: 'server_error', kind: 'client' },
  SAEGATE_ERR_BASELINE_MISMATCH: { message: "baseline '%s' does not match the monitored SAE: %s", status: 500, type: 'server_error', kind: 'client' },
  SAEGATE_ERR_WATCH_FILE: { message: "watched-features file '%s': %s", status: 500, type: 'server_error', kind: 'client' },
  SAEGATE_ERR_ALERT_RULES: { message: "alert rules '%s': %s", status: 500, type: 'server_error', kind: 'client' },
  SAEGATE_ERR_MONITOR_ARGUMENT: { message: 'invalid monitor argument: %s', status: 500, type: 'server_error', kind: 'bug' },
  SAEGATE_ERR_FEATURE_ARGUMENT: { message: 'invalid feature statistics argument: %s', status: 500, type: 'server_error', kind: 'bug' },
  // Runtime
  SAEGATE_ERR_DEVICE_UNAVAILABLE: { message: 'device %s is not available: %s', status: 500, type: 'server_error', kind: 'runtime' },
  SAEGATE_ERR_RUNTIME: { message: 'model runtime failed: %s', status: 500, type: 'server_error', kind: 'runtime' },
  SAEGATE_ERR_ARGUMENT: { message: 'invalid argument: %s', status: 500, type: 'server_error', kind: 'bug' },
  SAEGATE_ERR_WORKER_EXITED: { message: 'worker thread exited: %s', status: 500, type: 'server_error', kind: 'runtime' },
  // Requests
  SAEGATE_ERR_BAD_REQUEST: { message: '%s', status: 400, type: 'invalid_request_error', kind: 'client' },
  SAEGATE_ERR_INVALID_JSON: { message: 'request body is not valid JSON: %s', status: 400, type: 'invalid_request_error', kind: 'client' },
  SAEGATE_ERR_CONTEXT_LENGTH: {
    message: "This model's maximum context length is %s tokens, but the request asks for %s tokens (%s in the prompt plus max_tokens %s).",
    status: 400,
    type: 'invalid_request_error',
    kind: 'client',
  },
  SAEGATE_ERR_MODEL_NOT_FOUND: { message: "The model '%s' does not exist. Available: %s", status: 404, type: 'not_found_error', kind: 'client' },
  SAEGATE_ERR_NOT_FOUND: { message: 'no route %s %s', status: 404, type: 'not_found_error', kind: 'client' },
  SAEGATE_ERR_STEERING: { message: 'invalid steering: %s', status: 400, type: 'invalid_request_error', kind: 'client' },
  SAEGATE_ERR_PLAN_TIMEOUT: {
    message: "steering plan '%s' for request '%s' did not arrive on the tap within %s ms",
    status: 503,
    type: 'server_error',
    kind: 'upstream',
  },
  SAEGATE_ERR_TOO_MANY_REQUESTS: { message: 'too many requests in flight: %s', status: 429, type: 'rate_limit_error', kind: 'runtime' },
  SAEGATE_ERR_BODY_TOO_LARGE: { message: 'request body is larger than the limit of %s bytes', status: 413, type: 'invalid_request_error', kind: 'client' },
  SAEGATE_ERR_REQUEST_TIMEOUT: {
    message: 'the request was not received in time: %s',
    status: 408,
    type: 'invalid_request_error',
    kind: 'client',
  },
  SAEGATE_ERR_SHUTTING_DOWN: { message: 'server is shutting down', status: 503, type: 'server_error', kind: 'runtime' },
  // Tap protocol
  SAEGATE_ERR_TAP_FRAME: { message: 'malformed tap frame: %s', status: 400, type: 'invalid_request_error', kind: 'client' },
  SAEGATE_ERR_TAP_VERSION: { message: 'tap protocol version mismatch: %s', status: 400, type: 'invalid_request_error', kind: 'client' },
  SAEGATE_ERR_TAP_AUTH: { message: 'tap authentication failed: %s', status: 401, type: 'invalid_request_error', kind: 'client' },
  SAEGATE_ERR_TAP_ARGUMENT: { message: 'invalid tap argument: %s', status: 500, type: 'server_error', kind: 'bug' },
  SAEGATE_ERR_TAP_CLOSED: { message: 'tap connection closed: %s', status: 503, type: 'server_error', kind: 'upstream' },
  SAEGATE_ERR_TAP_UNROUTED: { message: "no tap connection is known to serve request '%s': %s", status: 503, type: 'server_error', kind: 'upstream' },
  SAEGATE_ERR_TAP_PLAN_REJECTED: {
    message: "steering plan '%s' for request '%s' was rejected on the tap: %s",
    status: 500,
    type: 'server_error',
    kind: 'upstream',
  },
  // Activation collection (src/lab/collect/)
  SAEGATE_ERR_COLLECT_NO_SERVER: { message: 'no model server to collect from: %s', status: 503, type: 'server_error', kind: 'upstream' },
  SAEGATE_ERR_COLLECT_SERVER: { message: "model server '%s' cannot serve this collection: %s", status: 400, type: 'invalid_request_error', kind: 'upstream' },
  SAEGATE_ERR_COLLECT_UPSTREAM: { message: 'upstream %s failed for %s: %s', status: 502, type: 'server_error', kind: 'upstream' },
  SAEGATE_ERR_COLLECT_INCOMPLETE: { message: "document '%s' came back from the tap incomplete, twice: %s", status: 502, type: 'server_error', kind: 'upstream' },
  SAEGATE_ERR_PROMPT_SET_EMPTY: { message: "prompt set '%s' holds no prompts: %s", status: 400, type: 'invalid_request_error', kind: 'client' },
  SAEGATE_ERR_PROMPT_TOO_LONG: { message: "prompt set '%s': %s", status: 400, type: 'invalid_request_error', kind: 'client' },
  // Steering evaluation (src/lab/eval/)
  SAEGATE_ERR_EVAL_UPSTREAM: { message: 'model server %s failed for %s: %s', status: 502, type: 'server_error', kind: 'upstream' },
  SAEGATE_ERR_UNKNOWN_HOOK: { message: "model '%s' has no hook point '%s'; it has: %s", status: 400, type: 'invalid_request_error', kind: 'client' },
  // Proxy
  SAEGATE_ERR_UPSTREAM_UNAVAILABLE: { message: 'upstream %s is unavailable: %s', status: 502, type: 'server_error', kind: 'upstream' },
  SAEGATE_ERR_UPSTREAM_TIMEOUT: { message: 'upstream %s timeout: %s (%s = %s ms)', status: 504, type: 'timeout_error', kind: 'upstream' },
  SAEGATE_ERR_UPSTREAM_STREAM: { message: 'upstream failed after the response started: %s', status: 502, type: 'server_error', kind: 'upstream' },
  SAEGATE_ERR_TOO_MANY_STREAMS: { message: 'too many concurrent streams: the limit is %s', status: 429, type: 'rate_limit_error', kind: 'runtime' },
  SAEGATE_ERR_HEADERS_TOO_LARGE: { message: 'request headers are larger than the limit of %s bytes', status: 431, type: 'invalid_request_error', kind: 'client' },
  SAEGATE_ERR_ADMIN_AUTH: { message: 'admin authentication failed: %s', status: 401, type: 'invalid_request_error', kind: 'client' },
  SAEGATE_ERR_INTERNAL: { message: 'internal error: %s', status: 500, type: 'server_error', kind: 'bug' },
  SAEGATE_ERR_STEERING_UNAVAILABLE: {
    message: "request '%s' needs steering (%s) but no connected model server can apply it",
    status: 503,
    type: 'server_error',
    kind: 'upstream',
  },
  // Configuration / CLI
  SAEGATE_ERR_CONFIG: { message: "invalid configuration '%s': %s", status: 500, type: 'server_error', kind: 'client' },
  SAEGATE_ERR_LISTEN: { message: 'cannot listen on %s: %s', status: 500, type: 'server_error', kind: 'runtime' },
  SAEGATE_ERR_CLI_USAGE: { message: '%s', status: 400, type: 'invalid_request_error', kind: 'client' },
} as const satisfies Record<string, ErrorSpec>;

export type SaegateErrorCode = keyof typeof specs;

function format(template: string, args: readonly unknown[]): string {
  let i = 0;
  return template.replace(/%s/g, () => (i < args.length ? String(args[i++]) : '%s'));
}

/** The one error class of the project; `code` selects message template, status and type. */
export class SaegateError extends Error {
  readonly code: SaegateErrorCode;
  readonly status: number;
  readonly type: OpenAIErrorType;
  /** Who is at fault; see {@link ErrorKind}. */
  readonly kind: ErrorKind;
  /** Request parameter the error is about, for OpenAI's `error.param`. */
  readonly param: string | null;

  constructor(code: SaegateErrorCode, args: readonly unknown[] = [], options: { cause?: unknown; param?: string } = {}) {
    const spec: ErrorSpec = specs[code];
    super(format(spec.message, args), options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'SaegateError';
    this.code = code;
    this.status = spec.status;
    this.type = spec.type;
    this.kind = spec.kind;
    this.param = options.param ?? null;
  }

  /**
   * Rebuilds an error that crossed a thread or process boundary (worker threads post plain
   * `{code, message}` objects), keeping its already-formatted message.
   */
  static fromWire(wire: { code: string; message: string }): SaegateError {
    const code = (wire.code in specs ? wire.code : 'SAEGATE_ERR_RUNTIME') as SaegateErrorCode;
    const e = new SaegateError(code);
    e.message = wire.message;
    return e;
  }

  /** The OpenAI-shaped error body: `{"error": {"message", "type", "param", "code"}}`. */
  toJSON(): { error: { message: string; type: OpenAIErrorType; param: string | null; code: SaegateErrorCode } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** Shorthand constructor: `err('SAEGATE_ERR_MODEL_FILE', path, 'truncated')`. */
export function err(code: SaegateErrorCode, ...args: unknown[]): SaegateError {
  return new SaegateError(code, args);
}

export function isSaegateError(value: unknown, code?: SaegateErrorCode): value is SaegateError {
  return value instanceof SaegateError && (code === undefined || value.code === code);
}

/** All codes, for the docs test that checks docs/errors.md lists every one. */
export const errorCodes: readonly SaegateErrorCode[] = Object.keys(specs) as SaegateErrorCode[];
