/**
 * The proxy's configuration: one table of options drives the command-line flags, the `SAEGATE_*`
 * environment variables, the JSON config file and the defaults, so the four can never drift apart.
 * Precedence is flags > environment > config file > defaults. Every value is validated with zod;
 * a bad one raises SAEGATE_ERR_CONFIG naming where it came from (the flag, the variable, or the file
 * and key) and what was expected.
 *
 * Naming rule: option `idleTimeoutMs` is the flag `--idle-timeout-ms`, the variable
 * `SAEGATE_IDLE_TIMEOUT_MS` and the config-file key `"idleTimeoutMs"`.
 */
import fs from 'node:fs';
import { isIP } from 'node:net';
import { z } from 'zod';
import { SaegateError } from '../common/errors.js';

/** Everything `startProxy` needs to know; see docs/proxy.md for each option. */
export interface ProxyConfig {
  /** The model server's base URL (scheme, host, port, optional path prefix), without `/v1`. Required. */
  upstream: string;
  /** Listen address. Default 127.0.0.1. */
  host: string;
  /** Listen port; 0 picks a free one. Default 9000. */
  port: number;
  /** Bearer token model servers present on the tap upgrade. Required unless `host` is loopback. Default none. */
  tapToken: string | null;
  /** Bearer token for `/admin/*`; without one the admin API is off (404). Default none. */
  adminToken: string | null;
  /** `/readyz` fails until at least one model server is connected to the tap. Default false. */
  requireTap: boolean;
  /** TCP (and TLS) connect timeout to the upstream, ms; 0 disables. Default 5000. */
  connectTimeoutMs: number;
  /** From the request being sent to the upstream's response headers, ms; 0 disables. Default 300000. */
  headersTimeoutMs: number;
  /** Streams only: from the response headers to the first body chunk, ms; 0 disables. Default 60000. */
  firstTokenTimeoutMs: number;
  /** Longest gap between two body chunks (non-streaming: also headers to first chunk), ms; 0 disables. Default 60000. */
  idleTimeoutMs: number;
  /** From forwarding the request to the last byte of the response, retries included, ms; 0 disables. Default 600000. */
  totalTimeoutMs: number;
  /** Largest request body, bytes; larger ones get 413. Default 32 MiB. */
  maxBodyBytes: number;
  /** Largest request header block, bytes; larger ones get 431. Default 16384. */
  maxHeaderBytes: number;
  /** Streaming requests in flight before new ones get 429. Default 1024. */
  maxStreams: number;
  /** Most open client connections; further ones are closed on accept. Default 10000. */
  maxConnections: number;
  /** Time a client connection has to send a complete request head, ms; 408 and close after. Default 10000. */
  clientHeadersTimeoutMs: number;
  /** Time a client connection has to send a complete request (head and body), ms; 408 and close after; 0 = none. Default 120000. */
  clientRequestTimeoutMs: number;
  /** How long an idle keep-alive client connection stays open, ms. Default 5000. */
  keepAliveTimeoutMs: number;
  /** Requests served on one client connection before it is closed; 0 = unlimited. Default 1000. */
  maxRequestsPerSocket: number;
  /** `Retry-After` seconds on saegate's own 429 and 503 answers. Default 1. */
  retryAfterSeconds: number;
  /** Retries of an upstream attempt that failed before any byte reached the client (502/503/429, refused, reset). 0 = off. Default 0. */
  retries: number;
  /** Time a request may spend waiting between retries in all, ms; a Retry-After beyond what is left ends retrying. Default 2000. */
  retryMaxDelayMs: number;
  /** First backoff when the upstream gave no Retry-After, ms; doubles per retry. Default 100. */
  retryBackoffMs: number;
  /** Most sockets to the upstream; 0 = unlimited. Each stream holds one for its duration. Default 0. */
  upstreamConnections: number;
  /** Timeout of the readiness probe `GET {upstream}/v1/models`, ms. Default 1000. */
  readinessProbeTimeoutMs: number;
  /** How long a readiness probe result is reused, ms. Default 1000. */
  readinessCacheMs: number;
  /** On SIGTERM/SIGINT, how long in-flight requests may run before they are cut, ms. Default 25000. */
  shutdownTimeoutMs: number;
  /** On SIGTERM/SIGINT, how long to keep accepting (with /readyz at 503) before closing the listener, ms. Default 0. */
  drainDelayMs: number;
  /** Largest tap frame accepted, bytes. Default 256 MiB. */
  tapMaxFrameBytes: number;
  /** SAE micro-batch size, rows (with `--sae`). Default 256. */
  saeBatchRows: number;
  /** Longest a row waits for its SAE batch to fill, ms. Default 2. */
  saeMaxDelayMs: number;
  /** Rows queued per SAE before the hard drop; sampling starts at half. Default 8192. */
  saeMaxQueuedRows: number;
  /** Worker threads (onnxruntime sessions) per SAE. Default 1. */
  saeWorkers: number;
  /** Active features reported per row; 0 = k for TopK SAEs, else 64. Default 0. */
  saeTopK: number;
  /** Log requests as JSON lines on stdout. Default false. */
  log: boolean;
}

