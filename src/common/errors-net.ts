/**
 * Node's socket-level errors (`EADDRINUSE`, `ECONNRESET`, `ENOTFOUND`, …) become SaegateErrors
 * here, and helpers that read a dependency error's `code` (undici and fastify wrap socket errors in
 * `cause`) live here for the other translators (errors-undici.ts, errors-fastify.ts).
 */
import { SaegateError } from './errors.js';

interface CodedError {
  code?: unknown;
  cause?: unknown;
}

/** The first string `code` on `error` or down its `cause` chain, else null. */
export function errorCodeOf(error: unknown): string | null {
  for (let e = error, depth = 0; typeof e === 'object' && e !== null && depth < 8; depth++) {
    const coded = e as CodedError;
    if (typeof coded.code === 'string') return coded.code;
    e = coded.cause;
  }
  return null;
}

/** `error.message`, with its code appended when the message does not already say it. */
export function describeError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const code = errorCodeOf(error);
  return code !== null && !error.message.includes(code) ? `${error.message} (${code})` : error.message;
}

/** What each listen failure means, in one line for an operator. */
const listenCauses: Record<string, string> = {
  EADDRINUSE: 'the port is already in use (another process listens on it); pick another with --port',
  EACCES: 'permission denied (ports below 1024 need privileges); pick another with --port',
  EADDRNOTAVAIL: 'the address is not one of this machine\'s; check --host',
  ENOTFOUND: 'the host name does not resolve; check --host',
  EAI_AGAIN: 'the host name could not be resolved (DNS failure); check --host',
  EAI_NONAME: 'the host name does not resolve; check --host',
};

/** The same for a Unix socket path (`port` null). */
const socketListenCauses: Record<string, string> = {
  EADDRINUSE: 'another process listens on this socket; pick another path with --unix',
  EACCES: "permission denied on the socket's directory; check --unix",
  ENOENT: "the socket's directory does not exist; check --unix",
  ENOTDIR: 'a part of the path is not a directory; check --unix',
};

/**
 * The one translation of a failed `listen` (fastify's `app.listen` or `net.Server.listen`):
 * SAEGATE_ERR_LISTEN naming `host:port` and the cause, the original error kept as `cause`.
 */
export function listenError(error: unknown, host: string, port: number | null): SaegateError {
  if (error instanceof SaegateError) return error;
  const code = errorCodeOf(error);
  const causes = port === null ? socketListenCauses : listenCauses;
  const cause = code !== null && Object.hasOwn(causes, code) ? `${causes[code]} (${code})` : describeError(error);
  const where = port === null ? host : host.includes(':') && !host.startsWith('[') ? `[${host}]:${port}` : `${host}:${port}`;
  return new SaegateError('SAEGATE_ERR_LISTEN', [where, cause], { cause: error });
}
