/**
 * `startProxy`: builds the app, checks the rules that depend on where it listens (a tap token
 * off loopback), listens, routes `GET /v1/tap` upgrades to the tap, and owns graceful shutdown.
 *
 * Shutdown, in order (docs/proxy.md, "Shutdown"):
 * 1. `/readyz` answers 503 (load balancers stop sending), requests are still served;
 * 2. after `drainDelayMs`, the listener closes: no new connections, idle keep-alive ones closed;
 * 3. in-flight requests run to their end, up to `shutdownTimeoutMs`; those still running then are
 *    cut with SAEGATE_ERR_SHUTTING_DOWN (streams get an `event: error`), and new requests on
 *    still-open connections are refused with 503;
 * 4. tap connections close (1001), the upstream pool is destroyed, fastify closes.
 */
import type { AddressInfo } from 'node:net';
import { err, SaegateError } from '../common/errors.js';
import { listenError } from '../common/errors-net.js';
import { buildProxyApp, type ProxyApp, type ProxyAppOptions } from './app.js';
import { isLoopbackHost, resolveProxyConfig, type ProxyConfig } from './config.js';

/** Options of {@link startProxy}: any config option (upstream required) plus the pluggable parts. */
export type StartProxyOptions = Partial<ProxyConfig> & { upstream: string } & Omit<ProxyAppOptions, 'config'>;

export interface ProxyServer extends ProxyApp {
  /** `http://host:port` the proxy listens on. */
  url: string;
  /** `ws://host:port/v1/tap`, for model servers. */
  tapUrl: string;
  /**
   * Graceful shutdown (see the module comment); resolves when everything is closed. Calling it
   * again returns the same promise. `timeoutMs` overrides `shutdownTimeoutMs`.
   */
  close(options?: { timeoutMs?: number }): Promise<void>;
}

/** Throws SAEGATE_ERR_CONFIG when the tap would be open to the network without a token. */
export function checkTapExposure(config: ProxyConfig): void {
  if (config.tapToken === null && !isLoopbackHost(config.host)) {
    throw new SaegateError('SAEGATE_ERR_CONFIG', [
      'tapToken',
      `required when listening on '${config.host}', which is not loopback: anyone who can reach /v1/tap could stream activations and receive steering plans. Set --tap-token (or SAEGATE_TAP_TOKEN) and give model servers the same token, or listen on 127.0.0.1`,
    ]);
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolves true when `promise` settled within `ms`, false otherwise. */
async function within(promise: Promise<void>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([promise.then(() => true as const), expired]);
  } finally {
    clearTimeout(timer);
  }
}

/** Builds, checks and starts the proxy. */
export async function startProxy(options: StartProxyOptions): Promise<ProxyServer> {
  const { planResolver, sink, registry, logger, monitor, liveView, ...overrides } = options;
  const config = resolveProxyConfig({ overrides });
  checkTapExposure(config);
  const proxy = buildProxyApp({ config, planResolver, sink, registry, logger, monitor, liveView });
  const { app, tap, inFlight, state } = proxy;
  try {
    await app.listen({ host: config.host, port: config.port });
  } catch (error) {
    await app.close();
    throw listenError(error, config.host, config.port);
  }
  tap.attach(app.server, '/v1/tap');
  liveView?.attach(app.server, ['/v1/tap']);
  const address = app.server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;

  let closing: Promise<void> | null = null;
  const shutdown = async (timeoutMs: number): Promise<void> => {
    state.phase = 'draining';
    if (config.drainDelayMs > 0) await delay(config.drainDelayMs);
    // Stop accepting; Node also closes idle keep-alive connections here.
    app.server.close();
    if (!(await within(inFlight.idle(), timeoutMs))) {
      app.log.warn({ inFlight: inFlight.size, timeoutMs }, 'shutdown: cutting requests still in flight');
      state.phase = 'closing';
      inFlight.abortAll(err('SAEGATE_ERR_SHUTTING_DOWN'));
      await within(inFlight.idle(), 1000);
    }
    state.phase = 'closing';
    liveView?.close();
    await tap.close(1000);
    app.server.closeAllConnections();
    await app.close();
  };

  return {
    ...proxy,
    url: `http://${host}:${address.port}`,
    tapUrl: `ws://${host}:${address.port}/v1/tap`,
    close(closeOptions = {}) {
      closing ??= shutdown(closeOptions.timeoutMs ?? config.shutdownTimeoutMs);
      return closing;
    },
  };
}
