/**
 * Downloading a file we know the hash of: into a temporary file beside the target, hashed while it
 * streams, renamed into place only when the byte count and sha256 match. Nothing partial is ever
 * at the target path: an interrupted transfer, a corrupt body or a wrong status leaves the target
 * as it was and removes the temporary file, and the error (SAEGATE_ERR_DOWNLOAD) says which.
 *
 * Used for the default model on a fresh machine (stories260K from its public home); tested against
 * a local HTTP server.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { err } from './errors.js';

export interface DownloadOptions {
  url: string;
  /** Final path; written atomically. */
  target: string;
  /** Expected sha256, lowercase hex. */
  sha256: string;
  /** Called as bytes arrive (`total` is null without a content-length). */
  onProgress?: (received: number, total: number | null) => void;
  /** Whole-transfer deadline, ms. Default 120000. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** sha256 (hex) of a file's bytes, streamed. */
export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of fs.createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** True when `file` exists and its sha256 is `sha256`. */
export async function hasVerifiedFile(file: string, sha256: string): Promise<boolean> {
  try {
    return (await sha256File(file)) === sha256;
  } catch {
    return false;
  }
}

/** Downloads `url` to `target`, verified by sha256. Throws SAEGATE_ERR_DOWNLOAD; never leaves a partial file. */
export async function downloadVerified(options: DownloadOptions): Promise<void> {
  const { url, target, sha256 } = options;
  fs.mkdirSync(path.dirname(target), { recursive: true });
  const tmp = `${target}.${process.pid}.${Date.now()}.part`;
  const timeout = AbortSignal.timeout(options.timeoutMs ?? 120_000);
  const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
  let response: Response;
  try {
    response = await fetch(url, { signal, redirect: 'follow' });
  } catch (error) {
    throw err('SAEGATE_ERR_DOWNLOAD', url, describeFetchError(error));
  }
  if (!response.ok || response.body === null) {
    await response.body?.cancel().catch(() => undefined);
    throw err('SAEGATE_ERR_DOWNLOAD', url, `HTTP ${response.status}${response.statusText ? ` ${response.statusText}` : ''}`);
  }
  const lengthHeader = response.headers.get('content-length');
  const total = lengthHeader !== null && /^\d+$/.test(lengthHeader) ? Number(lengthHeader) : null;
  const hash = createHash('sha256');
  let received = 0;
  const out = fs.openSync(tmp, 'w');
  try {
    try {
      for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
        hash.update(chunk);
        fs.writeSync(out, chunk);
        received += chunk.length;
        options.onProgress?.(received, total);
      }
    } catch (error) {
      throw err('SAEGATE_ERR_DOWNLOAD', url, `transfer interrupted after ${received} bytes (${describeFetchError(error)})`);
    } finally {
      fs.closeSync(out);
    }
    if (total !== null && received !== total) throw err('SAEGATE_ERR_DOWNLOAD', url, `transfer ended after ${received} of ${total} bytes`);
    const actual = hash.digest('hex');
    if (actual !== sha256) throw err('SAEGATE_ERR_DOWNLOAD', url, `sha256 is ${actual}, expected ${sha256}; the file was discarded`);
    fs.renameSync(tmp, target);
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}

function describeFetchError(error: unknown): string {
  if (error instanceof Error) {
    const cause = (error as Error & { cause?: unknown }).cause;
    if (error.name === 'TimeoutError') return 'timed out';
    if (cause instanceof Error) return `${error.message}: ${(cause as NodeJS.ErrnoException).code ?? cause.message}`;
    return error.message;
  }
  return String(error);
}
