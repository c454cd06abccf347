/**
 * The reference model server, assembled: load weights and tokenizer, start the runtime worker,
 * serve the OpenAI API, and (with a tap URL) connect to saegate. `startModelServer` is what the CLI
 * and the integration tests call; it listens on the given port (0 = any free port).
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { SaegateError } from '../common/errors.js';
import { listenError } from '../common/errors-net.js';
import type { HttpServerLimits } from '../common/http-server.js';
import type { Device } from '../common/ort.js';
import { LocalEngine } from './engine.js';
import { buildModelApp } from './http/app.js';
import { isSyntheticModel, loadModel } from './load.js';
import { DEFAULT_PLAN_WAIT_TIMEOUT_MS, engineWithPromptTokens, TapBridge } from './tap-bridge.js';
import type { LoadedModel } from './types.js';

export interface ModelServerOptions {
  /** A llama2.c `.bin`, a Hugging Face directory, or `synthetic:…` (see README). */
  model: string;
  /** Tokenizer file; default: found beside the model. */
  tokenizer?: string;
  /** Model name in the API; default: the weight file's base name. */
  name?: string;
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 8000; 0 picks a free port. */
  port?: number;
  /**
   * Listen on this Unix socket instead of `host`:`port` (for a co-located saegate:
   * `saegate serve --upstream-socket`). A stale socket file left by an earlier run is replaced.
   */
  unixSocket?: string;
  /** saegate's tap endpoint, e.g. ws://127.0.0.1:9000/v1/tap. */
  tapUrl?: string;
  /** Bearer token for the tap. */
  tapToken?: string;
  /** Default 'cpu'. */
  device?: Device;
  /** Largest decode batch. Default 8. */
  maxBatch?: number;
  /** onnxruntime intra-op threads; default onnxruntime's choice (one per core). */
  threads?: number;
  /** Requests in flight before 429. Default 256. */
  maxConcurrentRequests?: number;
  /** How long a request waits for its saegate plan. Default 2000 ms. */
  planWaitTimeoutMs?: number;
  /** The tap's flush interval (TapBridge `flushMs`). Default 2 ms. */
  tapFlushMs?: number;
  /** Fastify logging. Default false. */
  logger?: boolean;
  /** Client connection limits (count, head/request timeouts, keep-alive); defaults in src/common/http-server.ts. */
  limits?: Partial<HttpServerLimits>;
  /** A model already loaded (tests); overrides `model`. */
  loaded?: LoadedModel;
}

export interface ModelServer {
  app: FastifyInstance;
  engine: LocalEngine;
  model: LoadedModel;
  tap: TapBridge | null;
  /** http://host:port, or http://localhost with a Unix socket (`socketPath`). */
  url: string;
  /** The Unix socket it listens on, or null on TCP. */
  socketPath: string | null;
  close(): Promise<void>;
}

export async function startModelServer(options: ModelServerOptions): Promise<ModelServer> {
  const model = options.loaded ?? (await loadModel({ model: options.model, tokenizer: options.tokenizer, name: options.name }));
  if (!model.tokenizer) throw new SaegateError('SAEGATE_ERR_TOKENIZER_FILE', [options.model, 'no tokenizer found beside the model; pass --tokenizer']);
  // The bridge is created after the engine it serves; the engine asks it for plans through this slot.
  let tap: TapBridge | null = null;
  const engine = await LocalEngine.create({
    weights: model.weights,
    maxBatch: options.maxBatch,
    samplableVocab: model.tokenizer.vocabSize,
    intraOpThreads: options.threads,
    device: options.device,
    resolvePlan: options.tapUrl ? (requestId, planId, signal) => tap!.resolvePlan(requestId, planId, signal) : undefined,
  });
  const app = buildModelApp({
    // With a tap, requests pass their prompt to the bridge on the way in (prompt tokens on the tap).
    engine: options.tapUrl ? engineWithPromptTokens(engine, () => tap) : engine,
    tokenizer: model.tokenizer,
    modelName: model.name,
    synthetic: isSyntheticModel(model.source),
    maxConcurrentRequests: options.maxConcurrentRequests,
    tapHealth: () => tap?.health() ?? null,
    // What the bridge waits for a plan, reported on /healthz.
    ...(options.tapUrl && { planWaitTimeoutMs: options.planWaitTimeoutMs ?? DEFAULT_PLAN_WAIT_TIMEOUT_MS }),
    logger: options.logger ?? false,
    limits: options.limits,
  });
  if (options.tapUrl) {
    tap = new TapBridge({
      url: options.tapUrl,
      token: options.tapToken,
      engine,
      tokenizer: model.tokenizer,
      modelId: model.name,
      planWaitTimeoutMs: options.planWaitTimeoutMs,
      flushMs: options.tapFlushMs,
      logger: app.log,
    });
  }
  const host = options.host ?? '127.0.0.1';
  const port = options.port ?? 8000;
  const socketPath = options.unixSocket ?? null;
  try {
    if (socketPath !== null) {
      await removeStaleSocket(socketPath);
      await app.listen({ path: socketPath });
    } else {
      await app.listen({ host, port });
    }
  } catch (error) {
    await app.close();
    await engine.close();
    throw socketPath !== null ? listenError(error, `unix:${socketPath}`, null) : listenError(error, host, port);
  }
  tap?.start();
  const address = app.server.address();
  const url = socketPath !== null ? 'http://localhost' : typeof address === 'object' && address ? `http://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}` : String(address);
  return {
    app,
    engine,
    model,
    tap,
    url,
    socketPath,
    async close() {
      await tap?.close();
      await app.close();
      await engine.close();
    },
  };
}

/**
 * Before listening on `socketPath`: a missing directory fails as ENOENT (Node's listen says EACCES
 * for it), and a socket file nobody listens on any more (an earlier run that was killed) is
 * removed. A socket someone still listens on, or anything else at the path, is left for listen()
 * to refuse (EADDRINUSE).
 */
async function removeStaleSocket(socketPath: string): Promise<void> {
  if (!fs.existsSync(path.dirname(socketPath))) throw Object.assign(new Error(`no directory ${path.dirname(socketPath)}`), { code: 'ENOENT' });
  let stat: fs.Stats;
  try {
    stat = fs.statSync(socketPath);
  } catch {
    return;
  }
  if (!stat.isSocket()) return;
  const live = await new Promise<boolean>((resolve) => {
    const probe = net.connect(socketPath);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (!live) fs.rmSync(socketPath, { force: true });
}
