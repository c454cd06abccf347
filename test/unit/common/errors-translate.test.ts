import { describe, expect, it } from 'vitest';
import { SaegateError } from '../../../src/common/errors.js';
import { fromFastifyError, fromHttpParserError } from '../../../src/common/errors-fastify.js';
import { describeError, errorCodeOf, listenError } from '../../../src/common/errors-net.js';
import { isRetryableUndiciError, undiciTimeoutOf } from '../../../src/common/errors-undici.js';
import { fromWsError } from '../../../src/common/errors-ws.js';

const coded = (code: string, message = `failed: ${code}`): Error => Object.assign(new Error(message), { code });

describe('dependency error translators', () => {
  it('reads a code down the cause chain and appends it to the message once', () => {
    const wrapped = new Error('fetch failed', { cause: coded('ECONNREFUSED', 'connect refused') });
    expect(errorCodeOf(wrapped)).toBe('ECONNREFUSED');
    expect(describeError(wrapped)).toBe('fetch failed (ECONNREFUSED)');
    expect(describeError(coded('EPIPE'))).toBe('failed: EPIPE');
    expect(errorCodeOf('text')).toBeNull();
  });

  it.each([
    ['EADDRINUSE', '127.0.0.1', 8000, 'cannot listen on 127.0.0.1:8000: the port is already in use'],
    ['ENOTFOUND', 'nowhere.invalid', 0, 'cannot listen on nowhere.invalid:0: the host name does not resolve; check --host (ENOTFOUND)'],
    ['EADDRNOTAVAIL', '::2', 9000, 'cannot listen on [::2]:9000:'],
    ['EWHATEVER', 'h', 1, 'cannot listen on h:1: failed: EWHATEVER'],
  ])('turns a listen failure %s into SAEGATE_ERR_LISTEN naming host:port', (code, host, port, fragment) => {
    const cause = coded(code);
    const error = listenError(cause, host, port);
    expect(error).toMatchObject({ code: 'SAEGATE_ERR_LISTEN', kind: 'runtime', cause });
    expect(error.message).toContain(fragment);
  });

  it('classifies undici errors: retryable socket failures and its own timeouts', () => {
    expect(isRetryableUndiciError(new Error('fetch failed', { cause: coded('ECONNRESET') }))).toBe(true);
    expect(isRetryableUndiciError(coded('UND_ERR_HEADERS_TIMEOUT'))).toBe(false);
    expect(undiciTimeoutOf(coded('UND_ERR_CONNECT_TIMEOUT'))).toBe('connect');
    expect(undiciTimeoutOf(coded('UND_ERR_HEADERS_TIMEOUT'))).toBe('headers');
    expect(undiciTimeoutOf(coded('ECONNRESET'))).toBeNull();
  });

  it('turns ws framing violations into TAP_FRAME and other socket errors into TAP_CLOSED', () => {
    expect(fromWsError(coded('WS_ERR_UNSUPPORTED_MESSAGE_LENGTH', 'Max payload size exceeded')).code).toBe('SAEGATE_ERR_TAP_FRAME');
    expect(fromWsError(coded('ECONNRESET')).code).toBe('SAEGATE_ERR_TAP_CLOSED');
    const own = new SaegateError('SAEGATE_ERR_TAP_AUTH', ['x']);
    expect(fromWsError(own)).toBe(own);
  });

  it.each([
    ['HPE_HEADER_OVERFLOW', 431, 'SAEGATE_ERR_HEADERS_TOO_LARGE'],
    ['ERR_HTTP_REQUEST_TIMEOUT', 408, 'SAEGATE_ERR_REQUEST_TIMEOUT'],
    ['HPE_INVALID_METHOD', 400, 'SAEGATE_ERR_BAD_REQUEST'],
    ['HPE_UNEXPECTED_CONTENT_LENGTH', 400, 'SAEGATE_ERR_BAD_REQUEST'],
  ])('maps the HTTP parser error %s to %i', (code, status, saegateCode) => {
    const error = fromHttpParserError(coded(code), { maxHeaderBytes: 1024 });
    expect(error).toMatchObject({ status, code: saegateCode });
  });

  it('maps fastify errors the same way on both servers, differing only in the code for the unexpected', () => {
    expect(fromFastifyError(coded('FST_ERR_CTP_BODY_TOO_LARGE'), { maxBodyBytes: 7, unexpected: 'SAEGATE_ERR_RUNTIME' }).message).toBe('request body is larger than the limit of 7 bytes');
    expect(fromFastifyError(coded('FST_ERR_CTP_INVALID_JSON_BODY'), { maxBodyBytes: 7, unexpected: 'SAEGATE_ERR_RUNTIME' }).code).toBe('SAEGATE_ERR_INVALID_JSON');
    expect(fromFastifyError(Object.assign(new Error('bad'), { statusCode: 415 }), { maxBodyBytes: 7, unexpected: 'SAEGATE_ERR_INTERNAL' }).code).toBe('SAEGATE_ERR_BAD_REQUEST');
    expect(fromFastifyError(new TypeError('boom'), { maxBodyBytes: 7, unexpected: 'SAEGATE_ERR_INTERNAL' })).toMatchObject({ code: 'SAEGATE_ERR_INTERNAL', kind: 'bug', status: 500 });
    expect(fromFastifyError(new TypeError('boom'), { maxBodyBytes: 7, unexpected: 'SAEGATE_ERR_RUNTIME' }).code).toBe('SAEGATE_ERR_RUNTIME');
  });
});
