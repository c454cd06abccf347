/**
 * fastify's errors, and the Node HTTP parser errors fastify hands to `clientErrorHandler`, become
 * SaegateErrors here, for both HTTP servers (the proxy and the model server): whatever a client
 * does wrong, it gets an OpenAI-shaped body `{"error": {"message", "type", "param", "code"}}` with
 * a SAEGATE_ERR_* code, never fastify's `{"statusCode", "error", "message"}`.
 *
 * Three entry points, one per way an error reaches a client:
 * - `fromFastifyError`: errors thrown while a request is handled (the error handler);
 * - `clientErrorHandler`: the request could not even be parsed (no request object exists);
 * - `frameworkErrorHandler`: fastify's router refused the URL (`FST_ERR_BAD_URL`, …).
 */
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { SaegateError, type SaegateErrorCode } from './errors.js';
import { discardRequestBody, isDiscarding } from './http-server.js';

interface FastifyLikeError {
  code?: unknown;
  statusCode?: unknown;
  message?: unknown;
}

/** Options of {@link fromFastifyError}. */
export interface FastifyErrorContext {
  /** The body limit in bytes, for the 413 message. */
  maxBodyBytes: number;
  /** Code for an error that is neither ours nor a client error. The proxy says INTERNAL, the model server RUNTIME. */
  unexpected: Extract<SaegateErrorCode, 'SAEGATE_ERR_INTERNAL' | 'SAEGATE_ERR_RUNTIME'>;
}

/**
 * Translates anything thrown while serving a request: SaegateErrors pass through; fastify's body
 * limit is 413 BODY_TOO_LARGE; its JSON parser errors are INVALID_JSON; any other 4xx it raised is
 * BAD_REQUEST; the rest is `context.unexpected` (500).
 */
export function fromFastifyError(error: unknown, context: FastifyErrorContext): SaegateError {
  if (error instanceof SaegateError) return error;
  const e = (typeof error === 'object' && error !== null ? error : {}) as FastifyLikeError;
  const message = typeof e.message === 'string' ? e.message : String(error);
  if (e.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return new SaegateError('SAEGATE_ERR_BODY_TOO_LARGE', [context.maxBodyBytes], { cause: error });
  if (e.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || e.code === 'FST_ERR_CTP_EMPTY_JSON_BODY') {
    return new SaegateError('SAEGATE_ERR_INVALID_JSON', [message], { cause: error });
  }
  // Other fastify/HTTP client errors (bad content-length, malformed URL, …) are the client's fault.
  if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    return new SaegateError('SAEGATE_ERR_BAD_REQUEST', [message], { cause: error });
  }
  return new SaegateError(context.unexpected, [message], { cause: error });
}

/** What a Node HTTP parser error (`HPE_*`, `ERR_HTTP_REQUEST_TIMEOUT`) means for the client. */
export function fromHttpParserError(error: Error & { code?: string }, limits: { maxHeaderBytes: number }): SaegateError {
  switch (error.code) {
    case 'HPE_HEADER_OVERFLOW':
      return new SaegateError('SAEGATE_ERR_HEADERS_TOO_LARGE', [limits.maxHeaderBytes], { cause: error });
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return new SaegateError('SAEGATE_ERR_REQUEST_TIMEOUT', ['the connection sent no complete request head (or body) within the server\'s timeout'], { cause: error });
    default:
      return new SaegateError('SAEGATE_ERR_BAD_REQUEST', [`malformed HTTP request (${error.code ?? error.message})`], { cause: error });
  }
}

/** A whole HTTP/1.1 response carrying `error`'s OpenAI body, closing the connection. */
function rawResponse(error: SaegateError): string {
  const body = JSON.stringify(error.toJSON());
  return (
    `HTTP/1.1 ${error.status} ${STATUS_CODES[error.status] ?? 'Error'}\r\n` +
    `Content-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`
  );
}

/**
 * fastify's `clientErrorHandler`: answers what Node's HTTP parser refused (oversized headers 431,
 * duplicate or conflicting Content-Length / Transfer-Encoding, a cut chunked body, a garbage
 * request line 400, a request head not received in time 408) with an OpenAI-shaped body, then
 * closes. Nothing is written when a response is already on the wire for this connection (a
 * request whose body is being discarded after its 413, or a reset socket).
 */
export function clientErrorHandler(limits: { maxHeaderBytes: number }): (error: Error & { code?: string }, socket: Socket) => void {
  return (error, socket) => {
    // A response already started on this connection cannot be followed by another (Node's own
    // default handler makes the same check).
    const inFlight = (socket as Socket & { _httpMessage?: { headersSent?: boolean } | null })._httpMessage;
    if (error.code === 'ECONNRESET' || socket.destroyed || isDiscarding(socket) || inFlight?.headersSent === true) {
      socket.destroy();
      return;
    }
    if (!socket.writable) {
      socket.destroy();
      return;
    }
    // end() flushes the response then sends FIN; destroy only after that, so the client reads it.
    socket.once('finish', () => socket.destroy());
    socket.once('error', () => socket.destroy());
    socket.end(rawResponse(fromHttpParserError(error, limits)));
  };
}

/**
 * fastify's `frameworkErrors`: errors its router raises before any route runs (a URL that does not
 * decode, a route parameter over `maxParamLength`) as OpenAI-shaped 400s.
 */
export function frameworkErrorHandler(error: Error, request: FastifyRequest, reply: FastifyReply): void {
  const saegateError = new SaegateError('SAEGATE_ERR_BAD_REQUEST', [error.message], { cause: error });
  request.log.info({ code: saegateError.code }, saegateError.message);
  void reply.code(saegateError.status).header('x-request-id', request.id).send(saegateError.toJSON());
}

/**
 * Call from an error handler before sending `error`: for a 413 it drops the `Connection: close`
 * fastify set and reads the rest of the body away (http-server.ts, discardRequestBody), so the
 * client receives the 413 rather than a reset.
 */
export function prepareErrorReply(error: SaegateError, request: FastifyRequest, reply: FastifyReply): void {
  if (error.code !== 'SAEGATE_ERR_BODY_TOO_LARGE') return;
  reply.removeHeader('connection');
  discardRequestBody(request.raw);
}
