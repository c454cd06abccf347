/**
 * saegate and a co-located model server over a Unix socket: `saegate model serve --unix PATH` and
 * `saegate serve --upstream-socket PATH`. The real `openai` client through saegate gets what it
 * gets over TCP; a socket nobody listens on is an OpenAI-shaped 502 naming the socket; a stale
 * socket file left by a killed server is replaced, one a live server listens on is not; a socket in
 * a missing directory is a listen error that says so.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { Agent, request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { SaegateError } from '../../src/common/errors.js';
import { startModelServer, type ModelServer } from '../../src/model/server.js';
import { startProxy } from '../../src/proxy/server.js';
import { waitFor } from '../helpers/wait.js';

const MODEL = 'synthetic:dim=32,layers=2,heads=4,kv=2,hidden=64,vocab=300,ctx=96,seed=5';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'saegate-unix-'));
  cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function modelOn(socket: string): Promise<ModelServer> {
  const model = await startModelServer({ model: MODEL, unixSocket: socket });
  cleanups.push(() => model.close());
  return model;
}

describe('saegate and the model server over a Unix socket', () => {
  it('serves the openai client through saegate as over TCP, and /readyz and /healthz go through the socket', async () => {
    const socket = path.join(tempDir(), 'model.sock');
    const model = await modelOn(socket);
    expect(model.socketPath).toBe(socket);
    expect(fs.statSync(socket).isSocket()).toBe(true);
    const tcp = await startModelServer({ model: MODEL, port: 0 });
    cleanups.push(() => tcp.close());
    const proxy = await startProxy({ upstream: 'http://localhost', upstreamSocket: socket, port: 0 });
    cleanups.push(() => proxy.close({ timeoutMs: 0 }));

    const body = { model: model.model.name, prompt: 'Once upon a time', max_tokens: 12, temperature: 0 };
    const viaSaegate = await new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: 'unused', maxRetries: 0 }).completions.create(body);
    const overTcp = await new OpenAI({ baseURL: `${tcp.url}/v1`, apiKey: 'unused', maxRetries: 0 }).completions.create(body);
    expect(viaSaegate.choices[0].text).toBe(overTcp.choices[0].text);
    expect(viaSaegate.usage).toEqual(overTcp.usage);

    const ready = await request(`${proxy.url}/readyz`);
    expect(ready.statusCode).toBe(200);
    expect(((await ready.body.json()) as { upstream: { url: string } }).upstream.url).toBe(`http://localhost (unix socket ${socket})`);
    const agent = new Agent({ connect: { socketPath: socket } });
    cleanups.push(() => agent.close());
    const health = (await (await request('http://localhost/healthz', { dispatcher: agent })).body.json()) as { engine: { generated_tokens: number } };
    expect(health.engine.generated_tokens).toBe(12);
  });

  it('answers 502 SAEGATE_ERR_UPSTREAM_UNAVAILABLE naming the socket when nobody listens on it', async () => {
    const socket = path.join(tempDir(), 'absent.sock');
    const proxy = await startProxy({ upstream: 'http://localhost', upstreamSocket: socket, port: 0 });
    cleanups.push(() => proxy.close({ timeoutMs: 0 }));
    const error = await new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: 'unused', maxRetries: 0 }).completions.create({ model: 'm', prompt: 'x', max_tokens: 1 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.APIError);
    const apiError = error as InstanceType<typeof OpenAI.APIError>;
    expect(apiError.status).toBe(502);
    expect(apiError.code).toBe('SAEGATE_ERR_UPSTREAM_UNAVAILABLE');
    expect(apiError.message).toContain(`unix socket ${socket}`);
    expect(apiError.message).toContain('ENOENT');
    expect((await request(`${proxy.url}/readyz`)).statusCode).toBe(503);
  });

  it('replaces a socket file left by a server that was killed, and says so when the directory is missing', async () => {
    const socket = path.join(tempDir(), 'stale.sock');
    // A process that listens on the path and is killed with SIGKILL leaves the file behind.
    const holder = spawn(process.execPath, ['-e', `require('node:net').createServer().listen(${JSON.stringify(socket)}, () => console.log('listening')); setInterval(() => {}, 1000);`], { stdio: ['ignore', 'pipe', 'inherit'] });
    let said = '';
    holder.stdout.on('data', (chunk: Buffer) => (said += chunk.toString()));
    await waitFor('the holder to listen', () => said.includes('listening'));
    const exited = new Promise((resolve) => holder.once('exit', resolve));
    holder.kill('SIGKILL');
    await exited;
    expect(fs.statSync(socket).isSocket()).toBe(true);
    const model = await modelOn(socket);
    const agent = new Agent({ connect: { socketPath: socket } });
    cleanups.push(() => agent.close());
    expect((await request('http://localhost/healthz', { dispatcher: agent })).statusCode).toBe(200);
    expect(model.socketPath).toBe(socket);

    // A socket a live server listens on is not taken over.
    const taken = await startModelServer({ model: MODEL, unixSocket: socket }).catch((e: unknown) => e);
    expect(taken).toBeInstanceOf(SaegateError);
    expect((taken as SaegateError).message).toContain('another process listens on this socket');
    expect((await request('http://localhost/healthz', { dispatcher: agent })).statusCode).toBe(200);

    const missing = path.join(tempDir(), 'no-such-dir', 'model.sock');
    const failure = await startModelServer({ model: MODEL, unixSocket: missing }).catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(SaegateError);
    expect((failure as SaegateError).code).toBe('SAEGATE_ERR_LISTEN');
    expect((failure as SaegateError).message).toContain(`unix:${missing}`);
    expect((failure as SaegateError).message).toContain("the socket's directory does not exist");
  });
});
