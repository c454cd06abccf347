/**
 * The reference model server's OpenAI-compatible HTTP API as a fastify app factory. No `listen`
 * here: the CLI and server.ts listen, tests use `inject()` or port 0.
 *
 * Every error a client can see, whatever raised it (a body that is not JSON, a body over the
 * limit, an unknown route, the engine), leaves through the one error handler below as an
 * OpenAI-shaped body with a SAEGATE_ERR_* code; see docs/model-server.md.
 */
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import { SaegateError } from '../../common/errors.js';
import { clientErrorHandler, frameworkErrorHandler, prepareErrorReply } from '../../common/errors-fastify.js';
import { applyConnectionCap, fastifyLimitOptions, resolveHttpServerLimits, type HttpServerLimits } from '../../common/http-server.js';
import type { Engine } from '../engine-types.js';
import type { TapHealth } from '../tap-bridge.js';
import type { Tokenizer } from '../types.js';
import { toSaegateError } from './errors.js';
import { REQUEST_ID_HEADER, requestIdFrom } from './headers.js';
import { InFlightLimiter } from './limiter.js';
import { registerModelRoutes } from './routes.js';

/** Options of {@link buildModelApp}. */
export interface ModelAppOptions {
  /** Runs the requests; its `config` gives the context length, d_model and layer count. */
  engine: Engine;
  /** Encodes prompts and decodes generated tokens; its chat template renders chat messages. */
  tokenizer: Tokenizer;
  /** The model id clients must send in `model` and that `/v1/models` lists. */
  modelName: string;
  /**
   * The model is a seeded synthetic one (random weights, not trained): `/v1/models` says so in its
   * `synthetic` field. Default false.
   */
  synthetic?: boolean;
  /** Generation requests in flight before new ones get 429 with Retry-After: 1. Default 256. */
  maxConcurrentRequests?: number;
  /** Fastify logger: false (default), true, or pino options. */
  logger?: boolean | FastifyServerOptions['logger'];
  /**
   * How long the engine waits for a request's steering plan, in ms. Informational here (reported
   * on `/healthz`); the wait happens in the engine's plan resolver. Default: not reported.
   */
  planWaitTimeoutMs?: number;
  /** The tap's state for `/healthz` (read per request: the bridge is built after the app); null or absent: no `tap` field. */
  tapHealth?: () => TapHealth | null;
  /** Largest accepted request body in bytes. Default 32 MiB: steering vectors travel as JSON numbers. */
  bodyLimit?: number;
  /** Largest request header block in bytes; larger ones get 431. Default 16384. */
  maxHeaderBytes?: number;
  /** Client connection limits (count, head/request timeouts, keep-alive); defaults in src/common/http-server.ts. */
  limits?: Partial<HttpServerLimits>;
}

/** Default of {@link ModelAppOptions.maxHeaderBytes}: 16 KiB (Node's own default). */
export const DEFAULT_MAX_HEADER_BYTES = 16_384;

/** Default of {@link ModelAppOptions.bodyLimit}: 32 MiB. */
export const DEFAULT_BODY_LIMIT = 32 * 1024 * 1024;

/** Builds the app with its routes; call `listen` or `inject` on it. */
export function buildModelApp(options: ModelAppOptions): FastifyInstance {
  const bodyLimit = options.bodyLimit ?? DEFAULT_BODY_LIMIT;
  const maxHeaderBytes = options.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES;
  const limiter = new InFlightLimiter(options.maxConcurrentRequests ?? 256);
  const limits = resolveHttpServerLimits(options.limits);
  const limitOptions = fastifyLimitOptions(limits);
  const app = Fastify({
    logger: options.logger ?? false,
    bodyLimit,
    ...limitOptions,
    http: { ...limitOptions.http, maxHeaderSize: maxHeaderBytes },
    // Whatever Node's HTTP parser or fastify's router refuses still gets an OpenAI-shaped body
    // (errors the HTTP parser raises never reach the error handler below).
    clientErrorHandler: clientErrorHandler({ maxHeaderBytes }),
    frameworkErrors: frameworkErrorHandler,
    // The id is the client's x-request-id when it is well formed: it becomes the engine request id
    // and the log's reqId, so one id follows a request through saegate, this server and the tap.
    genReqId: (raw) => requestIdFrom(raw.headers),
  });
  applyConnectionCap(app.server, limits);

  app.addHook('onRequest', async (request, reply) => {
    reply.header(REQUEST_ID_HEADER, request.id);
  });

  // One JSON parser for every content type: curl -d sends application/x-www-form-urlencoded, and
  // OpenAI-compatible servers read the body as JSON whatever the header says. Fastify's own parser
  // keeps its prototype-poisoning protection; its errors become SAEGATE_ERR_INVALID_JSON with the
  // parse position, which fastify's generic error drops.
  const jsonParser = app.getDefaultJsonParser('error', 'error');
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'string' }, (request, body, done) => {
    const text = body as string;
    jsonParser(request, text, (error, value) => {
      if (!error) return done(null, value);
      let detail = 'the body is empty';
      if (text.length > 0) {
        try {
          JSON.parse(text);
          detail = 'the body contains a "__proto__" or "constructor.prototype" key';
        } catch (parseError) {
          detail = (parseError as Error).message;
        }
      }
      done(new SaegateError('SAEGATE_ERR_INVALID_JSON', [detail], { cause: error }), undefined);
    });
  });

  app.setNotFoundHandler(async (request, reply) => {
    const error = new SaegateError('SAEGATE_ERR_NOT_FOUND', [request.method, request.url]);
    return reply.code(error.status).send(error.toJSON());
  });

  app.setErrorHandler(async (thrown, request, reply) => {
    const error = toSaegateError(thrown, { bodyLimit });
    if (error.status >= 500) request.log.error({ err: thrown }, error.message);
    else request.log.info({ code: error.code, param: error.param }, error.message);
    if (error.status === 429) reply.header('retry-after', '1');
    prepareErrorReply(error, request, reply);
    return reply.code(error.status).send(error.toJSON());
  });

  registerModelRoutes(app, {
    engine: options.engine,
    tokenizer: options.tokenizer,
    modelName: options.modelName,
    synthetic: options.synthetic ?? false,
    limiter,
    bodyLimit,
    planWaitTimeoutMs: options.planWaitTimeoutMs ?? null,
    tapHealth: options.tapHealth ?? (() => null),
  });
  return app;
}
