/**
 * The maintained peer for comparison: a plain fastify + @fastify/http-proxy pass-through, the way
 * its README sets it up (undici underneath), nothing else.
 *
 *   npx tsx test/bench/proxy/fastify-proxy.ts --upstream URL   (prints "listening PORT")
 */
import proxy from '@fastify/http-proxy';
import Fastify from 'fastify';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { upstream: { type: 'string' } } });
const app = Fastify({ logger: false, bodyLimit: 32 * 1024 * 1024 });
await app.register(proxy, { upstream: values.upstream!, prefix: '/v1', rewritePrefix: '/v1', http2: false });
await app.listen({ port: 0, host: '127.0.0.1' });
process.stdout.write(`listening ${(app.server.address() as AddressInfo).port}\n`);
