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
import { FeatureScreen } from '../policies/screen.js';
import { monitorDriftSource } from '../proxy/live/drift.js';
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
import { monitoredSink, type MonitoredSink } from '../monitor/monitored-sink.js';
import type { MonitorService } from '../monitor/service.js';
import { projectingSink } from '../monitor/projection-sink.js';
import { createMonitor, loadProjections, monitorOptions, policyMonitoring, splitMonitorFlags, unexportedWatches, type MonitorFlags } from './serve-monitor.js';
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
  ...monitorOptions,
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
  monitorFlags: MonitorFlags = {},
): Promise<{ server: ProxyServer; sink: SaeSink | undefined; policies: PolicyManager | undefined; conditions: ConditionRuntime | undefined; monitor: MonitorService | undefined; live: LiveView }> {
  // Serve's whole option set may come in `options`: the monitor's flags are taken out of it.
  const split = splitMonitorFlags(options);
  options = split.proxy as StartProxyOptions;
  monitorFlags = { ...split.flags, ...monitorFlags };
  const registry = new Registry();
  const upstreamSteering = options.upstreamSteering ?? 'tap';
  if (saes.length > 0 && isBodySteeringMode(upstreamSteering)) {
    throw new SaegateError('SAEGATE_ERR_CONFIG', ['sae', `--upstream-steering ${upstreamSteering} is for servers without the tap, which stream no activations for an SAE to read; drop --sae or use --upstream-steering tap`]);
  }
  // The drift monitor runs over every SAE and projection; its files are read before anything starts (it starts nothing itself yet).
  const projections = loadProjections(monitorFlags);
  if (projections.length > 0 && isBodySteeringMode(upstreamSteering)) {
    throw new SaegateError('SAEGATE_ERR_CONFIG', ['projection', `--upstream-steering ${upstreamSteering} is for servers without the tap, which stream no activations to project; drop --projection or use --upstream-steering tap`]);
  }
  const policies = policyDir === undefined ? undefined : startPolicies(policyDir, saes, registry, upstreamSteering);
  let monitor: MonitorService | undefined;
  try {
    const fromPolicies = policies && policyMonitoring(policies.policies());
    monitor = createMonitor(saes, monitorFlags, registry, fromPolicies, projections);
    // Series are fixed at start: a reload that watches new features says they need a restart.
    if (policies && monitor) {
      policies.onLoad((result) => {
        if (!result.ok) return;
        const missing = unexportedWatches(policyMonitoring(policies.policies()), monitor!.watched());
        if (missing.length > 0) process.stderr.write(`saegate: policy set ${result.version} watches ${missing.join(', ')}, exported after a restart (watched-feature series are fixed at start)\n`);
      });
    }
  } catch (error) {
    policies?.close();
    throw error;
  }
  const sink = saes.length > 0 ? await SaeSink.create({
          saes,
          registry,
          maxBatchRows: options.saeBatchRows,
          maxDelayMs: options.saeMaxDelayMs,
          monitorDelayMs: options.saeMonitorDelayMs,
          maxQueuedRows: options.saeMaxQueuedRows,
          workers: options.saeWorkers,
          ...(options.saeTopK !== undefined && options.saeTopK > 0 && { topK: options.saeTopK }),
        }) : undefined;
  // Flags and conditional policies: evaluated on the SAE results (conditions need SAEs; flags
  // without `when` do not), plan updates through the proxy's tap host (which exists once the
  // proxy is built, hence the late binding), tokens and plan acks seen through the sink.
  let server: ProxyServer | undefined;
  // While no loaded policy has a condition, nothing needs the tapped data within milliseconds:
  // model servers may then hold it for --tap-monitor-delay-ms and write it that many times less.
  // While one has, the subscription takes that back, and requests no conditional rule reads (or
  // whose rules have all fired) get it per request instead.
  const monitorDelay = options.tapMonitorDelayMs ?? 0;
  const tapDelay = (): number | undefined => ((policies && ConditionRuntime.hasConditions(policies.policies())) || monitorDelay <= 0 ? undefined : monitorDelay);
  let subscribedDelay = tapDelay();
  const conditions = policies ? new ConditionRuntime({
    registry,
    saeByHook: new Map(saes.map((sae) => [sae.config.hookName, saeName(sae)])),
    // Rows no unfired rule can fire on are settled on arrival and skip the short deadline.
    screens: new Map(saes.flatMap((sae) => {
      const screen = FeatureScreen.forPrecision(sae, sink?.precision(sae.config.hookName) ?? 'f16');
      return screen === null ? [] : [[saeName(sae), screen] as const];
    })),
    tap: {
      planUpdate: (requestId, steering, maxDelayMs) => server === undefined
        ? { delivered: false, error: err('SAEGATE_ERR_TAP_UNROUTED', requestId, 'the proxy is not started') }
        : server.tap.planUpdate(requestId, steering, maxDelayMs),
    },
    relaxedTapDelayMs: () => (subscribedDelay === undefined && monitorDelay > 0 ? monitorDelay : null),
    aborter: { abortRequest: (requestId, abort) => server?.abortRequest(requestId, abort) ?? false },
  }) : undefined;
  const planResolver: PlanResolver | undefined = policies && conditions && { resolve: (request) => conditions.resolve(request.requestId, policies.resolve(request)) };
  const offResults = conditions && sink?.onResult(conditions.onResult);
  // Rows a conditional rule waits on get the short batch deadline; the rest only feed monitoring.
  sink?.setUrgency(conditions ? (hook, requestIds) => conditions.waitsOn(hook, requestIds) : () => false);
  // The condition runtime sees tokens, plan acks and the tapped rows (projection conditions, and
  // the feature screen settling rows no rule can fire on before the SAE sees them), with or
  // without SAEs.
  const observedSaes = conditions ? conditions.observing(sink ?? new CountingSink()) : sink;
  // Projection monitors read the tapped rows themselves, beside (or without) the SAE pipeline.
  const observed = monitor && projections.length > 0 ? projectingSink(observedSaes, projections, monitor) : observedSaes;
  const tapSide = observed && monitor ? monitoredSink(observed, monitor) : undefined;
  // The chart plots the monitor's drift scores when there is a monitor, else the rates the view counts.
  const live = createLiveView(saes, monitor ? { drift: monitorDriftSource(monitor) } : {});
  const offLive = sink?.onResult((batch) => live.hub.features(batch));
  conditions?.onRecord((record) => live.hub.record(record));
  try {
    server = await startProxy({
      ...options,
      sink: liveSink(live.hub, tapSide?.sink ?? observed ?? new CountingSink()),
      registry,
      monitor,
      planResolver: livePlanResolver(live.hub, planResolver ?? emptyPlanResolver),
      liveView: live,
    });
  } catch (error) {
    offResults?.();
    offLive?.();
    policies?.close();
    await sink?.close();
    await monitor?.close();
    throw error;
  }
  if (policies) {
    const closeWithPolicies = server.close.bind(server);
    server.close = async (closeOptions) => {
      policies.close();
      await closeWithPolicies(closeOptions);
    };
  }
  // The tap streams the SAEs' hooks, the projection monitors' and those the policies' projection
  // conditions read (of the set loaded at start; a reload needing another hook needs a restart).
  const tappedHooks = [...new Set([...(sink?.hooks ?? []), ...projections.map((p) => p.hook), ...(policies ? ConditionRuntime.projectionHooks(policies.policies()) : [])])];
  const subscribe = (): void => void server!.tap.subscribeAll({ hooks: tappedHooks, dtype: 'f16', includePrompt: true, ...(subscribedDelay !== undefined && { maxDelayMs: subscribedDelay }) });
  if (tappedHooks.length > 0 || subscribedDelay !== undefined) subscribe();
  policies?.onLoad((result) => {
    const next = tapDelay();
    if (!result.ok || next === subscribedDelay) return;
    subscribedDelay = next;
    subscribe();
  });
  if (sink || projections.length > 0) {
    const unsubscribe = monitor && tapSide ? startMonitor(monitor, sink, tapSide, server, monitorFlags) : () => {};
    const closeProxy = server.close.bind(server);
    server.close = async (closeOptions) => {
      await closeProxy(closeOptions);
      await sink?.close();
      unsubscribe();
      await monitor?.close(); // writes a recording in progress
    };
  }
  return { server, sink, policies, conditions, monitor, live };
}

