/**
 * `saegate serve`: the proxy. Flags, `SAEGATE_*` variables and the config file all come from the
 * option table in src/proxy/config.ts; this file only turns argv into flags and prints where to look.
 */
import { z } from 'zod';
import { envName, flagName, proxyConfigKeys, proxyOptions, resolveProxyConfig } from '../proxy/config.js';
import { startProxy, type ProxyServer } from '../proxy/server.js';
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

export async function serve(argv: string[]): Promise<ProxyServer> {
  const flags = parseFlags(argv, serveFlags, z.record(z.string(), z.union([z.string(), z.boolean()])), serveUsage);
  const config = resolveProxyConfig({ flags, env: process.env });
  const server = await startProxy(config);
  process.stdout.write(
    `saegate proxy: forwarding to ${config.upstream}\n` +
      `  OpenAI API   ${server.url}/v1\n` +
      `  tap          ${server.tapUrl} (${config.tapToken === null ? 'no token: loopback only' : 'bearer token required'})\n` +
      `  metrics      ${server.url}/metrics   health ${server.url}/healthz, ${server.url}/readyz\n` +
      `  admin        ${config.adminToken === null ? 'off (no --admin-token)' : `${server.url}/admin/status (bearer token)`}\n`,
  );
  return server;
}