export type ProxyConfigKey = keyof ProxyConfig;

const MiB = 1024 * 1024;
const DAY_MS = 86_400_000;

type Kind =
  | { type: 'int'; min: number; max: number }
  | { type: 'bool' }
  | { type: 'string' }
  | { type: 'secret' }
  | { type: 'url' }
  | { type: 'host' };

interface OptionSpec {
  kind: Kind;
  /** Default; undefined = required. */
  default: ProxyConfig[ProxyConfigKey] | undefined;
  /** One line for --help. */
  help: string;
}

const int = (min: number, max: number): Kind => ({ type: 'int', min, max });

/** The option table, in --help order. */
export const proxyOptions = {
  upstream: { kind: { type: 'url' }, default: undefined, help: "model server base URL, e.g. http://127.0.0.1:8000 (no '/v1')" },
  host: { kind: { type: 'host' }, default: '127.0.0.1', help: 'listen address' },
  port: { kind: int(0, 65535), default: 9000, help: 'listen port (0 = any free port)' },
  tapToken: { kind: { type: 'secret' }, default: null, help: 'bearer token model servers present on /v1/tap (required off loopback)' },
  adminToken: { kind: { type: 'secret' }, default: null, help: 'bearer token for /admin/* (without one the admin API is off)' },
  requireTap: { kind: { type: 'bool' }, default: false, help: '/readyz fails until a model server is connected to the tap' },
  connectTimeoutMs: { kind: int(0, DAY_MS), default: 5000, help: 'upstream connect timeout (0 = none)' },
  headersTimeoutMs: { kind: int(0, DAY_MS), default: 300_000, help: 'request sent -> response headers (0 = none)' },
  firstTokenTimeoutMs: { kind: int(0, DAY_MS), default: 60_000, help: 'streams: headers -> first body chunk (0 = none)' },
  idleTimeoutMs: { kind: int(0, DAY_MS), default: 60_000, help: 'longest gap between body chunks (0 = none)' },
  totalTimeoutMs: { kind: int(0, DAY_MS), default: 600_000, help: 'request forwarded -> response complete, retries included (0 = none)' },
  maxBodyBytes: { kind: int(1, 1024 * MiB), default: 32 * MiB, help: 'largest request body (413 above)' },
  maxHeaderBytes: { kind: int(1024, 1024 * 1024), default: 16_384, help: 'largest request header block (431 above)' },
  maxStreams: { kind: int(1, 1_000_000), default: 1024, help: 'concurrent streaming requests (429 above)' },
  maxConnections: { kind: int(1, 1_000_000), default: 10_000, help: 'open client connections (further ones are closed)' },
  clientHeadersTimeoutMs: { kind: int(1, DAY_MS), default: 10_000, help: 'time a client has to send its request head (408 after)' },
  clientRequestTimeoutMs: { kind: int(0, DAY_MS), default: 120_000, help: 'time a client has to send its whole request (408 after; 0 = none)' },
  keepAliveTimeoutMs: { kind: int(1, DAY_MS), default: 5000, help: 'idle keep-alive client connections close after this' },
  maxRequestsPerSocket: { kind: int(0, 1_000_000), default: 1000, help: 'requests per client connection (0 = unlimited)' },
  retryAfterSeconds: { kind: int(0, 3600), default: 1, help: "Retry-After on saegate's own 429/503" },
  retries: { kind: int(0, 10), default: 0, help: 'upstream retries before any byte reached the client (0 = off)' },
  retryMaxDelayMs: { kind: int(0, 600_000), default: 2000, help: 'total wait between retries of one request' },
  retryBackoffMs: { kind: int(0, 60_000), default: 100, help: 'first backoff without Retry-After; doubles' },
  upstreamConnections: { kind: int(0, 1_000_000), default: 0, help: 'most sockets to the upstream (0 = unlimited)' },
  readinessProbeTimeoutMs: { kind: int(1, 60_000), default: 1000, help: 'timeout of the /readyz upstream probe' },
  readinessCacheMs: { kind: int(0, 60_000), default: 1000, help: 'how long a probe result is reused' },
  shutdownTimeoutMs: { kind: int(0, DAY_MS), default: 25_000, help: 'on SIGTERM, time in-flight requests get before being cut' },
  drainDelayMs: { kind: int(0, DAY_MS), default: 0, help: 'on SIGTERM, time to keep accepting with /readyz at 503' },
  tapMaxFrameBytes: { kind: int(64, 2048 * MiB), default: 256 * MiB, help: 'largest tap frame accepted' },
  saeBatchRows: { kind: int(1, 65536), default: 256, help: 'SAE micro-batch size in rows' },
  saeMaxDelayMs: { kind: int(0, 60_000), default: 2, help: 'longest a row waits for its SAE batch to fill' },
  saeMaxQueuedRows: { kind: int(1, 16 * MiB), default: 8192, help: 'rows queued per SAE before drops (sampling from half)' },
  saeWorkers: { kind: int(1, 64), default: 1, help: 'worker threads per SAE' },
  saeTopK: { kind: int(0, 1 << 20), default: 0, help: 'features reported per row (0: k for TopK SAEs, else 64)' },
  log: { kind: { type: 'bool' }, default: false, help: 'log requests (JSON lines on stdout)' },
} as const satisfies Record<ProxyConfigKey, OptionSpec>;

