/**
 * `saegate serve`: the proxy. Flags, `SAEGATE_*` variables and the config file all come from the
 * option table in src/proxy/config.ts (resolved by src/common/options.ts); this file adds `--sae`,
 * starts the proxy and prints where to look.
 */
import path from 'node:path';
import { Registry } from 'prom-client';
import { err, SaegateError } from '../common/errors.js';
import { parseCommand, text, type CommandSpec } from '../common/options.js';
import { formatProblem } from '../policies/load.js';
import { PolicyManager } from '../policies/manager.js';
import { ConditionRuntime } from '../policies/runtime.js';
import { livePlanResolver, liveSink } from '../proxy/live/observe.js';
import type { LiveView } from '../proxy/live/routes.js';
import { emptyPlanResolver, type PlanResolver } from '../proxy/plan.js';
import { CountingSink } from '../tap/sink.js';
import { createLiveView } from './live-view.js';
import { VectorStore } from '../steering/store.js';
import { isBodySteeringMode, type UpstreamSteeringMode } from '../steering/upstream.js';
import { isLoopbackHost, proxyCommand, proxyOptions } from '../proxy/config.js';
import { startProxy, type ProxyServer, type StartProxyOptions } from '../proxy/server.js';
import { loadSae } from '../sae/load.js';
import { SaeSink } from '../sae/sink.js';
import type { SaeWeights } from '../sae/types.js';

const serveOptions = {
  ...proxyOptions,
  sae: {
    type: text('DIR'),
    multiple: true,
    noConfigFile: true,
    help: "run this SAE (SAELens or sparsify directory) over its hook point's tapped rows",
  },
  policies: {
    type: text('DIR'),
    noConfigFile: true,
    help: 'policy directory (docs/policies.md), watched and hot-reloaded; SAEs are named by their directory name',
  },
} as const;

/** `saegate serve`: the proxy's option table plus the repeatable `--sae DIR`. */
export const serveCommand = { ...proxyCommand, options: serveOptions } as const satisfies CommandSpec<typeof serveOptions>;

/**
 * Starts the proxy with an SAE pipeline over `saes` as its activation sink (none when `saes` is
 * empty): the SAEs load and their worker sessions start before the proxy listens, so a bad file
 * stops start-up; the proxy and the pipeline export their metrics from one registry, served at
 * /metrics; every tap client is asked for the SAEs' hooks (f16, prompt rows too); closing the
 * proxy closes the pipeline. The live view (`/ui`, docs/live-view.md) sees every request through
 * the plan resolver and the sink, SAE results and policy triggers through their listeners.
 */
export async function startProxyWithSaes(
  options: StartProxyOptions,
  saes: SaeWeights[],
  policyDir?: string,
): Promise<{ server: ProxyServer; sink: SaeSink | undefined; policies: PolicyManager | undefined; conditions: ConditionRuntime | undefined; live: LiveView }> {
  const registry = new Registry();
  const upstreamSteering = options.upstreamSteering ?? 'tap';
  if (saes.length > 0 && isBodySteeringMode(upstreamSteering)) {
    throw new SaegateError('SAEGATE_ERR_CONFIG', ['sae', `--upstream-steering ${upstreamSteering} is for servers without the tap, which stream no activations for an SAE to read; drop --sae or use --upstream-steering tap`]);
  }
  const policies = policyDir === undefined ? undefined : startPolicies(policyDir, saes, registry, upstreamSteering);
  const sink = saes.length > 0 ? await SaeSink.create({
          saes,
          registry,
          maxBatchRows: options.saeBatchRows,
          maxDelayMs: options.saeMaxDelayMs,
          maxQueuedRows: options.saeMaxQueuedRows,
          workers: options.saeWorkers,
          ...(options.saeTopK !== undefined && options.saeTopK > 0 && { topK: options.saeTopK }),
        }) : undefined;
  // Flags and conditional policies: evaluated on the SAE results (conditions need SAEs; flags
  // without `when` do not), plan updates through the proxy's tap host (which exists once the
  // proxy is built, hence the late binding), tokens and plan acks seen through the sink.
  let server: ProxyServer | undefined;
  const conditions = policies ? new ConditionRuntime({
    registry,
    saeByHook: new Map(saes.map((sae) => [sae.config.hookName, saeName(sae)])),
    tap: {
      planUpdate: (requestId, steering) => server === undefined
        ? { delivered: false, error: err('SAEGATE_ERR_TAP_UNROUTED', requestId, 'the proxy is not started') }
        : server.tap.planUpdate(requestId, steering),
    },
    aborter: { abortRequest: (requestId, abort) => server?.abortRequest(requestId, abort) ?? false },
  }) : undefined;
  const planResolver: PlanResolver | undefined = policies && conditions && { resolve: (request) => conditions.resolve(request.requestId, policies.resolve(request)) };
  const offResults = conditions && sink?.onResult(conditions.onResult);
  const live = createLiveView(saes);
  const offLive = sink?.onResult((batch) => live.hub.features(batch));
  conditions?.onRecord((record) => live.hub.record(record));
  try {
    server = await startProxy({
      ...options,
      sink: liveSink(live.hub, (sink && conditions ? conditions.observing(sink) : sink) ?? new CountingSink()),
      registry,
      planResolver: livePlanResolver(live.hub, planResolver ?? emptyPlanResolver),
      liveView: live,
    });
  } catch (error) {
    offResults?.();
    offLive?.();
    policies?.close();
    await sink?.close();
    throw error;
  }
  if (policies) {
    const closeWithPolicies = server.close.bind(server);
    server.close = async (closeOptions) => {
      policies.close();
      await closeWithPolicies(closeOptions);
    };
  }
  if (sink) {
    server.tap.subscribeAll({ hooks: sink.hooks, dtype: 'f16', includePrompt: true });
    const closeProxy = server.close.bind(server);
    server.close = async (closeOptions) => {
      await closeProxy(closeOptions);
      await sink.close();
    };
  }
  return { server, sink, policies, conditions, live };
}

