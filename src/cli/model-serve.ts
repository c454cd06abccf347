/** `saegate model serve`: the reference model server. */
import { flag, integer, oneOf, parseCommand, text, type CommandSpec } from '../common/options.js';
import { startModelServer, type ModelServer } from '../model/server.js';
import { isSyntheticModel } from '../model/load.js';

const modelServeOptions = {
  model: {
    type: text('FILE|DIR'),
    required: true,
    help: 'llama2.c .bin checkpoint, Hugging Face directory (config.json, model.safetensors, tokenizer.json), or synthetic:KEY=VALUE,...',
  },
  tokenizer: { type: text('FILE'), defaultText: 'beside the model', help: 'tokenizer file (tok<vocab>.bin or tokenizer.bin beside a .bin when omitted)' },
  name: { type: text('NAME'), defaultText: "the file's base name", help: 'model name in the API' },
  host: { type: text('HOST'), default: '127.0.0.1', help: 'listen address' },
  port: { type: integer(0, 65535), default: 8000, help: 'listen port (0 = any free port)' },
  unix: { type: text('PATH'), help: 'listen on this Unix socket instead of --host/--port (for a co-located saegate: serve --upstream-socket PATH)' },
  tap: {
    type: text('URL', { pattern: /^wss?:\/\//, expected: 'a ws:// or wss:// URL' }),
    help: "connect to saegate's tap, e.g. ws://127.0.0.1:9000/v1/tap",
  },
  tapToken: { type: text('TOKEN'), env: 'SAEGATE_TAP_TOKEN', help: 'bearer token for the tap' },
  device: { type: oneOf(['cpu', 'cuda']), default: 'cpu', help: 'onnxruntime execution provider' },
  maxBatch: { type: integer(1, 1024), default: 8, help: 'most sequences decoded together (KV-cache slots)' },
  threads: { type: integer(1, 256), defaultText: 'one per core', help: 'onnxruntime intra-op threads' },
  planTimeoutMs: { type: integer(0), default: 2000, help: 'how long a request waits for its saegate plan, ms' },
  tapFlushMs: { type: integer(0), default: 2, help: 'longest a tapped row, token or end should wait to be sent, ms (flushed at step boundaries; faster steps go together)' },
  maxConnections: { type: integer(1, 1_000_000), default: 10_000, help: 'open client connections; further ones are closed on accept' },
  clientHeadersTimeoutMs: { type: integer(1, 86_400_000), default: 10_000, help: 'time a client has to send its request head, ms; 408 after' },
  clientRequestTimeoutMs: { type: integer(0, 86_400_000), default: 120_000, help: 'time a client has to send its whole request, ms; 408 after (0 = none)' },
  keepAliveTimeoutMs: { type: integer(1, 86_400_000), default: 5000, help: 'idle keep-alive connections close after this, ms' },
  maxRequestsPerSocket: { type: integer(0, 1_000_000), default: 1000, help: 'requests per client connection (0 = unlimited)' },
  log: { type: flag, default: false, help: 'log requests (JSON lines on stdout)' },
} as const;

export const modelServeCommand = {
  name: 'model serve',
  synopsis: 'saegate model serve --model FILE [options]',
  description: 'Serves a llama-family model over an OpenAI-compatible API, with activation taps and steering.',
  options: modelServeOptions,
} as const satisfies CommandSpec<typeof modelServeOptions>;

export async function modelServe(argv: string[]): Promise<ModelServer> {
  const flags = parseCommand(modelServeCommand, argv, process.env);
  const server = await startModelServer({
    model: flags.model,
    tokenizer: flags.tokenizer,
    name: flags.name,
    host: flags.host,
    port: flags.port,
    unixSocket: flags.unix,
    tapUrl: flags.tap,
    tapToken: flags.tapToken,
    device: flags.device,
    maxBatch: flags.maxBatch,
    threads: flags.threads,
    planWaitTimeoutMs: flags.planTimeoutMs,
    tapFlushMs: flags.tapFlushMs,
    logger: flags.log,
    limits: {
      maxConnections: flags.maxConnections,
      clientHeadersTimeoutMs: flags.clientHeadersTimeoutMs,
      clientRequestTimeoutMs: flags.clientRequestTimeoutMs,
      keepAliveTimeoutMs: flags.keepAliveTimeoutMs,
      maxRequestsPerSocket: flags.maxRequestsPerSocket,
    },
  });
  const cfg = server.model.weights.config;
  process.stdout.write(
    `saegate model server: ${server.model.name} (${isSyntheticModel(server.model.source) ? 'SYNTHETIC model, not trained: ' : ''}d_model ${cfg.dim}, ${cfg.nLayers} layers, vocab ${cfg.vocabSize}, context ${cfg.maxSeqLen}) on ${flags.device}\n` +
      `  OpenAI API   ${server.url}/v1  (models, completions, chat/completions)${server.socketPath !== null ? ` on unix socket ${server.socketPath}` : ''}\n` +
      (flags.tap ? `  tap          ${flags.tap}\n` : ''),
  );
  return server;
}
