import { describe, expect, it } from 'vitest';
import { SaegateError } from '../../../src/common/errors.js';
import { failureKind, isRetryableError, timeoutError, timeoutLayerOf, toClientError, toUpstreamError } from '../../../src/proxy/errors.js';

const context = { upstream: 'http://model:8000', responseStarted: false, connectTimeoutMs: 5000, headersTimeoutMs: 300_000 };

function coded(code: string, message = 'boom'): Error {
  return Object.assign(new Error(message), { code });
}

describe('proxy error translation', () => {
  it('turns undici’s connect and headers timeouts into 504s naming the layer and its option', () => {
    const connect = toUpstreamError(coded('UND_ERR_CONNECT_TIMEOUT', 'Connect Timeout Error'), context);
    expect(connect.toJSON()).toEqual({
      error: { message: 'upstream connect timeout: no connection to the upstream was established (connectTimeoutMs = 5000 ms)', type: 'timeout_error', param: null, code: 'SAEGATE_ERR_UPSTREAM_TIMEOUT' },
    });
    expect(connect.status).toBe(504);
    expect(failureKind(connect)).toBe('connect_timeout');
    const headers = toUpstreamError(coded('UND_ERR_HEADERS_TIMEOUT'), context);
    expect(headers.message).toBe('upstream response-headers timeout: the upstream sent no response headers after the request (headersTimeoutMs = 300000 ms)');
    expect(timeoutLayerOf(headers)).toBe('headers');
    expect(failureKind(headers)).toBe('headers_timeout');
  });

  it('maps socket errors before the response to 502 unavailable and after it to 502 stream', () => {
    const refused = toUpstreamError(coded('ECONNREFUSED', 'connect ECONNREFUSED 127.0.0.1:8000'), context);
    expect(refused.code).toBe('SAEGATE_ERR_UPSTREAM_UNAVAILABLE');
    expect(refused.status).toBe(502);
    expect(refused.message).toBe('upstream http://model:8000 is unavailable: connect ECONNREFUSED 127.0.0.1:8000');
    expect(failureKind(refused)).toBe('unavailable');
    const other = toUpstreamError(coded('UND_ERR_SOCKET', 'other side closed'), { ...context, responseStarted: true });
    expect(other.code).toBe('SAEGATE_ERR_UPSTREAM_STREAM');
    expect(other.message).toBe('upstream failed after the response started: other side closed (UND_ERR_SOCKET)');
    expect(failureKind(other)).toBe('stream');
  });

  it('passes saegate’s own errors through unchanged', () => {
    const idle = timeoutError('idle', 100);
    expect(toUpstreamError(idle, context)).toBe(idle);
    expect(failureKind(idle)).toBe('idle_timeout');
    expect(timeoutLayerOf(new SaegateError('SAEGATE_ERR_SHUTTING_DOWN'))).toBeNull();
  });

  it('retries only errors that mean no response came, looking through causes', () => {
    expect(isRetryableError(coded('ECONNRESET'))).toBe(true);
    expect(isRetryableError(new Error('fetch failed', { cause: coded('ECONNREFUSED') }))).toBe(true);
    expect(isRetryableError(coded('UND_ERR_HEADERS_TIMEOUT'))).toBe(false);
    expect(isRetryableError(timeoutError('total', 1))).toBe(false);
  });

  it('maps fastify’s errors to OpenAI-shaped client errors', () => {
    expect(toClientError(coded('FST_ERR_CTP_BODY_TOO_LARGE'), { maxBodyBytes: 10 }).toJSON().error).toMatchObject({ code: 'SAEGATE_ERR_BODY_TOO_LARGE', message: 'request body is larger than the limit of 10 bytes' });
    expect(toClientError(Object.assign(new Error('Unsupported Media Type'), { statusCode: 415 }), { maxBodyBytes: 10 }).code).toBe('SAEGATE_ERR_BAD_REQUEST');
    const internal = toClientError(new TypeError('x is undefined'), { maxBodyBytes: 10 });
    expect([internal.code, internal.status, internal.message]).toEqual(['SAEGATE_ERR_INTERNAL', 500, 'internal error: x is undefined']);
  });
});