/** An SAE's name in policy files: its directory's name. */
function saeName(sae: SaeWeights): string {
  return path.basename(path.resolve(sae.config.source));
}

/**
 * Loads the policy directory before anything listens: an invalid set stops start-up with every
 * problem listed; later invalid changes keep the last good set (PolicyManager).
 */
function startPolicies(dir: string, saes: SaeWeights[], registry: Registry, upstreamSteering: UpstreamSteeringMode): PolicyManager {
  const byName = new Map(saes.map((sae) => [saeName(sae), sae] as const));
  const manager = new PolicyManager({
    path: dir,
    registry,
    context: () => ({
      vectors: new VectorStore({ baseDir: path.resolve(dir), saes: new Map([...byName].map(([name, sae]) => [name, { hook: sae.config.hookName, weights: sae }])) }),
      saes: new Map([...byName].map(([name, sae]) => [name, { dSae: sae.config.dSae, hook: sae.config.hookName }])),
      upstreamSteering,
    }),
  });
  const first = manager.start();
  if (!first.ok) {
    manager.close();
    throw new SaegateError('SAEGATE_ERR_CONFIG', ['policies', `invalid policy files:\n${first.problems.map(formatProblem).join('\n')}`]);
  }
  return manager;
}

export async function serve(argv: string[]): Promise<ProxyServer> {
  const { sae: saeDirs, policies: policyDir, ...config } = parseCommand(serveCommand, argv, process.env);
  const { server, sink, policies } = await startProxyWithSaes(config, saeDirs.map((dir) => loadSae(dir)), policyDir);
  process.stdout.write(
    `saegate proxy: forwarding to ${config.upstream}\n` +
      `  OpenAI API   ${server.url}/v1\n` +
      `  tap          ${server.tapUrl} (${config.tapToken === null ? 'no token: loopback only' : 'bearer token required'})\n` +
      (isBodySteeringMode(config.upstreamSteering) ? `  steering     ${server.steering.description} (--upstream-steering ${config.upstreamSteering})\n` : '') +
      `  metrics      ${server.url}/metrics   health ${server.url}/healthz, ${server.url}/readyz\n` +
      `  admin        ${config.adminToken === null ? 'off (no --admin-token)' : `${server.url}/admin/status (bearer token)`}\n` +
      `  live view    ${server.url}/ui${isLoopbackHost(config.host) ? '' : config.adminToken === null ? ' (refused off loopback without --admin-token)' : ' (open /ui?token=ADMIN_TOKEN once)'}\n` +
      (sink ? `  SAEs         ${sink.hooks.join(', ')} (tapped as f16, prompt and generated rows)\n` : '') +
      (policies ? `  policies     ${policyDir} (set version ${policies.current?.version ?? 0}: ${policies.policies().map((p) => p.name).join(', ') || 'none'}; watched)\n` : ''),
  );
  return server;
}