export const proxyConfigKeys = Object.keys(proxyOptions) as ProxyConfigKey[];

/** `idleTimeoutMs` -> `idle-timeout-ms`. */
export function flagName(key: ProxyConfigKey): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** `idleTimeoutMs` -> `SAEGATE_IDLE_TIMEOUT_MS`. */
export function envName(key: ProxyConfigKey): string {
  return `SAEGATE_${flagName(key).replaceAll('-', '_').toUpperCase()}`;
}

/** Variable naming the config file when `--config` is not given. */
export const CONFIG_FILE_ENV = 'SAEGATE_CONFIG';

/** True when `host` only accepts connections from this machine (127.0.0.0/8, ::1, localhost). */
export function isLoopbackHost(host: string): boolean {
  const h = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  if (h === 'localhost') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (isIP(h) === 6) return h === '::1' || /^::ffff:127\./i.test(h);
  return false;
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value);
  return JSON.stringify(value) ?? String(value);
}

const trueStrings = new Set(['true', '1', 'yes', 'on']);
const falseStrings = new Set(['false', '0', 'no', 'off']);

/** What a value of this kind must look like, for error messages. */
function expectation(kind: Kind): string {
  switch (kind.type) {
    case 'int':
      return `expected an integer from ${kind.min} to ${kind.max}`;
    case 'bool':
      return 'expected true or false';
    case 'string':
    case 'secret':
      return 'expected a non-empty string';
    case 'url':
      return "expected an http:// or https:// base URL without '/v1', a query or a fragment (saegate forwards /v1/... paths as received)";
    case 'host':
      return 'expected a host name or IP address';
  }
}

const schemas = new Map<Kind['type'], z.ZodType>([
  ['bool', z.union([z.boolean(), z.string().transform((s, ctx) => {
    const v = s.trim().toLowerCase();
    if (trueStrings.has(v)) return true;
    if (falseStrings.has(v)) return false;
    ctx.addIssue({ code: 'custom', message: 'not a boolean' });
    return z.NEVER;
  })])],
  ['string', z.string().min(1)],
  ['secret', z.string().min(1)],
  ['host', z.string().min(1).max(255).regex(/^[A-Za-z0-9.:\-[\]%]+$/)],
  [
    'url',
    z
      .string()
      .transform((s, ctx) => {
        let url: URL;
        try {
          url = new URL(s);
        } catch {
          ctx.addIssue({ code: 'custom', message: 'not a URL' });
          return z.NEVER;
        }
        const path = url.pathname.replace(/\/+$/, '');
        if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.search !== '' || url.hash !== '' || /\/v1$/.test(path) || url.username !== '') {
          ctx.addIssue({ code: 'custom', message: 'not a base URL' });
          return z.NEVER;
        }
        return `${url.origin}${path}`;
      }),
  ],
]);

function schemaFor(kind: Kind): z.ZodType {
  if (kind.type === 'int') {
    const number = z.number().int().min(kind.min).max(kind.max);
    return z.union([number, z.string().regex(/^\s*-?\d+\s*$/).transform(Number).pipe(number)]);
  }
  const schema = schemas.get(kind.type);
  if (schema === undefined) throw new Error(`no schema for ${kind.type}`);
  return schema;
}

/** Validates one value; `source` names where it came from in the error. */
function validate(key: ProxyConfigKey, value: unknown, source: string): ProxyConfig[ProxyConfigKey] {
  const spec: OptionSpec = proxyOptions[key];
  const parsed = schemaFor(spec.kind).safeParse(value);
  if (!parsed.success) throw new SaegateError('SAEGATE_ERR_CONFIG', [source, `${expectation(spec.kind)}, got ${describe(value)}`]);
  return parsed.data as ProxyConfig[ProxyConfigKey];
}

