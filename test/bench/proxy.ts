/**
 * Proxy benchmarks (issue 3): a fast OpenAI-shaped stub upstream, reached directly, through
 * fastify + @fastify/http-proxy (the maintained peer) and through `saegate serve`, each in its own
 * process, loaded by autocannon from this one. All three are measured in the same run, so their
 * ratios mean something on a shared 2-core machine where absolute numbers do not.
 *
 *   npx tsx test/bench/proxy.ts [--duration S] [--quick] [--only load,rate,streams,tap,memory]
 *
 * Sections: full load (c = 1, 16, 64; JSON and SSE; no pipelining), fixed rate (added latency
 * over direct), 100-chunk streams (time to first chunk and per-chunk overhead), tap ingest
 * (d_model 4096 f16 frames into saegate's tap vs raw `ws` with the same bytes), and RSS at 1,000
 * idle streams. Prints tables; asserts nothing about time.
 */
import autocannon from 'autocannon';
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Agent, request } from 'undici';
import { WebSocket, WebSocketServer } from 'ws';
import { encodeActivationFrame } from '../../src/tap/builders.js';
import { encodeMessage } from '../../src/tap/codec.js';
import { CountingSink } from '../../src/tap/sink.js';
import { startProxy } from '../../src/proxy/server.js';

const { values } = parseArgs({ options: { duration: { type: 'string' }, quick: { type: 'boolean' }, only: { type: 'string' } } });
/** Comma-separated sections to run: load, rate, streams, tap, memory. Default all. */
const only = new Set((values.only ?? 'load,rate,streams,tap,memory').split(','));
const duration = Number(values.duration ?? (values.quick ? 3 : 8));
const tsx = fileURLToPath(new URL('../../node_modules/.bin/tsx', import.meta.url));
const here = (p: string): string => fileURLToPath(new URL(p, import.meta.url));
const children: ChildProcess[] = [];

/** Starts a child process and resolves with the port it prints. */
function startChild(args: string[], portPattern: RegExp): Promise<number> {
  const child = spawn(tsx, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = portPattern.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.on('exit', (code) => reject(new Error(`${args.join(' ')} exited ${code}: ${out}`)));
  });
}

const chatBody = (stream: boolean): string => JSON.stringify({ model: 'stub', messages: [{ role: 'user', content: 'Say hello.' }], max_tokens: 16, stream });

interface LoadResult {
  rps: number;
  p50: number;
  p99: number;
  errors: number;
}

async function load(url: string, connections: number, stream: boolean, rate?: number): Promise<LoadResult> {
  const result = await autocannon({
    url: `${url}/v1/chat/completions`,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: chatBody(stream),
    connections,
    pipelining: 1,
    duration,
    ...(rate ? { overallRate: rate } : {}),
  });
  return { rps: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, errors: result.errors + result.non2xx };
}

function fmt(n: number, digits = 0): string {
  return n.toFixed(digits);
}

async function fullLoad(targets: Record<string, string>): Promise<void> {
  console.log(`\n## Full load (${duration} s each, no pipelining)`);
  console.log('| body | c | target | req/s | p50 ms | p99 ms | errors | req/s vs @fastify/http-proxy | p99 vs @fastify/http-proxy |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const stream of [false, true]) {
    for (const c of [1, 16, 64]) {
      const rows: Record<string, LoadResult> = {};
      for (const [name, url] of Object.entries(targets)) rows[name] = await load(url, c, stream);
      const peer = rows['@fastify/http-proxy'];
      for (const [name, r] of Object.entries(rows)) {
        console.log(
          `| ${stream ? 'SSE 100 chunks' : 'JSON'} | ${c} | ${name} | ${fmt(r.rps)} | ${fmt(r.p50, 2)} | ${fmt(r.p99, 2)} | ${r.errors} | ${name === 'direct' ? '' : fmt(r.rps / peer.rps, 2)} | ${name === 'direct' ? '' : fmt(r.p99 / Math.max(peer.p99, 0.01), 2)} |`,
        );
      }
    }
  }
}

/**
 * Open-loop load at a fixed rate over 16 keep-alive connections, with each request's latency
 * taken by this process's clock in microseconds (autocannon reports whole milliseconds, too coarse
 * for sub-millisecond added latency). Requests are issued every millisecond tick in bursts of
 * rate/1000, whether or not earlier ones have finished.
 */
