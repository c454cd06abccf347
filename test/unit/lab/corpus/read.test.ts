import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isSaegateError, type SaegateError } from '../../../../src/common/errors.js';
import { corpusFormatOf, parseCorpus, readCorpus, type CorpusFormat } from '../../../../src/lab/corpus/read.js';
import { makeTempDir, removeTempDir } from '../../../helpers/fixtures.js';

const utf8 = (text: string): Uint8Array => new TextEncoder().encode(text);
const parse = (text: string | Uint8Array, format: CorpusFormat, maxDocuments?: number) =>
  parseCorpus(typeof text === 'string' ? utf8(text) : text, { source: 'c.jsonl', format, maxDocuments });

/** The SaegateError `fn` throws; fails the test when it throws something else or nothing. */
function corpusError(fn: () => unknown): SaegateError {
  try {
    fn();
  } catch (error) {
    if (isSaegateError(error, 'SAEGATE_ERR_CORPUS_FILE')) return error;
    throw new Error(`expected SAEGATE_ERR_CORPUS_FILE, got ${String(error)}`, { cause: error });
  }
  throw new Error('expected SAEGATE_ERR_CORPUS_FILE, nothing was thrown');
}

describe('parseCorpus, JSONL', () => {
  it('reads text or prompt per line, skips blank lines, and numbers documents without an id by position', () => {
    const docs = parse('{"text": "a"}\n\n   \n{"prompt": "b", "id": "x"}\r\n{"text": "c", "id": 7}\n{"text": ""}', 'jsonl');
    expect(docs).toEqual([
      { id: '0', text: 'a' },
      { id: 'x', text: 'b' },
      { id: '7', text: 'c' },
      { id: '3', text: '' },
    ]);
  });

  it('prefers text over prompt, keeps other fields out, and reads saegate model sample output', () => {
    expect(parse('{"id": 0, "text": "Once", "tokens": 3, "finish_reason": "stop", "prompt": "x"}\n', 'jsonl')).toEqual([{ id: '0', text: 'Once' }]);
  });

  it('strips a UTF-8 byte order mark and keeps non-ASCII text intact', () => {
    const bytes = new Uint8Array([0xef, 0xbb, 0xbf, ...utf8('{"text": "é ☃ \\u00e9"}\n')]);
    expect(parse(bytes, 'jsonl')).toEqual([{ id: '0', text: 'é ☃ é' }]);
  });

  it('stops after maxDocuments without looking at later lines', () => {
    expect(parse('{"text": "a"}\n{"text": "b"}\nnot json\n', 'jsonl', 2).map((d) => d.text)).toEqual(['a', 'b']);
    expect(parse('{"text": "a"}\n', 'jsonl', 0)).toEqual([]);
  });

  it.each([
    ['not JSON', '{"text": "a"}\n{"text": \n', /line 2: not valid JSON/],
    ['an array', '[1, 2]', /line 1: expected a JSON object with a "text" or "prompt" string, got an array/],
    ['a string', '"hello"', /line 1: expected a JSON object .* got string/],
    ['null', '\n\nnull', /line 3: expected a JSON object .* got null/],
    ['no text field', '{"body": "x"}', /line 1: has neither a "text" nor a "prompt" string field/],
    ['a numeric text', '{"text": 5}', /line 1: "text" must be a string, got number/],
    ['a text that is not a string even with a prompt', '{"text": null, "prompt": "x"}', /line 1: "text" must be a string, got null/],
    ['an object prompt', '{"prompt": {}}', /line 1: "prompt" must be a string, got an object/],
    ['a fractional id', '{"text": "a", "id": 1.5}', /line 1: "id" must be a non-empty string or an integer, got number/],
    ['an empty id', '{"text": "a", "id": ""}', /line 1: "id" must be a non-empty string or an integer, got an empty string/],
    ['a repeated id', '{"text": "a", "id": "k"}\n{"text": "b"}\n{"text": "c", "id": "k"}', /line 3: id "k" repeats the id of line 1/],
    ['a positional id that repeats an explicit one', '{"text": "a", "id": 1}\n{"text": "b"}', /line 2: id "1" \(its position in the file, as the line has no "id"\) repeats the id of line 1/],
  ])('refuses %s, naming the file and line', (_name, input, message) => {
    const error = corpusError(() => parse(input, 'jsonl'));
    expect(error.message).toMatch(/^corpus file 'c\.jsonl': /);
    expect(error.message).toMatch(message);
    expect(error.status).toBe(400);
  });

  it('refuses a line that is not valid UTF-8, naming it', () => {
    const bytes = new Uint8Array([...utf8('{"text": "ok"}\n{"text": "'), 0xc3, 0x28, ...utf8('"}\n')]);
    expect(corpusError(() => parse(bytes, 'jsonl')).message).toBe("corpus file 'c.jsonl': line 2: not valid UTF-8");
  });
});

describe('parseCorpus, plain text', () => {
  it('splits documents at blank lines and joins each document’s lines with \\n', () => {
    const docs = parse('\n\nfirst line\nsecond line\r\n\n  \n\nthird\n  indented\n', 'text');
    expect(docs).toEqual([
      { id: '0', text: 'first line\nsecond line' },
      { id: '1', text: 'third\n  indented' },
    ]);
  });

  it('reads a file without a final newline, and an empty file as no documents', () => {
    expect(parse('a\n\nb', 'text').map((d) => d.text)).toEqual(['a', 'b']);
    expect(parse('', 'text')).toEqual([]);
    expect(parse('\n \n', 'text')).toEqual([]);
  });

  it('takes JSON lines literally as text', () => {
    expect(parse('{"text": "a"}', 'text')).toEqual([{ id: '0', text: '{"text": "a"}' }]);
  });

  it('stops after maxDocuments', () => {
    expect(parse('a\n\nb\n\nc', 'text', 2).map((d) => d.text)).toEqual(['a', 'b']);
  });

  it('refuses bad UTF-8 with the line number', () => {
    expect(corpusError(() => parse(new Uint8Array([0x61, 0x0a, 0x0a, 0x62, 0x0a, 0xff]), 'text')).message).toMatch(/line 4: not valid UTF-8/);
  });
});