/** A partial config with, per key, where the value came from (for later error messages). */
type Layer = Map<ProxyConfigKey, { value: unknown; source: string }>;

function isConfigKey(key: string): key is ProxyConfigKey {
  return Object.hasOwn(proxyOptions, key);
}

/** Reads and checks a JSON config file: an object whose keys are option names. */
export function readConfigFile(file: string): Partial<Record<ProxyConfigKey, unknown>> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    throw new SaegateError('SAEGATE_ERR_CONFIG', [file, `cannot read the config file: ${(error as Error).message}`]);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new SaegateError('SAEGATE_ERR_CONFIG', [file, `expected a JSON object: ${(error as Error).message}`]);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new SaegateError('SAEGATE_ERR_CONFIG', [file, `expected a JSON object, got ${describe(parsed)}`]);
  }
  const out: Partial<Record<ProxyConfigKey, unknown>> = {};
  for (const [key, value] of Object.entries(parsed)) {
    if (!isConfigKey(key)) throw new SaegateError('SAEGATE_ERR_CONFIG', [`${file}: ${key}`, `unknown key; known keys: ${proxyConfigKeys.join(', ')}`]);
    out[key] = value;
  }
  return out;
}

/** Where `resolveProxyConfig` reads from. */
export interface ConfigSources {
  /** Parsed command-line flags, kebab-case names as `node:util` parseArgs returns them (`config` names the file). */
  flags?: Readonly<Record<string, string | boolean | undefined>>;
  /** Environment; default none (pass `process.env` explicitly). */
  env?: Readonly<Record<string, string | undefined>>;
  /** Options set in code; they take the place of flags (highest precedence). */
  overrides?: Partial<ProxyConfig>;
}

/**
 * Merges flags > environment > config file > defaults into a validated ProxyConfig. The config
 * file is `flags.config`, else `$SAEGATE_CONFIG`, else none. Throws SAEGATE_ERR_CONFIG naming the
 * flag, variable or file key of the first bad value, or the missing required option.
 */
export function resolveProxyConfig(sources: ConfigSources): ProxyConfig {
  const flags = sources.flags ?? {};
  const env = sources.env ?? {};
  const layers: Layer[] = [];

  const code: Layer = new Map();
  for (const [key, value] of Object.entries(sources.overrides ?? {})) {
    if (!isConfigKey(key)) throw new SaegateError('SAEGATE_ERR_CONFIG', [key, `unknown option; known options: ${proxyConfigKeys.join(', ')}`]);
    if (value !== undefined) code.set(key, { value, source: key });
  }
  layers.push(code);

  const fromFlags: Layer = new Map();
  for (const key of proxyConfigKeys) {
    const value = flags[flagName(key)];
    if (value !== undefined) fromFlags.set(key, { value, source: `--${flagName(key)}` });
  }
  layers.push(fromFlags);

  const fromEnv: Layer = new Map();
  for (const key of proxyConfigKeys) {
    const value = env[envName(key)];
    // An empty variable counts as unset, the way shells and compose files usually mean it.
    if (value !== undefined && value !== '') fromEnv.set(key, { value, source: envName(key) });
  }
  layers.push(fromEnv);

  const flagFile = flags.config;
  const file = typeof flagFile === 'string' ? flagFile : env[CONFIG_FILE_ENV] || undefined;
  if (file !== undefined) {
    const fromFile: Layer = new Map();
    for (const [key, value] of Object.entries(readConfigFile(file))) {
      if (isConfigKey(key) && value !== undefined) fromFile.set(key, { value, source: `${file}: ${key}` });
    }
    layers.push(fromFile);
  }

  const out: Partial<Record<ProxyConfigKey, ProxyConfig[ProxyConfigKey]>> = {};
  for (const key of proxyConfigKeys) {
    const hit = layers.map((layer) => layer.get(key)).find((entry) => entry !== undefined);
    if (hit !== undefined) {
      out[key] = hit.value === null && proxyOptions[key].default === null ? null : validate(key, hit.value, hit.source);
      continue;
    }
    const fallback = proxyOptions[key].default;
    if (fallback === undefined) {
      throw new SaegateError('SAEGATE_ERR_CONFIG', [key, `required; give --${flagName(key)}, ${envName(key)} or "${key}" in the config file`]);
    }
    out[key] = fallback;
  }
  return out as ProxyConfig;
}

/** The config without secrets, for `/admin/status` and the startup line. */
export function redactConfig(config: ProxyConfig): Record<string, unknown> {
  return { ...config, tapToken: config.tapToken === null ? null : 'set', adminToken: config.adminToken === null ? null : 'set' };
}
