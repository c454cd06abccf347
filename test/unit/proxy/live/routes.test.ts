/**
 * The live view's endpoints: CSP and headers, the admin-token rule off loopback (cookie from
 * `?token=` once, bearer, refusals), feature pages, and the WebSocket's snapshot, deltas, upgrade
 * refusals and slow-viewer cut-off on a real listening proxy.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { buildProxyApp, type ProxyApp } from '../../../../src/proxy/app.js';
import { resolveProxyConfig, type ProxyConfig } from '../../../../src/proxy/config.js';
import { LiveHub, type LiveMessage } from '../../../../src/proxy/live/hub.js';
import { LIVE_COOKIE, liveViewCsp, LiveView } from '../../../../src/proxy/live/routes.js';
import { liveHtml, liveScript } from '../../../../src/proxy/live/page.js';
import { startProxy, type ProxyServer } from '../../../../src/proxy/server.js';
import { makeTempDir, removeTempDir } from '../../../helpers/fixtures.js';
import { waitFor } from '../../../helpers/wait.js';

const DEAD_UPSTREAM = 'http://127.0.0.1:9';
const TOKEN = 'admin-secret-token';
const apps: ProxyApp[] = [];
const servers: ProxyServer[] = [];
const dir = makeTempDir('saegate-live-routes-');

afterAll(async () => {
  await Promise.all(apps.map((a) => a.app.close()));
  await Promise.all(servers.map((s) => s.close({ timeoutMs: 0 })));
  removeTempDir(dir);
});

function build(overrides: Partial<ProxyConfig>, view = new LiveView({ hub: new LiveHub() })): ProxyApp {
  const proxy = buildProxyApp({ config: resolveProxyConfig({ overrides: { upstream: DEAD_UPSTREAM, ...overrides } }), liveView: view });
  apps.push(proxy);
  return proxy;
}

describe('live view routes', () => {
  it('serves the page on loopback without a token, under a strict CSP with no inline script or style', async () => {
    const { app } = build({ host: '127.0.0.1' });
    const res = await app.inject({ method: 'GET', url: '/ui' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(res.headers['content-security-policy']).toBe(liveViewCsp);
    expect(liveViewCsp).toContain("default-src 'self'");
    expect(liveViewCsp).not.toContain('unsafe-inline');
    expect(liveViewCsp).not.toContain('unsafe-eval');
    expect(res.body).toBe(liveHtml);
    // Nothing inline for the CSP to refuse: no <script> with a body, no <style>, no style= attributes.
    expect(res.body).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
    expect(res.body).not.toMatch(/<style|\sstyle=|\son[a-z]+=/i);
    const js = await app.inject({ method: 'GET', url: '/ui/live.js' });
    expect(js.statusCode).toBe(200);
    expect(js.headers['content-type']).toBe('text/javascript; charset=utf-8');
    expect(js.body).toBe(liveScript);
    expect((await app.inject({ method: 'GET', url: '/ui/live.css' })).statusCode).toBe(200);
  });

  it('builds the DOM without innerHTML, outerHTML, insertAdjacentHTML, document.write or eval', () => {
    expect(liveScript).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function/);
  });

  it('refuses the page off loopback when no admin token is configured, saying what to set', async () => {
    const { app } = build({ host: '0.0.0.0' });
    for (const url of ['/ui', '/ui/live.js', '/ui/live.css', '/ui?token=x']) {
      const res = await app.inject({ method: 'GET', url });
      expect(res.statusCode, url).toBe(401);
      expect(res.json().error.code).toBe('SAEGATE_ERR_ADMIN_AUTH');
      expect(res.json().error.message).toContain('--admin-token');
    }
  });

  it('off loopback, takes the admin token once in ?token=, sets an HttpOnly cookie that is not the token and redirects to /ui', async () => {
    const { app } = build({ host: '0.0.0.0', adminToken: TOKEN });
    const tokenless = await app.inject({ method: 'GET', url: '/ui' });
    expect(tokenless.statusCode).toBe(401);
    expect(tokenless.headers['www-authenticate']).toBe('Bearer');
    expect(tokenless.headers['content-security-policy']).toBeUndefined();
    expect((await app.inject({ method: 'GET', url: '/ui?token=wrong' })).statusCode).toBe(401);

    const login = await app.inject({ method: 'GET', url: `/ui?token=${TOKEN}` });
    expect(login.statusCode).toBe(303);
    expect(login.headers.location).toBe('/ui');
    const setCookie = String(login.headers['set-cookie']);
    expect(setCookie).toMatch(new RegExp(`^${LIVE_COOKIE}=[0-9a-f]{64}; Path=/ui; HttpOnly; SameSite=Strict$`));
    expect(setCookie).not.toContain(TOKEN);
    const cookie = setCookie.split(';')[0];

    for (const url of ['/ui', '/ui/live.js', '/ui/live.css']) {
      expect((await app.inject({ method: 'GET', url, headers: { cookie } })).statusCode, url).toBe(200);
    }
    expect((await app.inject({ method: 'GET', url: '/ui', headers: { authorization: `Bearer ${TOKEN}` } })).statusCode).toBe(200);
    expect((await app.inject({ method: 'GET', url: '/ui', headers: { cookie: `${LIVE_COOKIE}=${'0'.repeat(64)}` } })).statusCode).toBe(401);
    // The cookie opens the view only, not the admin API.
    expect((await app.inject({ method: 'GET', url: '/admin/status', headers: { authorization: `Bearer ${cookie.split('=')[1]}` } })).statusCode).toBe(401);
  });

  it('serves an SAE feature page with its own CSP, and 404 for one that does not exist', async () => {
    const file = path.join(dir, 'features.html');
    fs.writeFileSync(file, '<!doctype html><p>features</p>');
    const { app } = build({ host: '127.0.0.1' }, new LiveView({ hub: new LiveHub(), featurePages: [{ hook: 'blocks.2.hook_resid_post', file, csp: "default-src 'none'" }] }));
    const page = await app.inject({ method: 'GET', url: '/ui/features/0' });
    expect(page.statusCode).toBe(200);
    expect(page.body).toContain('features');
    expect(page.headers['content-security-policy']).toBe("default-src 'none'");
    for (const url of ['/ui/features/1', '/ui/features/-1', '/ui/features/x']) {
      const res = await app.inject({ method: 'GET', url });
      expect(res.statusCode, url).toBe(404);
      expect(res.json().error.code).toBe('SAEGATE_ERR_NOT_FOUND');
    }
  });
});

/** Opens a viewer socket; resolves with it and the messages it receives (collected from the start). */
async function viewer(url: string, headers: Record<string, string> = {}): Promise<{ ws: WebSocket; messages: LiveMessage[] }> {
  const ws = new WebSocket(url, { headers });
  const messages: LiveMessage[] = [];
  ws.on('message', (data) => messages.push(JSON.parse(String(data)) as LiveMessage));
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  return { ws, messages };
}

