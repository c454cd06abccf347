/**
 * A fast OpenAI-shaped upstream for proxy benchmarks: fixed JSON for non-streaming requests and
 * `chunks` SSE chunks (default 100) for streaming ones, written as fast as the socket takes them
 * (or `chunkDelayMs` apart). `GET /v1/models` answers too, so saegate's readiness probe passes.
 * A streaming request whose body has `"idle":true` gets one chunk and then stays open (memory-at-idle test).
 *
 *   npx tsx test/bench/proxy/stub-upstream.ts [--port N]   (prints "listening PORT")
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';

const completion = Buffer.from(
  JSON.stringify({
    id: 'chatcmpl-stub',
    object: 'chat.completion',
    created: 1,
    model: 'stub',
    choices: [{ index: 0, message: { role: 'assistant', content: 'Hello from the stub upstream.' }, finish_reason: 'stop', logprobs: null }],
    usage: { prompt_tokens: 5, completion_tokens: 7, total_tokens: 12 },
  }),
);
const chunk = Buffer.from(
  `data: ${JSON.stringify({ id: 'chatcmpl-stub', object: 'chat.completion.chunk', created: 1, model: 'stub', choices: [{ index: 0, delta: { content: 'tok ' }, finish_reason: null }] })}\n\n`,
);
const done = Buffer.from('data: [DONE]\n\n');
const models = Buffer.from(JSON.stringify({ object: 'list', data: [{ id: 'stub', object: 'model', created: 1, owned_by: 'stub' }] }));

export function startStub(port = 0, options: { chunks?: number; chunkDelayMs?: number } = {}): Promise<http.Server> {
  const chunks = options.chunks ?? 100;
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/v1/models') {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': models.length });
      res.end(models);
      return;
    }
    const body: Buffer[] = [];
    req.on('data', (d: Buffer) => body.push(d));
    req.on('end', () => {
      const text = Buffer.concat(body).toString();
      if (text.includes('"idle":true')) {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(chunk);
        return; // stays open until the client goes away
      }
      if (!text.includes('"stream":true')) {
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': completion.length });
        res.end(completion);
        return;
      }
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      let sent = 0;
      const next = (): void => {
        while (sent < chunks) {
          sent++;
          if (options.chunkDelayMs) {
            res.write(chunk);
            setTimeout(next, options.chunkDelayMs);
            return;
          }
          if (!res.write(chunk)) {
            res.once('drain', next);
            return;
          }
        }
        res.end(done);
      };
      next();
    });
  });
  server.keepAliveTimeout = 60_000;
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve(server)));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { port: { type: 'string' }, 'chunk-delay-ms': { type: 'string' } } });
  const server = await startStub(Number(values.port ?? 0), { chunkDelayMs: values['chunk-delay-ms'] ? Number(values['chunk-delay-ms']) : undefined });
  process.stdout.write(`listening ${(server.address() as AddressInfo).port}\n`);
}