describe('parseCorpus on hostile input', () => {
  /** Parses or throws SAEGATE_ERR_CORPUS_FILE; anything else fails the property. */
  function parsesOrFailsTyped(bytes: Uint8Array, format: CorpusFormat): boolean {
    try {
      const docs = parseCorpus(bytes, { source: 'fuzz', format });
      for (const doc of docs) if (typeof doc.id !== 'string' || typeof doc.text !== 'string') throw new Error(`bad document ${JSON.stringify(doc)}`);
      return true;
    } catch (error) {
      if (isSaegateError(error, 'SAEGATE_ERR_CORPUS_FILE')) return true;
      throw new Error(`parseCorpus threw something other than SAEGATE_ERR_CORPUS_FILE: ${String(error)}`, { cause: error });
    }
  }

  const fragments = ['{', '}', '[', ']', '"text"', '"prompt"', '"id"', ':', ',', '"a"', '1', '1.5', 'null', '{}', '\n', '\r\n', ' ', '"\\u00e9"', '"__proto__"', '\xff'];
  const jsonish = fc.array(fc.constantFrom(...fragments), { maxLength: 40 }).map((parts) => utf8(parts.join('')));

  it.each(['jsonl', 'text'] as const)('%s: any byte string parses or fails with SAEGATE_ERR_CORPUS_FILE', (format) => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => parsesOrFailsTyped(bytes, format)), { numRuns: 500 });
    fc.assert(fc.property(jsonish, (bytes) => parsesOrFailsTyped(bytes, format)), { numRuns: 500 });
  });

  it('round-trips any documents written as JSONL with ids', () => {
    const documents = fc.uniqueArray(fc.record({ id: fc.string({ minLength: 1 }), text: fc.string() }), { selector: (d) => d.id, maxLength: 20 });
    fc.assert(
      fc.property(documents, (docs) => {
        const jsonl = docs.map((d) => JSON.stringify(d)).join('\n');
        expect(parse(jsonl, 'jsonl')).toEqual(docs);
      }),
    );
  });
});

describe('readCorpus', () => {
  let dir: string;
  beforeAll(() => {
    dir = makeTempDir('saegate-corpus-');
  });
  afterAll(() => removeTempDir(dir));

  const write = (name: string, content: string): string => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, content);
    return file;
  };

  it('picks the format by extension: .jsonl and .ndjson are JSONL, anything else text', async () => {
    expect(corpusFormatOf('a/b.JSONL')).toBe('jsonl');
    expect(corpusFormatOf('b.ndjson')).toBe('jsonl');
    expect(corpusFormatOf('b.json')).toBe('text');
    expect(corpusFormatOf('b')).toBe('text');
    const content = '{"text": "a"}\n{"text": "b"}\n';
    expect(await readCorpus(write('c.ndjson', content))).toEqual([
      { id: '0', text: 'a' },
      { id: '1', text: 'b' },
    ]);
    expect(await readCorpus(write('c.txt', content))).toEqual([{ id: '0', text: '{"text": "a"}\n{"text": "b"}' }]);
  });

  it('lets the caller force the format and cap the document count', async () => {
    const file = write('forced.txt', '{"text": "a"}\n{"text": "b"}\n{"text": "c"}\n');
    expect(await readCorpus(file, { format: 'jsonl', maxDocuments: 2 })).toEqual([
      { id: '0', text: 'a' },
      { id: '1', text: 'b' },
    ]);
    const jsonl = write('forced.jsonl', 'one\n\ntwo\n');
    expect((await readCorpus(jsonl, { format: 'text' })).map((d) => d.text)).toEqual(['one', 'two']);
  });

  it('names the file and line of a bad line', async () => {
    const file = write('bad.jsonl', '{"text": "a"}\n{"txt": "b"}\n');
    await expect(readCorpus(file)).rejects.toThrow(`corpus file '${file}': line 2: has neither a "text" nor a "prompt" string field`);
  });

  it('fails with SAEGATE_ERR_CORPUS_FILE for a missing file and SAEGATE_ERR_CONFIG for bad options', async () => {
    const missing = path.join(dir, 'missing.jsonl');
    await expect(readCorpus(missing)).rejects.toMatchObject({ code: 'SAEGATE_ERR_CORPUS_FILE', message: expect.stringMatching(/missing\.jsonl': cannot read: .*ENOENT/) });
    const file = write('ok.jsonl', '{"text": "a"}\n');
    await expect(readCorpus(file, { maxDocuments: -1 })).rejects.toMatchObject({ code: 'SAEGATE_ERR_CONFIG' });
    await expect(readCorpus(file, { maxDocuments: 1.5 })).rejects.toMatchObject({ code: 'SAEGATE_ERR_CONFIG' });
    // A format from untyped input (a config file) is checked too.
    await expect(readCorpus(file, { format: 'csv' as CorpusFormat })).rejects.toMatchObject({ code: 'SAEGATE_ERR_CONFIG' });
  });
});
