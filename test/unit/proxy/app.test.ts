/** The proxy app through `inject()`: everything saegate answers itself, without an upstream. */
import { afterAll, describe, expect, it } from 'vitest';
import { buildProxyApp, type ProxyApp } from '../../../src/proxy/app.js';
import { resolveProxyConfig, type ProxyConfig } from '../../../src/proxy/config.js';
import { documentedMetrics } from '../../helpers/metrics-doc.js';

// Port 9 (discard) on loopback: nothing listens there, so the upstream is refused.
const DEAD_UPSTREAM = 'http://127.0.0.1:9';

const apps: ProxyApp[] = [];
function build(overrides: Partial<ProxyConfig> = {}): ProxyApp {
  const proxy = buildProxyApp({ config: resolveProxyConfig({ overrides: { upstream: DEAD_UPSTREAM, ...overrides } }) });
  apps.push(proxy);
  return proxy;
}
afterAll(async () => {
  await Promise.all(apps.map((p) => p.app.close()));
});

describe('proxy app', () => {
  it('answers /healthz while the upstream is down, and /readyz 503 saying why', async () => {
    const { app } = build();
    const health = await app.inject({ url: '/healthz' });
    expect(health.statusCode).toBe(200);
    expect(health.json()).toEqual({ status: 'ok' });
    const ready = await app.inject({ url: '/readyz' });
    expect(ready.statusCode).toBe(503);
    expect(ready.json()).toMatchObject({ ready: false, draining: false, upstream: { ok: false, url: DEAD_UPSTREAM, status: null }, tap: { ok: true, required: false, connections: 0 } });
    expect(ready.json<{ upstream: { error: string } }>().upstream.error).toContain('ECONNREFUSED');
  });

  it('refuses a body over the limit with 413 before anything is forwarded', async () => {
    const { app } = build({ maxBodyBytes: 64 });
    const res = await app.inject({ method: 'POST', url: '/v1/completions', headers: { 'content-type': 'application/json' }, payload: JSON.stringify({ model: 'm', prompt: 'x'.repeat(100) }) });
    expect(res.statusCode).toBe(413);
    expect(res.json()).toEqual({ error: { message: 'request body is larger than the limit of 64 bytes', type: 'invalid_request_error', param: null, code: 'SAEGATE_ERR_BODY_TOO_LARGE' } });
  });

  it('refuses a generation body that is not a JSON object with 400, returning the request id', async () => {
    const { app } = build();
    const res = await app.inject({ method: 'POST', url: '/v1/chat/completions', headers: { 'content-type': 'application/json', 'x-request-id': 'bad-json-1' }, payload: '[1, 2]' });
    expect(res.statusCode).toBe(400);
    expect(res.headers['x-request-id']).toBe('bad-json-1');
    expect(res.json()).toMatchObject({ error: { code: 'SAEGATE_ERR_INVALID_JSON', message: 'request body is not valid JSON: expected a JSON object at byte 0' } });
  });

  it('answers an unknown route with an OpenAI-shaped 404, and a plain GET on /v1/tap with 400', async () => {
    const { app } = build();
    const missing = await app.inject({ url: '/nope' });
    expect(missing.statusCode).toBe(404);
    expect(missing.json()).toMatchObject({ error: { code: 'SAEGATE_ERR_NOT_FOUND', type: 'not_found_error' } });
    const tap = await app.inject({ url: '/v1/tap' });
    expect(tap.statusCode).toBe(400);
    expect(tap.json<{ error: { message: string } }>().error.message).toContain('open it as a WebSocket');
  });

  it('maps a refused upstream to 502 SAEGATE_ERR_UPSTREAM_UNAVAILABLE naming it', async () => {
    const { app } = build();
    const res = await app.inject({ method: 'POST', url: '/v1/completions', headers: { 'content-type': 'application/json' }, payload: '{"model":"m","prompt":"hi"}' });
    expect(res.statusCode).toBe(502);
    expect(res.headers['x-saegate-applied']).toBe('none');
    expect(res.json()).toMatchObject({ error: { code: 'SAEGATE_ERR_UPSTREAM_UNAVAILABLE', type: 'server_error' } });
    expect(res.json<{ error: { message: string } }>().error.message).toMatch(/^upstream http:\/\/127\.0\.0\.1:9 is unavailable: .*ECONNREFUSED/);
  });

  it('keeps the admin API off (404) without an admin token', async () => {
    const { app } = build();
    const res = await app.inject({ url: '/admin/status', headers: { authorization: 'Bearer anything' } });
    expect(res.statusCode).toBe(404);
  });

  it('requires the admin bearer token (401 without or wrong) and never shows secrets', async () => {
    const { app } = build({ adminToken: 'admin-secret', tapToken: 'tap-secret' });
    const none = await app.inject({ url: '/admin/status' });
    expect(none.statusCode).toBe(401);
    expect(none.headers['www-authenticate']).toBe('Bearer');
    expect(none.json()).toMatchObject({ error: { code: 'SAEGATE_ERR_ADMIN_AUTH', message: 'admin authentication failed: no bearer token' } });
    const wrong = await app.inject({ url: '/admin/status', headers: { authorization: 'Bearer admin-secreT' } });
    expect(wrong.statusCode).toBe(401);
    expect(wrong.json()).toMatchObject({ error: { message: 'admin authentication failed: wrong bearer token' } });
    const ok = await app.inject({ url: '/admin/status', headers: { authorization: 'Bearer admin-secret' } });
    expect(ok.statusCode).toBe(200);
    expect(ok.json()).toMatchObject({
      phase: 'serving',
      config: { upstream: DEAD_UPSTREAM, tapToken: 'set', adminToken: 'set', maxStreams: 1024 },
      requests: { inFlight: 0, activeStreams: 0, maxStreams: 1024 },
      tap: { subscription: null, connections: [], stats: { connections: { current: 0, total: 0 }, malformedFrames: 0, rowsDroppedBySink: 0 } },
    });
    expect(ok.body).not.toContain('secret');
  });

  it('validates an admin subscription and remembers it for connections to come', async () => {
    const { app, tap } = build({ adminToken: 't' });
    const headers = { authorization: 'Bearer t', 'content-type': 'application/json' };
    const bad = await app.inject({ method: 'PUT', url: '/admin/tap/subscription', headers, payload: { hooks: ['blocks.0.hook_resid_post'], dtype: 'f64', includePrompt: false } });
    expect(bad.statusCode).toBe(400);
    expect(bad.json()).toMatchObject({ error: { code: 'SAEGATE_ERR_BAD_REQUEST', param: 'dtype' } });
    const good = await app.inject({ method: 'PUT', url: '/admin/tap/subscription', headers, payload: { hooks: ['blocks.0.hook_resid_post'], dtype: 'f16', includePrompt: true } });
    expect(good.statusCode).toBe(200);
    expect(good.json()).toEqual({ subscription: { hooks: ['blocks.0.hook_resid_post'], dtype: 'f16', includePrompt: true }, connections: [] });
    expect(tap.currentSubscription).toEqual({ hooks: ['blocks.0.hook_resid_post'], dtype: 'f16', includePrompt: true });
  });

  it.each([
    ['__proto__ at the top level', '{"__proto__": {"polluted": true}, "hooks": [], "dtype": "f16", "includePrompt": false}'],
    ['__proto__ nested', '{"hooks": [], "dtype": "f16", "includePrompt": false, "x": {"__proto__": {}}}'],
    ['constructor.prototype', '{"hooks": [], "dtype": "f16", "includePrompt": false, "constructor": {"prototype": {}}}'],
  ])('refuses an admin body with %s as the OpenAI routes do (400 INVALID_JSON)', async (_what, payload) => {
    const { app, tap } = build({ adminToken: 't' });
    const headers = { authorization: 'Bearer t', 'content-type': 'application/json' };
    const refused = await app.inject({ method: 'PUT', url: '/admin/tap/subscription', headers, payload });
    expect(refused.statusCode).toBe(400);
    expect(refused.json()).toMatchObject({ error: { code: 'SAEGATE_ERR_INVALID_JSON', message: expect.stringContaining('__proto__') } });
    expect(tap.currentSubscription).toBeNull();
    // The same body without the poisoned key is accepted.
    const ok = await app.inject({ method: 'PUT', url: '/admin/tap/subscription', headers, payload: '\uFEFF{"hooks": [], "dtype": "f16", "includePrompt": false}' });
    expect(ok.statusCode).toBe(200);
  });

  it('exports exactly the saegate_* metrics that docs/metrics.md lists, plus Node’s event-loop lag', async () => {
    const { app } = build();
    await app.inject({ url: '/healthz' });
    const res = await app.inject({ url: '/metrics' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toContain('text/plain');
    const exported = new Set([...res.body.matchAll(/^# TYPE (saegate_\w+) /gm)].map((m) => m[1]));
    // The SAE pipeline's metrics exist only with an SAE sink (test/unit/sae/metrics.test.ts), the
    // drift monitor's only with a monitor (test/unit/monitor/metrics.test.ts).
    const documented = documentedMetrics('Requests', 'Tap');
    expect([...exported].sort()).toEqual([...documented].sort());
    expect(res.body).toMatch(/^nodejs_eventloop_lag_seconds \d/m);
    expect(res.body).toContain('saegate_requests_total{route="ops",status="200"} 1');
    expect(res.body).toContain('saegate_tap_rows_dropped_total{reason="model_server"} 0');
  });
});