async function fixedRateLatencies(url: string, rate: number, seconds: number): Promise<{ achieved: number; p50: number; p99: number; errors: number }> {
  const dispatcher = new Agent({ connections: 16, pipelining: 1 });
  const body = chatBody(false);
  const latencies: number[] = [];
  let errors = 0;
  const inFlight: Promise<void>[] = [];
  const t0 = performance.now();
  let issued = 0;
  while (performance.now() - t0 < seconds * 1000) {
    const due = Math.floor(((performance.now() - t0) / 1000) * rate);
    for (; issued < due; issued++) {
      const start = performance.now();
      inFlight.push(
        request(`${url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body, dispatcher }).then(
          async (res) => {
            await res.body.arrayBuffer();
            if (res.statusCode !== 200) errors++;
            latencies.push(performance.now() - start);
          },
          () => {
            errors++;
          },
        ),
      );
    }
    await new Promise((r) => setTimeout(r, 1));
  }
  await Promise.all(inFlight);
  const elapsed = (performance.now() - t0) / 1000;
  await dispatcher.close();
  latencies.sort((a, b) => a - b);
  const q = (f: number): number => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * f))];
  return { achieved: latencies.length / elapsed, p50: q(0.5), p99: q(0.99), errors };
}

async function fixedRate(targets: Record<string, string>): Promise<void> {
  console.log(`\n## Fixed rate, 16 connections, JSON: added latency over direct (client-side clock, µs resolution)`);
  console.log('| rate req/s | target | achieved req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | errors |');
  console.log('|---|---|---|---|---|---|---|---|');
  for (const rate of [500, 2000]) {
    const rows: Record<string, Awaited<ReturnType<typeof fixedRateLatencies>>> = {};
    for (const [name, url] of Object.entries(targets)) rows[name] = await fixedRateLatencies(url, rate, duration);
    for (const [name, r] of Object.entries(rows)) {
      const added = name === 'direct' ? ['', ''] : [fmt(r.p50 - rows.direct.p50, 3), fmt(r.p99 - rows.direct.p99, 3)];
      console.log(`| ${rate} | ${name} | ${fmt(r.achieved)} | ${fmt(r.p50, 3)} | ${fmt(r.p99, 3)} | ${added[0]} | ${added[1]} | ${r.errors} |`);
    }
  }
}

/** Time to first chunk and mean gap between chunks of one 100-chunk stream, ms. */
async function oneStream(url: string, dispatcher: Agent): Promise<{ ttft: number; perChunk: number; total: number }> {
  const t0 = performance.now();
  const res = await request(`${url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: chatBody(true), dispatcher });
  let first = 0;
  let chunks = 0;
  for await (const part of res.body) {
    if (first === 0) first = performance.now();
    chunks += (part as Buffer).toString().split('data: ').length - 1;
  }
  const end = performance.now();
  return { ttft: first - t0, perChunk: (end - first) / Math.max(1, chunks - 1), total: end - t0 };
}

async function streams(targets: Record<string, string>, delayedTargets: Record<string, string>): Promise<void> {
  console.log('\n## 100-chunk streams, one at a time (median of 50)');
  console.log('| upstream | target | first chunk ms | per chunk ms | total ms | added first chunk ms | added per chunk ms |');
  console.log('|---|---|---|---|---|---|---|');
  for (const [label, set] of [['as fast as possible', targets], ['1 ms between chunks', delayedTargets]] as const) {
    const med: Record<string, { ttft: number; perChunk: number; total: number }> = {};
    for (const [name, url] of Object.entries(set)) {
      const dispatcher = new Agent({ connections: 1 });
      const samples: { ttft: number; perChunk: number; total: number }[] = [];
      for (let i = 0; i < 50; i++) samples.push(await oneStream(url, dispatcher));
      const pick = (k: 'ttft' | 'perChunk' | 'total'): number => samples.map((s) => s[k]).sort((a, b) => a - b)[25];
      med[name] = { ttft: pick('ttft'), perChunk: pick('perChunk'), total: pick('total') };
      await dispatcher.close();
    }
    for (const [name, m] of Object.entries(med)) {
      const added = name === 'direct' ? ['', ''] : [fmt(m.ttft - med.direct.ttft, 3), fmt(m.perChunk - med.direct.perChunk, 4)];
      console.log(`| ${label} | ${name} | ${fmt(m.ttft, 3)} | ${fmt(m.perChunk, 4)} | ${fmt(m.total, 2)} | ${added[0]} | ${added[1]} |`);
    }
  }
}

/** Sends `frames` copies of `frame` as fast as the socket drains; resolves when the receiver counted them. */
async function pump(ws: WebSocket, frame: Uint8Array, frames: number, received: () => number): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < frames; i++) {
    ws.send(frame);
    if (ws.bufferedAmount > 32 * 1024 * 1024) await new Promise((r) => setTimeout(r, 1));
  }
  while (received() < frames) await new Promise((r) => setTimeout(r, 1));
  return (performance.now() - t0) / 1000;
}

async function tapIngest(): Promise<void> {
  const dModel = 4096;
  const rows = 64;
  const frames = values.quick ? 100 : 400;
  const requestIds = Array.from({ length: rows }, (_, i) => `req-${i % 8}`);
  const data = new Float32Array(rows * dModel).map((_, i) => Math.sin(i));
  const frame = encodeActivationFrame({ hookIndex: 0, dtype: 'f16', dModel, requestIds, positions: Int32Array.from({ length: rows }, (_, i) => i), data: data });
  const hello = encodeMessage({ type: 'hello', protocolVersions: [1], modelId: 'bench', dModel, nLayers: 1, hookPoints: ['blocks.0.hook_resid_post'], dtypes: ['f16'], canSteer: false });

  // Raw ws: a WebSocketServer that only counts binary messages, the same bytes in the same frames.
  const rawHttp = http.createServer();
  const wss = new WebSocketServer({ server: rawHttp, maxPayload: 256 * 1024 * 1024 });
  let rawCount = 0;
  wss.on('connection', (s) => s.on('message', () => rawCount++));
  await new Promise<void>((r) => rawHttp.listen(0, '127.0.0.1', r));
  const raw = new WebSocket(`ws://127.0.0.1:${(rawHttp.address() as AddressInfo).port}`);
  await new Promise((r) => raw.once('open', r));
  raw.send(hello);
  while (rawCount < 1) await new Promise((r) => setTimeout(r, 1));
  rawCount = 0;

  // saegate: the proxy's tap endpoint with its counting sink (decode, routing, metrics included).
  const sink = new CountingSink();
  const proxy = await startProxy({ upstream: 'http://127.0.0.1:9', port: 0, sink });
  const tapWs = new WebSocket(proxy.tapUrl);
  await new Promise((r) => tapWs.once('open', r));
  tapWs.send(hello);
  await new Promise((r) => tapWs.once('message', r)); // welcome
  const framesIn = (): number => proxy.tap.server.stats.framesReceived - 1; // minus hello

  const lagRaw = monitorLag();
  const rawSeconds = await pump(raw, frame, frames, () => rawCount);
  const rawLag = lagRaw();
  const lagTap = monitorLag();
  const tapSeconds = await pump(tapWs, frame, frames, framesIn);
  const tapLag = lagTap();
  const mb = (frame.byteLength * frames) / 1e6;
  console.log(`\n## Tap ingest: ${frames} frames of ${rows} rows × d_model ${dModel} f16 (${(frame.byteLength / 1e6).toFixed(2)} MB each), sender and receiver in this process`);
  console.log('| receiver | rows/s | MB/s | ratio to raw ws | event-loop lag p99 ms |');
  console.log('|---|---|---|---|---|');
  console.log(`| raw ws | ${fmt((rows * frames) / rawSeconds)} | ${fmt(mb / rawSeconds)} | 1.00 | ${fmt(rawLag, 2)} |`);
  console.log(`| saegate tap | ${fmt((rows * frames) / tapSeconds)} | ${fmt(mb / tapSeconds)} | ${fmt(rawSeconds / tapSeconds, 2)} | ${fmt(tapLag, 2)} |`);
  console.log(`(saegate's sink counted ${sink.rows} rows)`);
  raw.close();
  tapWs.close();
  wss.close();
  rawHttp.close();
  await proxy.close({ timeoutMs: 500 });
}

/** Starts sampling event-loop lag; the returned function stops and gives the p99 in ms. */
function monitorLag(): () => number {
  const samples: number[] = [];
  let expected = performance.now() + 5;
  const timer = setInterval(() => {
    const now = performance.now();
    samples.push(Math.max(0, now - expected));
    expected = now + 5;
  }, 5);
  return () => {
    clearInterval(timer);
    samples.sort((a, b) => a - b);
    return samples[Math.floor(samples.length * 0.99)] ?? 0;
  };
}

async function rssAtIdle(saegateUrl: string, saegatePid: number): Promise<void> {
  const rss = async (): Promise<number> => {
    const text = await (await fetch(`${saegateUrl}/metrics`)).text();
    const m = /^process_resident_memory_bytes (\S+)$/m.exec(text);
    return m ? Number(m[1]) : NaN;
  };
  const before = await rss();
  const dispatcher = new Agent({ connections: 1100 });
  const open = await Promise.all(
    Array.from({ length: 1000 }, () =>
      request(`${saegateUrl}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'stub', messages: [{ role: 'user', content: 'wait' }], stream: true, idle: true }), dispatcher }),
    ),
  );
  await new Promise((r) => setTimeout(r, 1000));
  const during = await rss();
  const ok = open.filter((r) => r.statusCode === 200).length;
  const metrics = await (await fetch(`${saegateUrl}/metrics`)).text();
  const active = /^saegate_active_streams(?:\{[^}]*\})? (\S+)$/m.exec(metrics)?.[1] ?? '?';
  console.log(`\n## Memory: saegate (pid ${saegatePid}) RSS ${fmt(before / 2 ** 20, 1)} MiB idle, ${fmt(during / 2 ** 20, 1)} MiB with ${ok} of 1,000 idle streams open (200, first chunk received; saegate_active_streams ${active}): ${fmt((during - before) / ok / 1024, 1)} KiB per stream`);
  for (const r of open) r.body.destroy();
  await dispatcher.destroy();
}

async function main(): Promise<void> {
  const stubPort = await startChild([here('./proxy/stub-upstream.ts')], /listening (\d+)/);
  const slowStubPort = await startChild([here('./proxy/stub-upstream.ts'), '--chunk-delay-ms', '1'], /listening (\d+)/);
  const direct = `http://127.0.0.1:${stubPort}`;
  const peerPort = await startChild([here('./proxy/fastify-proxy.ts'), '--upstream', direct], /listening (\d+)/);
  const saegatePort = await startChild([here('../../src/cli/main.ts'), 'serve', '--upstream', direct, '--port', '0'], /OpenAI API\s+http:\/\/127\.0\.0\.1:(\d+)/);
  const slowPeer = await startChild([here('./proxy/fastify-proxy.ts'), '--upstream', `http://127.0.0.1:${slowStubPort}`], /listening (\d+)/);
  const slowSaegate = await startChild([here('../../src/cli/main.ts'), 'serve', '--upstream', `http://127.0.0.1:${slowStubPort}`, '--port', '0'], /OpenAI API\s+http:\/\/127\.0\.0\.1:(\d+)/);
  const targets = {
    direct,
    '@fastify/http-proxy': `http://127.0.0.1:${peerPort}`,
    saegate: `http://127.0.0.1:${saegatePort}`,
  };
  await load(targets.saegate, 16, false); // warm up JIT and pools
  await load(targets['@fastify/http-proxy'], 16, false);
  if (only.has('load')) await fullLoad(targets);
  if (only.has('rate')) await fixedRate(targets);
  if (only.has('streams')) await streams(targets, { direct: `http://127.0.0.1:${slowStubPort}`, '@fastify/http-proxy': `http://127.0.0.1:${slowPeer}`, saegate: `http://127.0.0.1:${slowSaegate}` });
  if (only.has('tap')) await tapIngest();
  if (only.has('memory')) await rssAtIdle(targets.saegate, children[3].pid ?? 0);
}

try {
  await main();
} finally {
  for (const c of children) c.kill('SIGKILL');
}
