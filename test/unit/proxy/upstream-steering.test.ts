/**
 * `--upstream-steering` in the proxy: settings that contradict each other are refused at start,
 * `none` skips steering (fail-closed plans get 503), and a body-field mode refuses a body it cannot
 * rewrite before anything is forwarded. End to end: test/integration/proxy-upstream-steering.test.ts.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { buildProxyApp, type ProxyApp } from '../../../src/proxy/app.js';
import { parseCommand } from '../../../src/common/options.js';
import { proxyCommand, resolveProxyConfig, type ProxyConfig } from '../../../src/proxy/config.js';
import type { PlanResolver, RequestPlan } from '../../../src/proxy/plan.js';
import { parseBodyObject } from '../../../src/proxy/upstream-steering.js';
import { expectSaegateError } from '../../helpers/errors.js';

// Port 9 (discard) on loopback: nothing listens there, so a forwarded request fails with 502.
const DEAD_UPSTREAM = 'http://127.0.0.1:9';

const steer = (failClosed: boolean): PlanResolver => ({
  resolve: (): RequestPlan => ({
    policies: ['p@1'],
    steering: [{ hook: 'blocks.1.hook_resid_post', vector: new Float32Array([1, 2]), scale: 1, fromPosition: 0, untilPosition: null }],
    failClosed,
  }),
});

const apps: ProxyApp[] = [];
function build(overrides: Partial<ProxyConfig>, planResolver: PlanResolver): ProxyApp {
  const proxy = buildProxyApp({ config: resolveProxyConfig({ overrides: { upstream: DEAD_UPSTREAM, ...overrides } }), planResolver });
  apps.push(proxy);
  return proxy;
}
afterAll(async () => {
  await Promise.all(apps.map((p) => p.app.close()));
});

const post = (app: ProxyApp['app'], payload: string) => app.inject({ method: 'POST', url: '/v1/completions', headers: { 'content-type': 'application/json' }, payload });

describe('--upstream-steering settings', () => {
  it.each([
    [{ upstreamSteering: 'reference', requireTap: true }, 'requireTap', 'no model server would ever connect'],
    [{ upstreamSteering: 'easysteer' }, 'upstreamSteeringVectorDir', 'needs --upstream-steering-vector-dir'],
    [{ upstreamSteering: 'vllm-xargs', upstreamSteeringVectorDir: '/tmp/x' }, 'upstreamSteeringVectorDir', 'only --upstream-steering easysteer'],
  ] as const)('refuses %o naming %s', (overrides, key, fragment) => {
    expectSaegateError(() => resolveProxyConfig({ overrides: { upstream: DEAD_UPSTREAM, ...overrides } }), 'SAEGATE_ERR_CONFIG', key, fragment);
  });

  it('refuses an unknown mode from the command line, listing the modes', () => {
    expectSaegateError(() => parseCommand(proxyCommand, ['--upstream', DEAD_UPSTREAM, '--upstream-steering', 'sglang']), 'SAEGATE_ERR_CONFIG', '--upstream-steering', 'tap, none, reference, easysteer, vllm-xargs');
  });

  it('defaults to the tap', () => {
    expect(resolveProxyConfig({ overrides: { upstream: DEAD_UPSTREAM } }).upstreamSteering).toBe('tap');
  });
});

describe('--upstream-steering none', () => {
  it('skips steering: the request is forwarded and the header says steering=skipped', async () => {
    const { app, metrics } = build({ upstreamSteering: 'none' }, steer(false));
    const res = await post(app, '{"model":"m"}');
    expect(res.statusCode).toBe(502);
    expect(res.headers['x-saegate-applied']).toBe('policy=p@1, steering=skipped');
    expect((await metrics.plans.get()).values).toEqual([expect.objectContaining({ labels: { outcome: 'skipped' }, value: 1 })]);
  });

  it('refuses a fail-closed plan with 503', async () => {
    const { app } = build({ upstreamSteering: 'none' }, steer(true));
    const res = await post(app, '{"model":"m"}');
    expect(res.statusCode).toBe(503);
    expect(res.json()).toMatchObject({ error: { code: 'SAEGATE_ERR_STEERING_UNAVAILABLE' } });
  });

  it('says so on /readyz', async () => {
    const { app } = build({ upstreamSteering: 'none' }, steer(false));
    const ready = await app.inject({ url: '/readyz' });
    expect(ready.json()).toMatchObject({ steering: { mode: 'none', activations: true, details: 'steering off (--upstream-steering none), activations via the tap' } });
  });
});

describe('a body-field mode', () => {
  it('counts a written plan as outcome "upstream" and says steering=upstream:<mode>', async () => {
    const { app, metrics } = build({ upstreamSteering: 'reference' }, steer(false));
    const res = await post(app, '{"model":"m"}');
    expect(res.statusCode).toBe(502);
    expect(res.headers['x-saegate-applied']).toBe('policy=p@1, steering=upstream:reference');
    expect((await metrics.plans.get()).values).toEqual([expect.objectContaining({ labels: { outcome: 'upstream' }, value: 1 })]);
  });

  it('answers a body that does not parse as JSON with 400 before forwarding', async () => {
    const { app } = build({ upstreamSteering: 'reference' }, steer(false));
    const res = await post(app, '{"model":"m","x":[1,]}');
    expect(res.statusCode).toBe(400);
    expect(res.json()).toMatchObject({ error: { code: 'SAEGATE_ERR_INVALID_JSON' } });
    expect(res.json<{ error: { message: string } }>().error.message).toContain('saegate parses the body to add the steering field');
  });

  it('parses only JSON objects', () => {
    expect(parseBodyObject(Buffer.from('{"a":1}'))).toEqual({ a: 1 });
    expectSaegateError(() => parseBodyObject(Buffer.from('[1]')), 'SAEGATE_ERR_INVALID_JSON', 'not a JSON object');
    expectSaegateError(() => parseBodyObject(Buffer.from('{"a":')), 'SAEGATE_ERR_INVALID_JSON');
  });
});