/** Feeds the monitor the SAE results, logs through the proxy's logger, starts its timer and a recording. */
function startMonitor(monitor: MonitorService, sink: SaeSink | undefined, tapSide: MonitoredSink, server: ProxyServer, flags: MonitorFlags): () => void {
  monitor.logger = server.app.log;
  monitor.tapModel = tapSide.modelId;
  const off = sink?.onResult((batch) => monitor.offerResults(batch)) ?? (() => {});
  monitor.start();
  if (flags.recordBaseline !== undefined) monitor.startRecording(flags.recordBaseline, flags.duration ?? null);
  return off;
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
  const { sae: saeDirs, policies: policyDir, baseline, watch, maxWatchedFeatures, alertRules, recordBaseline, duration, projection, ...config } = parseCommand(serveCommand, argv, process.env);
  const monitorFlags = { baseline, watch, maxWatchedFeatures, alertRules, recordBaseline, duration, projection };
  const { server, sink, policies, monitor } = await startProxyWithSaes(config, saeDirs.map((dir) => loadSae(dir)), policyDir, monitorFlags);
  process.stdout.write(
    `saegate proxy: forwarding to ${config.upstream}${config.upstreamSocket !== null ? ` over unix socket ${config.upstreamSocket}` : ''}\n` +
      `  OpenAI API   ${server.url}/v1\n` +
      `  tap          ${server.tapUrl} (${config.tapToken === null ? 'no token: loopback only' : 'bearer token required'})\n` +
      (isBodySteeringMode(config.upstreamSteering) ? `  steering     ${server.steering.description} (--upstream-steering ${config.upstreamSteering})\n` : '') +
      `  metrics      ${server.url}/metrics   health ${server.url}/healthz, ${server.url}/readyz\n` +
      `  admin        ${config.adminToken === null ? 'off (no --admin-token)' : `${server.url}/admin/status (bearer token)`}\n` +
      `  live view    ${server.url}/ui${isLoopbackHost(config.host) ? '' : config.adminToken === null ? ' (refused off loopback without --admin-token)' : ' (open /ui?token=ADMIN_TOKEN once)'}\n` +
      (sink ? `  SAEs         ${sink.hooks.join(', ')} (tapped as f16, prompt and generated rows)\n` : '') +
      ((projection?.length ?? 0) > 0 ? `  projections  ${monitor?.saes.filter((m) => m.projection === true).map((m) => `${m.sae}@${m.hook}`).join(', ')}\n` : '') +
      (monitor ? `  drift        ${config.adminToken === null ? '' : `${server.url}/admin/drift; `}baselines: ${monitor.readiness().saes.map((m) => `${m.sae} ${m.drift ? 'loaded' : (m.problem?.code ?? 'none')}`).join(', ')}${recordBaseline === undefined ? '' : `; recording to ${recordBaseline}`}\n` : '') +
      (policies ? `  policies     ${policyDir} (set version ${policies.current?.version ?? 0}: ${policies.policies().map((p) => p.name).join(', ') || 'none'}; watched)\n` : ''),
  );
  return server;
}
