/**
 * Reads a prompt corpus: JSONL (one object per line with a `text` or `prompt` string) or plain
 * text (documents separated by blank lines). docs/corpus.md describes both formats.
 *
 * The file is scanned line by line over its bytes (an index scan for '\n', no `split()` of the
 * whole text), and each line is decoded as strict UTF-8 on its own, so every failure — bad UTF-8,
 * bad JSON, a missing field, a repeated id — names the file and the 1-based line it is on. Input
 * that is not a valid corpus only ever fails with SAEGATE_ERR_CORPUS_FILE.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { err, SaegateError } from '../../common/errors.js';

/** One document of a corpus. */
export interface CorpusDocument {
  /** The JSONL `id` (an integer is turned into its decimal string), else the document's 0-based position in the file. */
  id: string;
  /** The document's text: JSONL `text` (or `prompt`); plain text: its lines joined with '\n'. */
  text: string;
}

/** `jsonl`: one JSON object per line. `text`: documents separated by blank lines. */
export type CorpusFormat = 'jsonl' | 'text';

/** Options of {@link readCorpus}. */
export interface ReadCorpusOptions {
  /** Format to parse; 'auto' picks by extension (see {@link corpusFormatOf}). Default 'auto'. */
  format?: CorpusFormat | 'auto';
  /** Stop after this many documents; the rest of the file is not parsed (nor checked). Default: all. */
  maxDocuments?: number;
}

/** Options of {@link parseCorpus}. */
export interface ParseCorpusOptions {
  /** File name (or any label) that errors name. */
  source: string;
  format: CorpusFormat;
  /** As in {@link ReadCorpusOptions}. Default: all. */
  maxDocuments?: number;
}

const JSONL_EXTENSIONS = new Set(['.jsonl', '.ndjson']);
const NEWLINE = 0x0a;
const CARRIAGE_RETURN = 0x0d;
const UTF8_BOM = [0xef, 0xbb, 0xbf] as const;

/** The format `file` is read as by default: `.jsonl` and `.ndjson` (any case) are JSONL, anything else plain text. */
export function corpusFormatOf(file: string): CorpusFormat {
  return JSONL_EXTENSIONS.has(path.extname(file).toLowerCase()) ? 'jsonl' : 'text';
}

/**
 * Reads the corpus in `file`. Throws SAEGATE_ERR_CORPUS_FILE when the file cannot be read or is
 * malformed (naming the line), SAEGATE_ERR_CONFIG for bad options.
 */
export async function readCorpus(file: string, options: ReadCorpusOptions = {}): Promise<CorpusDocument[]> {
  const requested = options.format ?? 'auto';
  if (requested !== 'auto' && requested !== 'jsonl' && requested !== 'text') {
    throw new SaegateError('SAEGATE_ERR_CONFIG', ['format', `'auto', 'jsonl' or 'text', got ${JSON.stringify(requested)}`]);
  }
  const format = requested === 'auto' ? corpusFormatOf(file) : requested;
  checkMaxDocuments(options.maxDocuments);
  let bytes: Uint8Array;
  try {
    bytes = await fs.readFile(file);
  } catch (error) {
    throw err('SAEGATE_ERR_CORPUS_FILE', file, `cannot read: ${(error as Error).message}`);
  }
  return parseCorpus(bytes, { source: file, format, maxDocuments: options.maxDocuments });
}

function checkMaxDocuments(maxDocuments: number | undefined): void {
  if (maxDocuments !== undefined && (!Number.isSafeInteger(maxDocuments) || maxDocuments < 0)) {
    throw new SaegateError('SAEGATE_ERR_CONFIG', ['maxDocuments', `a non-negative integer, got ${maxDocuments}`]);
  }
}

