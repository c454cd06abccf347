import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { SaegateError } from '../../../src/common/errors.js';
import { readRequestFields } from '../../../src/proxy/request-fields.js';

const read = (text: string) => readRequestFields(Buffer.from(text, 'utf8'));

/** What JSON.parse says the fields are, by the same rules. */
function expected(value: Record<string, unknown>) {
  return { model: typeof value.model === 'string' ? value.model : null, stream: value.stream === true };
}

describe('readRequestFields', () => {
  it('reads model and stream from a chat request without parsing the rest', () => {
    expect(read('{"model":"llama","messages":[{"role":"user","content":"hi } ] \\" {"}],"stream":true}')).toEqual({ model: 'llama', stream: true });
  });

  it('treats a missing or non-true stream as not streaming and a non-string model as null', () => {
    expect(read('{"model": 5, "stream": "true"}')).toEqual({ model: null, stream: false });
    expect(read('{}')).toEqual({ model: null, stream: false });
    expect(read(' \n{ "stream" : false , "model" : "" }\t')).toEqual({ model: '', stream: false });
  });

  it('decodes escapes in the model name and in keys, and lets a repeated key’s last value win', () => {
    expect(read('{"mod\\u0065l":"a\\"b\\u00e9","stream":true,"stream":false}')).toEqual({ model: 'a"bé', stream: false });
  });

  it('skips a UTF-8 byte order mark at the very start, as the model server (fastify) does, and nowhere else', () => {
    expect(read('\uFEFF{"model":"m","stream":true}')).toEqual({ model: 'm', stream: true });
    expect(() => read(' \uFEFF{"model":"m"}')).toThrow(SaegateError);
    expect(() => read('\uFEFF\uFEFF{"model":"m"}')).toThrow(SaegateError);
  });

  it('skips nested values that contain the field names', () => {
    expect(read('{"metadata":{"model":"inner","stream":true},"tools":[{"stream":true}],"model":"outer"}')).toEqual({ model: 'outer', stream: false });
  });

  it.each([
    ['', 'empty body'],
    ['[1,2]', 'expected a JSON object'],
    ['{"model":"x"', "expected ',' or '}'"],
    ['{"model":"x}', 'unterminated string'],
    ['{"a":{"b":[1,2}', 'unterminated object or array'],
    ['{"model":"x"} trailing', 'unexpected bytes after the object'],
    ['{model:"x"}', 'expected a key'],
    ['{"model" "x"}', "expected ':'"],
    ['{"model":}', 'expected a value'],
  ])('refuses %j with SAEGATE_ERR_INVALID_JSON (%s)', (body, detail) => {
    let thrown: unknown;
    try {
      read(body);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(SaegateError);
    expect((thrown as SaegateError).code).toBe('SAEGATE_ERR_INVALID_JSON');
    expect((thrown as SaegateError).message).toContain(detail);
  });

  it('agrees with JSON.parse on any JSON object, however it is laid out', () => {
    const key = fc.oneof(fc.constantFrom('model', 'stream', 'messages', 'prompt'), fc.string());
    const value = fc.oneof(fc.jsonValue(), fc.string(), fc.boolean());
    fc.assert(
      fc.property(fc.dictionary(key, value), fc.constantFrom(undefined, 0, 2, '\t'), (object, indent) => {
        const text = JSON.stringify(object, null, indent);
        expect(read(text)).toEqual(expected(JSON.parse(text) as Record<string, unknown>));
      }),
      { numRuns: 500 },
    );
  });

  it('either reads any byte string or refuses it with a typed error, never crashing', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        try {
          const fields = readRequestFields(Buffer.from(bytes));
          expect(typeof fields.stream).toBe('boolean');
        } catch (error) {
          expect(error).toBeInstanceOf(SaegateError);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('either reads any mutation of a request body or refuses it with a typed error', () => {
    const base = Buffer.from('{"model":"m","messages":[{"role":"user","content":"a\\"b"}],"stream":true}');
    fc.assert(
      fc.property(fc.nat(base.length - 1), fc.integer({ min: 0, max: 255 }), (at, byte) => {
        const bytes = Buffer.from(base);
        bytes[at] = byte;
        try {
          readRequestFields(bytes);
        } catch (error) {
          expect(error).toBeInstanceOf(SaegateError);
        }
      }),
      { numRuns: 2000 },
    );
  });
});
