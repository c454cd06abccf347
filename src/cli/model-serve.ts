/** `saegate model serve`: the reference model server. */
import { z } from 'zod';
import { startModelServer, type ModelServer } from '../model/server.js';
import { parseFlags, portFlag } from './args.js';

export const modelServeUsage = `Usage: saegate model serve --model FILE [options]

Serves a llama-family model over an OpenAI-compatible API, with activation taps and steering.

Options:
  --model FILE|DIR        llama2.c .bin checkpoint, Hugging Face directory (config.json,
                          model.safetensors, tokenizer.json), or synthetic:KEY=VALUE,...
  --tokenizer FILE        tokenizer file (default: tok<vocab>.bin or tokenizer.bin beside a .bin)
  --name NAME             model name in the API (default: the file's base name)
  --host HOST             listen address (default 127.0.0.1)
  --port N                listen port (default 8000; 0 = any free port)
  --tap URL               connect to saegate's tap, e.g. ws://127.0.0.1:9000/v1/tap
  --tap-token TOKEN       bearer token for the tap (or env SAEGATE_TAP_TOKEN)
  --device cpu|cuda       onnxruntime execution provider (default cpu)
  --max-batch N           most sequences decoded together (default 8)
  --threads N             onnxruntime intra-op threads (default: one per core)
  --plan-timeout-ms N     how long a request waits for its saegate plan (default 2000)
  --max-connections N     open client connections; further ones are closed (default 10000)
  --client-headers-timeout-ms N
                          time a client has to send its request head; 408 after (default 10000)
  --client-request-timeout-ms N
                          time a client has to send its whole request; 408 after (default 120000; 0 = none)
  --keep-alive-timeout-ms N
                          idle keep-alive connections close after this (default 5000)
  --max-requests-per-socket N
                          requests per client connection (default 1000; 0 = unlimited)
  --log                   log requests (JSON lines on stdout)`;

const schema = z.object({
  model: z.string({ error: 'is required' }).min(1),
  tokenizer: z.string().optional(),
  name: z.string().min(1).optional(),
  host: z.string().default('127.0.0.1'),
  port: portFlag.default(8000),
  tap: z.string().regex(/^wss?:\/\//, 'expected a ws:// or wss:// URL').optional(),
  'tap-token': z.string().optional(),
  device: z.enum(['cpu', 'cuda']).default('cpu'),
  'max-batch': z.coerce.number().int().min(1).max(1024).default(8),
  threads: z.coerce.number().int().min(1).max(256).optional(),
  'plan-timeout-ms': z.coerce.number().int().min(0).default(2000),
  'max-connections': z.coerce.number().int().min(1).max(1_000_000).optional(),
  'client-headers-timeout-ms': z.coerce.number().int().min(1).max(86_400_000).optional(),
  'client-request-timeout-ms': z.coerce.number().int().min(0).max(86_400_000).optional(),
  'keep-alive-timeout-ms': z.coerce.number().int().min(1).max(86_400_000).optional(),
  'max-requests-per-socket': z.coerce.number().int().min(0).max(1_000_000).optional(),
  log: z.boolean().default(false),
});

export const modelServeFlags = {
  model: { type: 'string' },
  tokenizer: { type: 'string' },
  name: { type: 'string' },
  host: { type: 'string' },
  port: { type: 'string' },
  tap: { type: 'string' },
  'tap-token': { type: 'string' },
  device: { type: 'string' },
  'max-batch': { type: 'string' },
  threads: { type: 'string' },
  'plan-timeout-ms': { type: 'string' },
  'max-connections': { type: 'string' },
  'client-headers-timeout-ms': { type: 'string' },
  'client-request-timeout-ms': { type: 'string' },
  'keep-alive-timeout-ms': { type: 'string' },
  'max-requests-per-socket': { type: 'string' },
  log: { type: 'boolean' },
} as const;

export async function modelServe(argv: string[]): Promise<ModelServer> {
  const flags = parseFlags(argv, modelServeFlags, schema, modelServeUsage);
  const server = await startModelServer({
    model: flags.model,
    tokenizer: flags.tokenizer,
    name: flags.name,
    host: flags.host,
    port: flags.port,
    tapUrl: flags.tap,
    tapToken: flags['tap-token'] ?? process.env.SAEGATE_TAP_TOKEN,
    device: flags.device,
    maxBatch: flags['max-batch'],
    threads: flags.threads,
    planWaitTimeoutMs: flags['plan-timeout-ms'],
    logger: flags.log,
    limits: {
      maxConnections: flags['max-connections'],
      clientHeadersTimeoutMs: flags['client-headers-timeout-ms'],
      clientRequestTimeoutMs: flags['client-request-timeout-ms'],
      keepAliveTimeoutMs: flags['keep-alive-timeout-ms'],
      maxRequestsPerSocket: flags['max-requests-per-socket'],
    },
  });
  const cfg = server.model.weights.config;
  process.stdout.write(
    `saegate model server: ${server.model.name} (d_model ${cfg.dim}, ${cfg.nLayers} layers, vocab ${cfg.vocabSize}, context ${cfg.maxSeqLen}) on ${flags.device}\n` +
      `  OpenAI API   ${server.url}/v1  (models, completions, chat/completions)\n` +
      (flags.tap ? `  tap          ${flags.tap}\n` : ''),
  );
  return server;
}