/** Parses corpus bytes already in memory; `readCorpus` without the file system. Same errors. */
export function parseCorpus(bytes: Uint8Array, options: ParseCorpusOptions): CorpusDocument[] {
  checkMaxDocuments(options.maxDocuments);
  const limit = options.maxDocuments ?? Infinity;
  const parser = options.format === 'jsonl' ? new JsonlParser(options.source) : new TextParser();
  const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  let start = bytes.length >= 3 && UTF8_BOM.every((b, i) => bytes[i] === b) ? 3 : 0;
  for (let lineNumber = 1; start <= bytes.length && parser.documents.length < limit; lineNumber++) {
    const newline = bytes.indexOf(NEWLINE, start);
    let end = newline === -1 ? bytes.length : newline;
    if (end > start && bytes[end - 1] === CARRIAGE_RETURN) end--;
    let line: string;
    try {
      line = decoder.decode(bytes.subarray(start, end));
    } catch {
      throw err('SAEGATE_ERR_CORPUS_FILE', options.source, `line ${lineNumber}: not valid UTF-8`);
    }
    parser.line(line, lineNumber);
    if (newline === -1) break;
    start = newline + 1;
  }
  parser.end();
  return parser.documents.length > limit ? parser.documents.slice(0, limit) : parser.documents;
}

interface LineParser {
  readonly documents: CorpusDocument[];
  line(text: string, lineNumber: number): void;
  end(): void;
}

/** A blank line: empty or whitespace only. */
function isBlank(line: string): boolean {
  return line.trim() === '';
}

/** What a JSON value is, for messages. */
function kindOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'an object' : typeof value;
}

/** JSONL: one object per non-blank line. */
class JsonlParser implements LineParser {
  readonly documents: CorpusDocument[] = [];
  /** Line each id was first seen on, to name both lines of a repeat. */
  private readonly idLines = new Map<string, number>();

  constructor(private readonly source: string) {}

  private fail(lineNumber: number, problem: string): never {
    throw err('SAEGATE_ERR_CORPUS_FILE', this.source, `line ${lineNumber}: ${problem}`);
  }

  line(line: string, lineNumber: number): void {
    if (isBlank(line)) return;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (error) {
      this.fail(lineNumber, `not valid JSON (${(error as Error).message})`);
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      this.fail(lineNumber, `expected a JSON object with a "text" or "prompt" string, got ${kindOf(value)}`);
    }
    const record = value as Record<string, unknown>;
    const text = this.textOf(record, lineNumber);
    const id = this.idOf(record, lineNumber);
    const firstLine = this.idLines.get(id);
    if (firstLine !== undefined) {
      const origin = Object.hasOwn(record, 'id') ? '' : ' (its position in the file, as the line has no "id")';
      this.fail(lineNumber, `id ${JSON.stringify(id)}${origin} repeats the id of line ${firstLine}`);
    }
    this.idLines.set(id, lineNumber);
    this.documents.push({ id, text });
  }

  /** `text` wins over `prompt`; a present field of the wrong type is an error, never skipped. */
  private textOf(record: Record<string, unknown>, lineNumber: number): string {
    for (const field of ['text', 'prompt']) {
      if (!Object.hasOwn(record, field)) continue;
      const value = record[field];
      if (typeof value !== 'string') this.fail(lineNumber, `"${field}" must be a string, got ${kindOf(value)}`);
      return value;
    }
    return this.fail(lineNumber, 'has neither a "text" nor a "prompt" string field');
  }

  private idOf(record: Record<string, unknown>, lineNumber: number): string {
    if (!Object.hasOwn(record, 'id')) return String(this.documents.length);
    const value = record.id;
    if (typeof value === 'string' && value !== '') return value;
    if (typeof value === 'number' && Number.isSafeInteger(value)) return String(value);
    return this.fail(lineNumber, `"id" must be a non-empty string or an integer, got ${typeof value === 'string' ? 'an empty string' : kindOf(value)}`);
  }

  end(): void {}
}

/** Plain text: runs of non-blank lines are documents, joined with '\n'. */
class TextParser implements LineParser {
  readonly documents: CorpusDocument[] = [];
  private lines: string[] = [];

  line(line: string): void {
    if (!isBlank(line)) this.lines.push(line);
    else this.flush();
  }

  end(): void {
    this.flush();
  }

  private flush(): void {
    if (this.lines.length === 0) return;
    this.documents.push({ id: String(this.documents.length), text: this.lines.join('\n') });
    this.lines = [];
  }
}
