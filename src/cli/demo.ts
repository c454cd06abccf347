/**
 * `saegate demo` (what `npm start` runs): the main job on an embedded default. Today that is the
 * reference model server on stories260K from ../shared/models (or a seeded synthetic model when
 * that folder is absent), with a worked example to try.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { startModelServer, type ModelServer } from '../model/server.js';
import { parseFlags, portFlag } from './args.js';

const usage = `Usage: saegate demo [--port N] [--host HOST]

Starts the reference model server on an embedded default model and prints what to try.
The model is $SAEGATE_DEMO_MODEL, else ../shared/models/stories260K/stories260K.bin next to the
repository, else a seeded synthetic model.`;

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

function defaultModel(): string {
  if (process.env.SAEGATE_DEMO_MODEL) return process.env.SAEGATE_DEMO_MODEL;
  const shared = path.join(repoRoot, '..', 'shared', 'models', 'stories260K', 'stories260K.bin');
  if (fs.existsSync(shared)) return shared;
  return 'synthetic:dim=64,layers=4,heads=4,kv=2,hidden=172,vocab=512,ctx=512,seed=1';
}

export async function demo(argv: string[]): Promise<ModelServer> {
  const flags = parseFlags(
    argv,
    { port: { type: 'string' }, host: { type: 'string' } },
    z.object({ port: portFlag.default(8000), host: z.string().default('127.0.0.1') }),
    usage,
  );
  const model = defaultModel();
  const server = await startModelServer({ model, host: flags.host, port: flags.port });
  const name = server.model.name;
  process.stdout.write(
    `saegate demo: reference model server with ${name} (${model})\n\n` +
      `  OpenAI API  ${server.url}/v1\n\n` +
      `Try:\n` +
      `  curl -s ${server.url}/v1/completions -H 'content-type: application/json' \\\n` +
      `    -d '{"model":"${name}","prompt":"Once upon a time","max_tokens":40,"temperature":0}'\n\n` +
      `  Steer it: add "steering":[{"hook":"blocks.2.hook_resid_post","vector":[…${server.model.weights.config.dim} numbers…],"scale":4}]\n` +
      `  (see docs/model-server.md). Ctrl-C stops.\n`,
  );
  return server;
}