/** The HTTP status an upgrade was refused with. */
function refusedStatus(url: string, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    // The server answers and closes the socket itself.
    ws.on('error', () => undefined);
    ws.once('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0);
      res.resume();
    });
    ws.once('open', () => reject(new Error(`upgrade to ${url} was accepted`)));
  });
}

describe('live view WebSocket', () => {
  it('sends a snapshot, then changed requests and samples, to every viewer', async () => {
    const hub = new LiveHub();
    hub.started({ requestId: 'before', route: 'completions', model: null, policies: [], steeringTerms: 0 });
    const server = await startProxy({ upstream: DEAD_UPSTREAM, port: 0, liveView: new LiveView({ hub, flushIntervalMs: 10, sampleIntervalMs: 60_000 }) });
    servers.push(server);
    const wsUrl = server.url.replace('http', 'ws') + '/ui/ws';
    const { ws, messages } = await viewer(wsUrl);
    await waitFor('the snapshot', () => messages.length >= 1);
    expect(messages[0]).toMatchObject({ type: 'snapshot', maxRequests: 50, requests: [{ id: 'before' }] });
    hub.started({ requestId: 'after', route: 'chat_completions', model: 'm', policies: ['p@1'], steeringTerms: 1 });
    await waitFor('the new request', () => messages.some((m) => m.type === 'requests' && m.requests.some((r) => r.id === 'after')));
    hub.sample();
    await waitFor('a sample', () => messages.some((m) => m.type === 'sample'));
    ws.close();
  });

  it('refuses upgrades without the token off loopback, from another origin, and to unknown paths', async () => {
    const server = await startProxy({ upstream: DEAD_UPSTREAM, port: 0, adminToken: TOKEN, liveView: new LiveView({ hub: new LiveHub(), requireToken: true }) });
    servers.push(server);
    const wsUrl = server.url.replace('http', 'ws') + '/ui/ws';
    expect(await refusedStatus(wsUrl)).toBe(401);
    expect(await refusedStatus(wsUrl, { authorization: 'Bearer wrong' })).toBe(401);
    expect(await refusedStatus(wsUrl, { authorization: `Bearer ${TOKEN}`, origin: 'http://evil.example' })).toBe(403);
    expect(await refusedStatus(server.url.replace('http', 'ws') + '/elsewhere')).toBe(404);
    const { ws, messages } = await viewer(wsUrl, { authorization: `Bearer ${TOKEN}`, origin: server.url });
    await waitFor('the snapshot', () => messages.length >= 1);
    expect(messages[0].type).toBe('snapshot');
    ws.close();
  });

  it('closes a viewer whose socket buffers more than maxBufferedBytes with 1013', async () => {
    const hub = new LiveHub();
    const view = new LiveView({ hub, flushIntervalMs: 60_000, sampleIntervalMs: 60_000, maxBufferedBytes: 0 });
    const server = await startProxy({ upstream: DEAD_UPSTREAM, port: 0, liveView: view });
    servers.push(server);
    const { ws, messages } = await viewer(server.url.replace('http', 'ws') + '/ui/ws');
    await waitFor('the snapshot', () => messages.length >= 1);
    const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
    // Stop reading so the server's writes back up, then send until its buffer is over the bound.
    (ws as unknown as { _socket: { pause(): void } })._socket.pause();
    const big = 'x'.repeat(64 * 1024);
    let sent = 0;
    await waitFor('the viewer cut off', () => {
      hub.started({ requestId: `r${sent++}`, route: 'completions', model: big, policies: [], steeringTerms: 0 });
      hub.flush();
      return view.viewers === 0;
    });
    (ws as unknown as { _socket: { resume(): void } })._socket.resume();
    expect(await closed).toBe(1013);
  });
});
