/**
 * `saegate demo` (what `npm start` runs): the main job on an embedded default. The saegate proxy
 * in front of the reference model server, which connects to saegate's tap and streams residual
 * rows of one hook point for every request; today the rows go to the counting sink (the SAE engine
 * and policies come in later issues). The model is stories260K from ../shared/models, or a seeded
 * synthetic model when that folder is absent.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { startModelServer } from '../model/server.js';
import { startProxy } from '../proxy/server.js';
import { parseFlags, portFlag } from './args.js';

const usage = `Usage: saegate demo [--port N] [--model-port N] [--host HOST]

Starts the saegate proxy (default port 9000) in front of the reference model server (default port
8000) on an embedded default model, with the model server connected to saegate's tap, and prints
what to try. The model is $SAEGATE_DEMO_MODEL, else ../shared/models/stories260K/stories260K.bin
next to the repository, else a seeded synthetic model.`;

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * The embedded default model (also `saegate model sample`'s): $SAEGATE_DEMO_MODEL, else
 * ../shared/models/stories260K/stories260K.bin beside the repository, else a seeded synthetic model.
 */
export function defaultModel(): string {
  if (process.env.SAEGATE_DEMO_MODEL) return process.env.SAEGATE_DEMO_MODEL;
  const shared = path.join(repoRoot, '..', 'shared', 'models', 'stories260K', 'stories260K.bin');
  if (fs.existsSync(shared)) return shared;
  return 'synthetic:dim=64,layers=4,heads=4,kv=2,hidden=172,vocab=512,ctx=512,seed=1';
}

export interface Demo {
  proxyUrl: string;
  modelUrl: string;
  close(): Promise<void>;
}

export async function demo(argv: string[]): Promise<Demo> {
  const flags = parseFlags(
    argv,
    { port: { type: 'string' }, 'model-port': { type: 'string' }, host: { type: 'string' } },
    // The model server is told saegate's tap URL before saegate listens (it retries until then),
    // so the proxy's port must be known up front.
    z.object({ port: portFlag.min(1).default(9000), 'model-port': portFlag.default(8000), host: z.string().default('127.0.0.1') }),
    usage,
  );
  const model = defaultModel();
  const tapHost = flags.host === '0.0.0.0' || flags.host === '::' ? '127.0.0.1' : flags.host;
  const server = await startModelServer({ model, host: '127.0.0.1', port: flags['model-port'], tapUrl: `ws://${tapHost}:${flags.port}/v1/tap` });
  let proxy;
  try {
    proxy = await startProxy({ upstream: server.url, host: flags.host, port: flags.port });
  } catch (error) {
    await server.close();
    throw error;
  }
  const cfg = server.model.weights.config;
  const hook = `blocks.${Math.floor(cfg.nLayers / 2)}.hook_resid_post`;
  proxy.tap.subscribeAll({ hooks: [hook], dtype: 'f16', includePrompt: true });
  const name = server.model.name;
  process.stdout.write(
    `saegate demo: proxy → reference model server with ${name} (${model})\n\n` +
      `  OpenAI API (through saegate)  ${proxy.url}/v1\n` +
      `  model server (direct)         ${server.url}/v1\n` +
      `  metrics                       ${proxy.url}/metrics   (saegate_tap_rows_total grows with every request)\n` +
      `  tap                           ${proxy.tapUrl}  (the model server connects here and streams ${hook} as f16)\n\n` +
      `Try:\n` +
      `  curl -s ${proxy.url}/v1/completions -H 'content-type: application/json' \\\n` +
      `    -d '{"model":"${name}","prompt":"Once upon a time","max_tokens":40,"temperature":0}'\n` +
      `  curl -s ${proxy.url}/metrics | grep saegate_tap_rows\n\n` +
      `  Steer it directly on the model server: add "steering":[{"hook":"blocks.2.hook_resid_post","vector":[…${cfg.dim} numbers…],"scale":4}]\n` +
      `  (docs/model-server.md). Ctrl-C stops.\n`,
  );
  return {
    proxyUrl: proxy.url,
    modelUrl: server.url,
    async close() {
      await proxy.close();
      await server.close();
    },
  };
}
