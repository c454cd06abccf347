/**
 * The proxy's configuration: its option table for the options system (src/common/options.ts), which
 * drives the command-line flags, the `SAEGATE_*` environment variables, the JSON config file and the
 * defaults, so the four can never drift apart. Precedence is flags > environment > config file >
 * defaults. Every value of every source is validated with zod; a bad one raises SAEGATE_ERR_CONFIG
 * naming where it came from (the flag, the variable, or the file and key) and what was expected.
 *
 * Naming rule: option `idleTimeoutMs` is the flag `--idle-timeout-ms`, the variable
 * `SAEGATE_IDLE_TIMEOUT_MS` and the config-file key `"idleTimeoutMs"`.
 */
import { isIP } from 'node:net';
import { z } from 'zod';
import { err } from '../common/errors.js';
import { custom, deriveEnv, flag, integer, oneOf, resolveOptions, type CommandSpec, type OptionSources, type OptionTable } from '../common/options.js';
import { isBodySteeringMode, upstreamSteeringModes, type UpstreamSteeringMode } from '../steering/upstream.js';

/** Everything `startProxy` needs to know; see docs/proxy.md for each option. */
export interface ProxyConfig {
  /** The model server's base URL (scheme, host, port, optional path prefix), without `/v1`. Required. */
  upstream: string;
  /**
   * A Unix socket the model server listens on (`saegate model serve --unix`): connections to the
   * upstream go there instead of to the URL's host and port (the URL still gives the Host header
   * and the path prefix). A co-located model server's writes cost it less than over loopback TCP.
   * Default none.
   */
  upstreamSocket: string | null;
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
  /**
   * How steering reaches the model server: `tap` (plans over the tap), `none` (never steer), or a
   * server's own body field for servers without the tap (`reference`, `easysteer`, `vllm-xargs`;
   * steering only, no activations). Default `tap`.
   */
  upstreamSteering: UpstreamSteeringMode;
  /** `easysteer`: directory the vector GGUF files are exported to, at the same path on the model server. Default none. */
  upstreamSteeringVectorDir: string | null;
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
  /** Longest a row a conditional policy waits on waits for its SAE batch to fill, ms. Default 2. */
  saeMaxDelayMs: number;
  /** Longest any other row (monitoring, live view) waits for its SAE batch to fill, ms; never less than saeMaxDelayMs. Default 100. */
  saeMonitorDelayMs: number;
  /** How long model servers may hold tapped rows, tokens and ends while no conditional policy is loaded, and, while one is, those of requests no conditional rule reads (or whose rules have all fired), ms (0: their own interval). Default 50. */
  tapMonitorDelayMs: number;
  /** Rows queued per SAE before the hard drop; sampling starts at half. Default 8192. */
  saeMaxQueuedRows: number;
  /** Worker threads (onnxruntime sessions) per SAE. Default 1. */
  saeWorkers: number;
  /** Most active features listed per row (a display cap; L0 and errors stay exact); 0 = every active feature. Default 0. */
  saeTopK: number;
  /** Log requests as JSON lines on stdout. Default false. */
  log: boolean;
}

export type ProxyConfigKey = keyof ProxyConfig;

const MiB = 1024 * 1024;
const DAY_MS = 86_400_000;

/** Milliseconds from 0 (off) to a day. */
const msUpToADay = integer(0, DAY_MS);

/** A bearer token: any non-empty string; null (in a file or code) is "none". */
const secret = custom(z.string().min(1), 'a non-empty string', 'TOKEN');

const host = custom(z.string().min(1).max(255).regex(/^[A-Za-z0-9.:\-[\]%]+$/), 'a host name or IP address', 'HOST');

