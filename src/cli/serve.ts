/**
 * `saegate serve`: the proxy. Flags, `SAEGATE_*` variables and the config file all come from the
 * option table in src/proxy/config.ts; this file only turns argv into flags and prints where to look.
 */
import { Registry } from 'prom-client';
import { z } from 'zod';
import { envName, flagName, proxyConfigKeys, proxyOptions, resolveProxyConfig } from '../proxy/config.js';
import { startProxy, type ProxyServer, type StartProxyOptions } from '../proxy/server.js';
import { loadSae } from '../sae/load.js';
import { SaeSink } from '../sae/sink.js';
import type { SaeWeights } from '../sae/types.js';
import { parseFlags, type FlagSpec } from './args.js';

function defaultText(value: unknown): string {
  if (value === undefined) return 'required';
  if (value === null) return 'none';
  return String(value);
}

function buildUsage(): string {
  const rows = proxyConfigKeys.map((key) => {
    const spec = proxyOptions[key];
    const value = spec.kind.type === 'bool' ? '' : spec.kind.type === 'int' ? ' N' : spec.kind.type === 'url' ? ' URL' : ' VALUE';
    return [`  --${flagName(key)}${value}`, `${spec.help} (${defaultText(spec.default)}; ${envName(key)})`];
  });
  rows.push(['  --config FILE', 'JSON config file with any of the options above, by camelCase name (SAEGATE_CONFIG)']);
  rows.push(['  --sae DIR', 'run this SAE (SAELens or sparsify directory) over its hook point\'s tapped rows; repeatable']);
  const width = Math.max(...rows.map(([flag]) => flag.length)) + 2;
  return `Usage: saegate serve --upstream URL [options]

Runs the saegate proxy in front of an OpenAI-compatible model server: clients talk to saegate,
saegate forwards to the upstream, and model servers connect to its tap (/v1/tap).
Precedence: flags > environment > config file > defaults. See docs/proxy.md.

Options:
${rows.map(([flag, help]) => flag.padEnd(width) + help).join('\n')}`;
}

export const serveUsage = buildUsage();

const serveFlags: FlagSpec = {
  config: { type: 'string' },
  ...Object.fromEntries(proxyConfigKeys.map((key) => [flagName(key), { type: proxyOptions[key].kind.type === 'bool' ? 'boolean' : 'string' } as const])),
};

/** Takes the repeatable `--sae DIR` flags out of argv (the option table holds single values only). */
function takeSaeFlags(argv: string[]): { saeDirs: string[]; rest: string[] } {
  const saeDirs: string[] = [];
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--sae' && i + 1 < argv.length) saeDirs.push(argv[++i]);
    else if (arg.startsWith('--sae=')) saeDirs.push(arg.slice('--sae='.length));
    else rest.push(arg);
  }
  return { saeDirs, rest };
}

/**
 * Starts the proxy with an SAE pipeline over `saes` as its activation sink (none when `saes` is
 * empty): the SAEs load and their worker sessions start before the proxy listens, so a bad file
 * stops start-up; the proxy and the pipeline export their metrics from one registry, served at
 * /metrics; every tap client is asked for the SAEs' hooks (f16, prompt rows too); closing the
 * proxy closes the pipeline.
 */
export async function startProxyWithSaes(options: StartProxyOptions, saes: SaeWeights[]): Promise<{ server: ProxyServer; sink: SaeSink | undefined }> {
  const registry = new Registry();
  const sink = saes.length > 0 ? await SaeSink.create({
          saes,
          registry,
          maxBatchRows: options.saeBatchRows,
          maxDelayMs: options.saeMaxDelayMs,
          maxQueuedRows: options.saeMaxQueuedRows,
          workers: options.saeWorkers,
          ...(options.saeTopK !== undefined && options.saeTopK > 0 && { topK: options.saeTopK }),
        }) : undefined;
  let server: ProxyServer;
  try {
    server = await startProxy({ ...options, sink, registry });
  } catch (error) {
    await sink?.close();
    throw error;
  }
  if (sink) {
    server.tap.subscribeAll({ hooks: sink.hooks, dtype: 'f16', includePrompt: true });
    const closeProxy = server.close.bind(server);
    server.close = async (closeOptions) => {
      await closeProxy(closeOptions);
      await sink.close();
    };
  }
  return { server, sink };
}

export async function serve(argv: string[]): Promise<ProxyServer> {
  const { saeDirs, rest } = takeSaeFlags(argv);
  const flags = parseFlags(rest, serveFlags, z.record(z.string(), z.union([z.string(), z.boolean()])), serveUsage);
  const config = resolveProxyConfig({ flags, env: process.env });
  const { server, sink } = await startProxyWithSaes(config, saeDirs.map((dir) => loadSae(dir)));
  process.stdout.write(
    `saegate proxy: forwarding to ${config.upstream}\n` +
      `  OpenAI API   ${server.url}/v1\n` +
      `  tap          ${server.tapUrl} (${config.tapToken === null ? 'no token: loopback only' : 'bearer token required'})\n` +
      `  metrics      ${server.url}/metrics   health ${server.url}/healthz, ${server.url}/readyz\n` +
      `  admin        ${config.adminToken === null ? 'off (no --admin-token)' : `${server.url}/admin/status (bearer token)`}\n` +
      (sink ? `  SAEs         ${sink.hooks.join(', ')} (tapped as f16, prompt and generated rows)\n` : ''),
  );
  return server;
}
