import { describe, expect, it } from 'vitest';
import { clientResponseHeaders, isEventStream, isValidRequestId, requestIdFrom, retryAfterMs, upstreamRequestHeaders } from '../../../src/proxy/headers.js';
import { appliedValue, EMPTY_PLAN } from '../../../src/proxy/plan.js';

describe('proxy headers', () => {
  it('forwards the client headers in their spelling and order, minus hop-by-hop ones, with saegate’s ids', () => {
    const raw = [
      'Host', 'saegate:9000',
      'Authorization', 'Bearer sk-1',
      'Connection', 'keep-alive, X-Hop',
      'X-Hop', 'drop me',
      'Content-Type', 'application/json',
      'Content-Length', '12',
      'Transfer-Encoding', 'chunked',
      'X-Request-Id', 'client-id',
      'X-Saegate-Plan-Id', 'forged-plan',
      'X-Saegate-Tap-Max-Delay-Ms', '60000',
      'OpenAI-Organization', 'org-1',
    ];
    expect(upstreamRequestHeaders(raw, 'req-1', null)).toEqual([
      'Authorization', 'Bearer sk-1',
      'Content-Type', 'application/json',
      'OpenAI-Organization', 'org-1',
      'x-request-id', 'req-1',
    ]);
    expect(upstreamRequestHeaders(['Accept', '*/*'], 'req-2', 'plan-7')).toEqual(['Accept', '*/*', 'x-request-id', 'req-2', 'x-saegate-plan-id', 'plan-7']);
    // The tap hold is saegate's: a client's is dropped (above), the plan's is sent.
    expect(upstreamRequestHeaders(['Accept', '*/*'], 'req-3', null, 50)).toEqual(['Accept', '*/*', 'x-request-id', 'req-3', 'x-saegate-tap-max-delay-ms', '50']);
  });

  it('returns the upstream headers minus hop-by-hop ones, with the request id and x-saegate-applied', () => {
    const out = clientResponseHeaders(
      {
        'content-type': 'text/event-stream',
        'transfer-encoding': 'chunked',
        connection: 'keep-alive',
        'keep-alive': 'timeout=5',
        'x-request-id': 'upstream-made-this',
        'set-cookie': ['a=1', 'b=2'],
        'x-ratelimit-remaining': '9',
      },
      'req-1',
      'none',
    );
    expect(out).toEqual({ 'content-type': 'text/event-stream', 'set-cookie': ['a=1', 'b=2'], 'x-ratelimit-remaining': '9', 'x-request-id': 'req-1', 'x-saegate-applied': 'none' });
  });

  it('keeps a valid client request id and replaces an invalid one', () => {
    expect(requestIdFrom({ 'x-request-id': 'trace:ab-12.3_x' })).toBe('trace:ab-12.3_x');
    const generated = requestIdFrom({ 'x-request-id': 'has space' });
    expect(generated).toMatch(/^[0-9a-f-]{36}$/);
    expect(isValidRequestId('x'.repeat(129))).toBe(false);
    expect(isValidRequestId('x'.repeat(128))).toBe(true);
  });

  it('reads Retry-After as seconds or as an HTTP date', () => {
    expect(retryAfterMs('3')).toBe(3000);
    expect(retryAfterMs('Wed, 21 Oct 2015 07:28:10 GMT', Date.parse('Wed, 21 Oct 2015 07:28:00 GMT'))).toBe(10_000);
    expect(retryAfterMs('Wed, 21 Oct 2015 07:28:00 GMT', Date.parse('Wed, 21 Oct 2015 07:29:00 GMT'))).toBe(0);
    expect(retryAfterMs('soon')).toBeNull();
    expect(retryAfterMs(undefined)).toBeNull();
  });

  it('recognises event streams by content type', () => {
    expect([isEventStream('text/event-stream; charset=utf-8'), isEventStream('application/json'), isEventStream(undefined)]).toEqual([true, false, false]);
  });

  it('says none when no policy applied, and names policies and the plan otherwise', () => {
    expect(appliedValue(EMPTY_PLAN, null)).toBe('none');
    const term = { hook: 'blocks.0.hook_resid_post', vector: new Float32Array(2), scale: 1, fromPosition: 0, untilPosition: null };
    expect(appliedValue({ policies: ['refusal', 'drift'], steering: [term] }, 'plan-1')).toBe('policy=refusal, policy=drift, steering=plan-1');
    expect(appliedValue({ policies: ['refusal'], steering: [term] }, null)).toBe('policy=refusal, steering=skipped');
  });
});
