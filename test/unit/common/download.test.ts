import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { downloadVerified, hasVerifiedFile } from '../../../src/common/download.js';
import { expectSaegateRejection } from '../../helpers/errors.js';

const body = Buffer.from(Array.from({ length: 200_000 }, (_, i) => (i * 31) & 0xff));
const sha = createHash('sha256').update(body).digest('hex');
let server: http.Server;
let base: string;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'saegate-download-'));

beforeAll(async () => {
  server = http.createServer((req, res) => {
    if (req.url === '/good.bin') {
      res.writeHead(200, { 'content-length': body.length });
      res.end(body);
    } else if (req.url === '/corrupt.bin') {
      const bad = Buffer.from(body);
      bad[1234] ^= 0xff;
      res.writeHead(200, { 'content-length': bad.length });
      res.end(bad);
    } else if (req.url === '/cut.bin') {
      // Announce the whole length, send a third, then drop the connection.
      res.writeHead(200, { 'content-length': body.length });
      res.write(body.subarray(0, 70_000), () => res.socket?.destroy());
    } else if (req.url === '/redirect.bin') {
      res.writeHead(302, { location: '/good.bin' });
      res.end();
    } else {
      res.writeHead(404);
      res.end('not found');
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  fs.rmSync(dir, { recursive: true, force: true });
});

const leftovers = () => fs.readdirSync(dir).filter((name) => name.endsWith('.part'));

describe('verified downloads', () => {
  it('writes a good file in place, with progress, following redirects', async () => {
    const target = path.join(dir, 'good.bin');
    const progress: number[] = [];
    await downloadVerified({ url: `${base}/redirect.bin`, target, sha256: sha, onProgress: (received, total) => { progress.push(received); expect(total).toBe(body.length); } });
    expect(fs.readFileSync(target).equals(body)).toBe(true);
    expect(progress.at(-1)).toBe(body.length);
    expect(await hasVerifiedFile(target, sha)).toBe(true);
    expect(leftovers()).toEqual([]);
  });

  it('refuses and deletes a corrupt file, leaving no target', async () => {
    const target = path.join(dir, 'corrupt.bin');
    await expectSaegateRejection(() => downloadVerified({ url: `${base}/corrupt.bin`, target, sha256: sha }), 'SAEGATE_ERR_DOWNLOAD', 'corrupt.bin', `expected ${sha}`, 'discarded');
    expect(fs.existsSync(target)).toBe(false);
    expect(leftovers()).toEqual([]);
  });

  it('never uses a partial file from an interrupted transfer, and keeps an earlier good file', async () => {
    const target = path.join(dir, 'cut.bin');
    fs.writeFileSync(target, 'the previous file');
    await expectSaegateRejection(() => downloadVerified({ url: `${base}/cut.bin`, target, sha256: sha }), 'SAEGATE_ERR_DOWNLOAD', 'cut.bin');
    expect(fs.readFileSync(target, 'utf8')).toBe('the previous file');
    expect(leftovers()).toEqual([]);
  });

  it('reports a 404 by status and an unreachable host by cause', async () => {
    await expectSaegateRejection(() => downloadVerified({ url: `${base}/missing.bin`, target: path.join(dir, 'missing.bin'), sha256: sha }), 'SAEGATE_ERR_DOWNLOAD', 'HTTP 404');
    const closed = http.createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    await expectSaegateRejection(() => downloadVerified({ url: `http://127.0.0.1:${port}/x.bin`, target: path.join(dir, 'x.bin'), sha256: sha }), 'SAEGATE_ERR_DOWNLOAD', 'ECONNREFUSED');
    expect(fs.existsSync(path.join(dir, 'missing.bin'))).toBe(false);
  });
});