const baseUrl = custom(
  z.string().transform((s, ctx) => {
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
  "an http:// or https:// base URL without '/v1', a query or a fragment (saegate forwards /v1/... paths as received)",
  'URL',
);

/**
 * The option table, in --help order. Every option is also the variable SAEGATE_<NAME> (deriveEnv).
 * To add an option: a field in ProxyConfig above, a row here, a row in docs/proxy.md's and the
 * README's tables (test/unit/cli/options-docs.test.ts checks both).
 */
export const proxyOptions = deriveEnv({
  upstream: { type: baseUrl, required: true, help: "model server base URL, e.g. http://127.0.0.1:8000 (no '/v1')" },
  host: { type: host, default: '127.0.0.1', help: 'listen address' },
  port: { type: integer(0, 65535), default: 9000, help: 'listen port (0 = any free port)' },
  upstreamSocket: { type: custom(z.string().min(1), 'a Unix socket path', 'PATH'), default: null, help: 'connect to the model server on this Unix socket (model serve --unix) instead of the URL\'s host and port' },
  tapToken: { type: secret, default: null, help: 'bearer token model servers present on /v1/tap (required off loopback)' },
  adminToken: { type: secret, default: null, help: 'bearer token for /admin/* (without one the admin API is off)' },
  requireTap: { type: flag, default: false, help: '/readyz fails until a model server is connected to the tap' },
  upstreamSteering: { type: oneOf(upstreamSteeringModes), default: 'tap', help: 'how steering reaches the model server: tap, none, or a body field (reference, easysteer, vllm-xargs; no activations)' },
  upstreamSteeringVectorDir: { type: custom(z.string().min(1), 'a directory path', 'DIR'), default: null, help: 'easysteer: directory vectors are exported to as GGUF (the server must see it at the same path)' },
  connectTimeoutMs: { type: msUpToADay, default: 5000, help: 'upstream connect timeout, ms (0 = none)' },
  headersTimeoutMs: { type: msUpToADay, default: 300_000, help: 'request sent -> response headers, ms (0 = none)' },
  firstTokenTimeoutMs: { type: msUpToADay, default: 60_000, help: 'streams: headers -> first body chunk, ms (0 = none)' },
  idleTimeoutMs: { type: msUpToADay, default: 60_000, help: 'longest gap between body chunks, ms (0 = none)' },
  totalTimeoutMs: { type: msUpToADay, default: 600_000, help: 'request forwarded -> response complete, retries included, ms (0 = none)' },
  maxBodyBytes: { type: integer(1, 1024 * MiB), default: 32 * MiB, help: 'largest request body, bytes (413 above)' },
  maxHeaderBytes: { type: integer(1024, 1024 * 1024), default: 16_384, help: 'largest request header block, bytes (431 above)' },
  maxStreams: { type: integer(1, 1_000_000), default: 1024, help: 'concurrent streaming requests (429 above)' },
  maxConnections: { type: integer(1, 1_000_000), default: 10_000, help: 'open client connections (further ones are closed on accept)' },
  clientHeadersTimeoutMs: { type: integer(1, 86_400_000), default: 10_000, help: 'time a client has to send its request head, ms (408 after)' },
  clientRequestTimeoutMs: { type: msUpToADay, default: 120_000, help: 'time a client has to send its whole request, ms (408 after; 0 = none)' },
  keepAliveTimeoutMs: { type: integer(1, 86_400_000), default: 5000, help: 'idle keep-alive client connections close after this, ms' },
  maxRequestsPerSocket: { type: integer(0, 1_000_000), default: 1000, help: 'requests per client connection (0 = unlimited)' },
  retryAfterSeconds: { type: integer(0, 3600), default: 1, help: "Retry-After on saegate's own 429/503, seconds" },
  retries: { type: integer(0, 10), default: 0, help: 'upstream retries before any byte reached the client (0 = off)' },
  retryMaxDelayMs: { type: integer(0, 600_000), default: 2000, help: 'total wait between retries of one request, ms' },
  retryBackoffMs: { type: integer(0, 60_000), default: 100, help: 'first backoff without Retry-After, ms; doubles' },
  upstreamConnections: { type: integer(0, 1_000_000), default: 0, help: 'most sockets to the upstream (0 = unlimited)' },
  readinessProbeTimeoutMs: { type: integer(1, 60_000), default: 1000, help: 'timeout of the /readyz upstream probe, ms' },
  readinessCacheMs: { type: integer(0, 60_000), default: 1000, help: 'how long a probe result is reused, ms' },
  shutdownTimeoutMs: { type: msUpToADay, default: 25_000, help: 'on SIGTERM, time in-flight requests get before being cut, ms' },
  drainDelayMs: { type: msUpToADay, default: 0, help: 'on SIGTERM, time to keep accepting with /readyz at 503, ms' },
  tapMaxFrameBytes: { type: integer(64, 2048 * MiB), default: 256 * MiB, help: 'largest tap frame accepted, bytes' },
  saeBatchRows: { type: integer(1, 65536), default: 256, help: 'SAE micro-batch size, rows' },
  saeMaxDelayMs: { type: integer(0, 60_000), default: 2, help: 'longest a row a conditional policy waits on waits for its SAE batch, ms' },
  tapMonitorDelayMs: { type: integer(0, 60_000), default: 50, help: 'how long model servers may hold tapped data while no conditional policy is loaded, and that of requests no conditional rule reads while one is, ms (0: their own --tap-flush-ms)' },
  saeMonitorDelayMs: { type: integer(0, 60_000), default: 100, help: 'longest any other SAE row waits for its batch, ms (at least --sae-max-delay-ms)' },
  saeMaxQueuedRows: { type: integer(1, 16 * MiB), default: 8192, help: 'rows queued per SAE before drops (sampling from half)' },
  saeWorkers: { type: integer(1, 64), default: 1, help: 'worker threads per SAE' },
  saeTopK: { type: integer(0, 1 << 20), default: 0, help: 'most features listed per row, the strongest (0: every active feature; L0 and errors are exact either way)' },
  log: { type: flag, default: false, help: 'log requests (JSON lines on stdout)' },
} as const satisfies OptionTable);

export const proxyConfigKeys = Object.keys(proxyOptions) as ProxyConfigKey[];

/** Variable naming the config file when `--config` is not given. */
export const CONFIG_FILE_ENV = 'SAEGATE_CONFIG';

/** The proxy's options as a command (without the CLI's own `--sae`: src/cli/serve.ts adds it). */
export const proxyCommand = {
  name: 'serve',
  synopsis: 'saegate serve --upstream URL [options]',
  description:
    'Runs the saegate proxy in front of an OpenAI-compatible model server: clients talk to saegate,\n' +
    'saegate forwards to the upstream, and model servers connect to its tap (/v1/tap).\n' +
    'Precedence: flags > environment > config file > defaults. See docs/proxy.md.',
  options: proxyOptions,
  configFile: { env: CONFIG_FILE_ENV },
} as const satisfies CommandSpec<typeof proxyOptions>;

/** True when `host` only accepts connections from this machine (127.0.0.0/8, ::1, localhost). */
export function isLoopbackHost(host: string): boolean {
  const h = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  if (h === 'localhost') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (isIP(h) === 6) return h === '::1' || /^::ffff:127\./i.test(h);
  return false;
}

/** Where `resolveProxyConfig` reads from. */
export type ConfigSources = Omit<OptionSources<typeof proxyOptions>, 'positionals' | 'overrides'> & {
  /** Options set in code; they take the place of flags (highest precedence). */
  overrides?: Partial<ProxyConfig>;
};

/**
 * Merges flags > environment > config file > defaults into a validated ProxyConfig. The config
 * file is `flags.config`, else `$SAEGATE_CONFIG`, else none. Every source is validated, the losing
 * ones too. Throws SAEGATE_ERR_CONFIG naming the flag, variable or file key of the first bad value,
 * or the missing required option.
 */
export function resolveProxyConfig(sources: ConfigSources): ProxyConfig {
  const config: ProxyConfig = resolveOptions(proxyCommand, sources);
  checkUpstreamSteering(config);
  return config;
}

/** Throws SAEGATE_ERR_CONFIG for `upstreamSteering` settings that contradict each other. */
export function checkUpstreamSteering(config: Pick<ProxyConfig, 'upstreamSteering' | 'upstreamSteeringVectorDir' | 'requireTap'>): void {
  const mode = config.upstreamSteering;
  if (config.requireTap && isBodySteeringMode(mode)) {
    throw err('SAEGATE_ERR_CONFIG', 'requireTap', `--upstream-steering ${mode} is for servers without the tap, so no model server would ever connect to it; drop --require-tap or use --upstream-steering tap`);
  }
  if (mode === 'easysteer' && config.upstreamSteeringVectorDir === null) {
    throw err('SAEGATE_ERR_CONFIG', 'upstreamSteeringVectorDir', '--upstream-steering easysteer needs --upstream-steering-vector-dir: EasySteer reads vectors from files on the server');
  }
  if (mode !== 'easysteer' && config.upstreamSteeringVectorDir !== null) {
    throw err('SAEGATE_ERR_CONFIG', 'upstreamSteeringVectorDir', `only --upstream-steering easysteer exports vector files (the mode is ${mode})`);
  }
}

/** The config without secrets, for `/admin/status` and the startup line. */
export function redactConfig(config: ProxyConfig): Record<string, unknown> {
  return { ...config, tapToken: config.tapToken === null ? null : 'set', adminToken: config.adminToken === null ? null : 'set' };
}
