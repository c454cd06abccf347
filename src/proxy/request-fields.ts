/**
 * Reads the few top-level fields the proxy needs (`model`, `stream`) straight from the raw request
 * body, without parsing the rest and without re-serialising anything: the bytes forwarded upstream
 * are the bytes the client sent.
 *
 * An index-scanning parser walks the top-level object once; nested values are skipped by
 * counting brackets outside strings, so a 30 MiB body of steering vectors costs one pass over its
 * bytes and no allocation beyond the two values returned. It is not a validator: it checks the
 * top-level structure (an object of `"key": value` pairs) and leaves the rest to the upstream.
 */
import { SaegateError } from '../common/errors.js';

/** The top-level fields saegate reads from a generation request. */
export interface RequestFields {
  /** `model` when it is a string, else null. */
  model: string | null;
  /** True only when `stream` is the JSON literal `true` (as the OpenAI API reads it). */
  stream: boolean;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const COLON = 0x3a;
const COMMA = 0x2c;

const MODEL = Buffer.from('model');
const STREAM = Buffer.from('stream');
const TRUE = Buffer.from('true');

function isSpace(b: number): boolean {
  return b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
}

function fail(detail: string, at: number): never {
  throw new SaegateError('SAEGATE_ERR_INVALID_JSON', [`${detail} at byte ${at}`]);
}

function skipSpace(buf: Uint8Array, i: number): number {
  while (i < buf.length && isSpace(buf[i])) i++;
  return i;
}

/** Whether the string last scanned by `stringEnd` held a backslash (a global, so scanning allocates nothing). */
let lastStringEscaped = false;

/** Index of the closing quote of the string whose opening quote is at `start`; sets `lastStringEscaped`. */
function stringEnd(buf: Uint8Array, start: number): number {
  lastStringEscaped = false;
  for (let i = start + 1; i < buf.length; i++) {
    const b = buf[i];
    if (b === QUOTE) return i;
    if (b === BACKSLASH) {
      lastStringEscaped = true;
      i++;
    } else if (b < 0x20) {
      fail('control character in a string', i);
    }
  }
  return fail('unterminated string', start);
}

/** Skips one value starting at `i` (after whitespace); returns the index just past it. */
function skipValue(buf: Uint8Array, i: number): number {
  const b = buf[i];
  if (b === QUOTE) return stringEnd(buf, i) + 1;
  if (b === OPEN_BRACE || b === OPEN_BRACKET) {
    let depth = 0;
    for (let j = i; j < buf.length; j++) {
      const c = buf[j];
      if (c === QUOTE) j = stringEnd(buf, j);
      else if (c === OPEN_BRACE || c === OPEN_BRACKET) depth++;
      else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
        depth--;
        if (depth === 0) return j + 1;
      }
    }
    return fail('unterminated object or array', i);
  }
  // A number or a literal: runs to the next delimiter.
  let j = i;
  while (j < buf.length) {
    const c = buf[j];
    if (c === COMMA || c === CLOSE_BRACE || c === CLOSE_BRACKET || isSpace(c)) break;
    j++;
  }
  if (j === i) fail('expected a value', i);
  return j;
}

function bytesEqual(buf: Uint8Array, start: number, end: number, word: Uint8Array): boolean {
  if (end - start !== word.length) return false;
  for (let k = 0; k < word.length; k++) if (buf[start + k] !== word[k]) return false;
  return true;
}

/** The decoded text of the string spanning [start, end] (both quotes included). */
function decodeString(buf: Buffer, start: number, end: number, escaped: boolean): string {
  if (!escaped) return buf.toString('utf8', start + 1, end);
  try {
    return JSON.parse(buf.toString('utf8', start, end + 1)) as string;
  } catch {
    return fail('invalid escape in a string', start);
  }
}

/** Length of a UTF-8 byte order mark (EF BB BF) at the start of `body`, else 0. */
function bomLength(body: Buffer): number {
  return body.length >= 3 && body[0] === 0xef && body[1] === 0xbb && body[2] === 0xbf ? 3 : 0;
}

/**
 * Reads `model` and `stream` from a JSON request body. Throws SAEGATE_ERR_INVALID_JSON when the
 * body is not a JSON object at the top level. Like JSON.parse, a repeated key's last value wins.
 * A UTF-8 byte order mark as the very first bytes is skipped, as the model server's (fastify's)
 * JSON parser does: saegate must not refuse what the upstream accepts. The bytes forwarded are
 * unchanged either way.
 */
export function readRequestFields(body: Buffer): RequestFields {
  const fields: RequestFields = { model: null, stream: false };
  let i = skipSpace(body, bomLength(body));
  if (i >= body.length) fail('empty body', 0);
  if (body[i] !== OPEN_BRACE) fail('expected a JSON object', i);
  i = skipSpace(body, i + 1);
  if (body[i] === CLOSE_BRACE) return finish(body, i + 1, fields);
  for (;;) {
    if (body[i] !== QUOTE) fail('expected a key', i);
    const keyStart = i;
    const keyEnd = stringEnd(body, i);
    // 1 = model, 2 = stream, 0 = anything else. Escaped keys ("mod\u0065l") are rare enough to decode the slow way.
    let field = 0;
    if (lastStringEscaped) {
      const name = decodeString(body, keyStart, keyEnd, true);
      field = name === 'model' ? 1 : name === 'stream' ? 2 : 0;
    } else if (bytesEqual(body, keyStart + 1, keyEnd, MODEL)) {
      field = 1;
    } else if (bytesEqual(body, keyStart + 1, keyEnd, STREAM)) {
      field = 2;
    }
    i = skipSpace(body, keyEnd + 1);
    if (body[i] !== COLON) fail("expected ':'", i);
    i = skipSpace(body, i + 1);
    if (i >= body.length) fail('expected a value', i);
    const valueStart = i;
    i = skipValue(body, i);
    if (field === 1) {
      fields.model = body[valueStart] === QUOTE ? decodeString(body, valueStart, i - 1, lastStringEscaped) : null;
    } else if (field === 2) {
      fields.stream = bytesEqual(body, valueStart, i, TRUE);
    }
    i = skipSpace(body, i);
    if (body[i] === COMMA) {
      i = skipSpace(body, i + 1);
      continue;
    }
    if (body[i] === CLOSE_BRACE) return finish(body, i + 1, fields);
    fail("expected ',' or '}'", i);
  }
}

function finish(body: Buffer, i: number, fields: RequestFields): RequestFields {
  if (skipSpace(body, i) !== body.length) fail('unexpected bytes after the object', i);
  return fields;
}
