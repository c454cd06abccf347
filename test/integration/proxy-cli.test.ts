/** `saegate serve` as a user runs it: a real process configured by flags, environment and a config file. */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCliToExit, waitForApiUrl, withCli } from '../helpers/cli.js';
import { makeTempDir, removeTempDir } from '../helpers/fixtures.js';
import { startStub, type StubUpstream } from '../helpers/stub-upstream.js';



let stub: StubUpstream;
let dir: string;
beforeAll(async () => {
  stub = await startStub();
  dir = makeTempDir('saegate-serve-');
});
afterAll(async () => {
  await stub.close();
  removeTempDir(dir);
});

describe('saegate serve', () => {
  it('takes its upstream from the environment and its port from a config file, proxies, and exits 0 on SIGTERM', async () => {
    const config = path.join(dir, 'saegate.json');
    fs.writeFileSync(config, JSON.stringify({ port: 0, upstream: 'http://overridden-by-env:1' }));
    await withCli(['serve', '--config', config], async (proc) => {
      const url = await waitForApiUrl(proc);
      expect(proc.out()).toContain(`forwarding to ${stub.url}`);
      expect(proc.out()).toContain('admin        off (no --admin-token)');
      expect((await fetch(`${url}/healthz`)).status).toBe(200);
      const res = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"model":"m"}' });
      expect(await res.text()).toBe('{}');
      expect(stub.requests.at(-1)!.body.toString()).toBe('{"model":"m"}');
      proc.child.kill('SIGTERM');
      expect(await proc.exited).toBe(0);
    }, { env: { SAEGATE_UPSTREAM: stub.url } });
  });

  it('reaches a model server on a Unix socket: model serve --unix, serve --upstream-socket', async () => {
    const socket = path.join(dir, 'model.sock');
    await withCli(['model', 'serve', '--model', 'synthetic:dim=32,layers=2,heads=4,kv=2,hidden=64,vocab=300,ctx=64,seed=3', '--unix', socket], async (model) => {
      expect(await waitForApiUrl(model)).toBe('http://localhost');
      expect(model.out()).toContain(`on unix socket ${socket}`);
      await withCli(['serve', '--upstream', 'http://localhost', '--upstream-socket', socket, '--port', '0'], async (proxy) => {
        const url = await waitForApiUrl(proxy);
        expect(proxy.out()).toContain(`forwarding to http://localhost over unix socket ${socket}`);
        const res = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'synthetic', prompt: 'a', max_tokens: 3, temperature: 0 }) });
        expect(res.status).toBe(200);
        expect(((await res.json()) as { usage: { completion_tokens: number } }).usage.completion_tokens).toBe(3);
      });
    });
  });

  it('refuses to listen off loopback without a tap token, naming the option', async () => {
    const proc = await runCliToExit(['serve', '--upstream', stub.url, '--host', '0.0.0.0', '--port', '0']);
    expect(proc.code).toBe(1);
    expect(proc.err).toMatch(/SAEGATE_ERR_CONFIG: invalid configuration 'tapToken': required when listening on '0\.0\.0\.0'/);
  });

  it('names the flag of a bad value and what was expected', async () => {
    const proc = await runCliToExit(['serve', '--upstream', stub.url, '--idle-timeout-ms', 'soon']);
    expect(proc.code).toBe(1);
    expect(proc.err).toContain("SAEGATE_ERR_CONFIG: invalid configuration '--idle-timeout-ms': expected an integer from 0 to 86400000, got \"soon\"");
  });
});
