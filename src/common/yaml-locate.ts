/**
 * Positions in hand-written YAML/JSON files, shared by every loader that reports problems as
 * `file:line:column: path: message` (policies, alert rules, watched features): a path inside a
 * parsed document is mapped back to the line and column of the key or value as written.
 */
import { isMap, isNode, isPair, isScalar, LineCounter, parseDocument, type Document } from 'yaml';
import type { z } from 'zod';

/** One problem in a file. */
export interface FileProblem {
  file: string;
  /** 1-based; 0 when the problem is about the file as a whole. */
  line: number;
  column: number;
  /** Path inside the document, e.g. `spec.actions[1].steer.scale`; empty for the whole document. */
  path: string;
  message: string;
}

/** `file:line:column: path: message`. */
export function formatProblem(problem: FileProblem): string {
  const where = problem.line > 0 ? `${problem.file}:${problem.line}:${problem.column}` : problem.file;
  return `${where}: ${problem.path === '' ? '(document)' : problem.path}: ${problem.message}`;
}

/** Formats a zod/our path as `spec.actions[1].steer`. */
export function formatPath(segments: readonly PropertyKey[]): string {
  let out = '';
  for (const segment of segments) {
    if (typeof segment === 'number') out += `[${segment}]`;
    else out += out === '' ? String(segment) : `.${String(segment)}`;
  }
  return out;
}

/** Line and column (1-based) of a character offset. */
export function linePosition(lines: LineCounter, offset: number): { line: number; column: number } {
  const { line, col } = lines.linePos(offset);
  return { line, column: col };
}

/**
 * A function giving the position of the value at `segments` (or of the key itself with `atKey`,
 * for unknown keys); the nearest existing ancestor when the path runs out (a missing key points at
 * its parent).
 */
export function yamlLocator(doc: Document, lines: LineCounter): (segments: readonly (string | number)[], atKey?: boolean) => { line: number; column: number } {
  return (segments, atKey = false) => {
    let node: unknown = doc.contents;
    let offset = isNode(node) && node.range ? node.range[0] : 0;
    for (let i = 0; i < segments.length; i++) {
      const segment = segments[i];
      if (!isNode(node)) break;
      let next: unknown;
      if (isMap(node)) {
        const pair = node.items.find((item) => isPair(item) && isScalar(item.key) && String(item.key.value) === String(segment));
        if (!pair) break;
        if (isNode(pair.key) && pair.key.range) offset = pair.key.range[0];
        if (atKey && i === segments.length - 1) return linePosition(lines, offset);
        next = pair.value;
      } else if ('items' in node && Array.isArray((node as { items: unknown[] }).items) && typeof segment === 'number') {
        next = (node as { items: unknown[] }).items[segment];
      } else {
        break;
      }
      if (isNode(next) && next.range) offset = next.range[0];
      node = next;
    }
    return linePosition(lines, offset);
  };
}

/**
 * Parses a one-document YAML (or JSON) file's text and validates it with `schema`. Every problem is
 * returned, each at the line and column of the key or value as written: YAML syntax errors, zod
 * issues (unknown keys point at the key), an empty file.
 */
export function parseYamlFile<T>(text: string, file: string, schema: z.ZodType<T>): { value: T | null; problems: FileProblem[]; locate: ReturnType<typeof yamlLocator> | null } {
  const lines = new LineCounter();
  const body = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  const doc = parseDocument(body, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    return {
      value: null,
      locate: null,
      problems: doc.errors.map((error) => ({ file, ...linePosition(lines, error.pos[0]), path: '', message: `YAML syntax error: ${error.message.split('\n')[0]}` })),
    };
  }
  if (doc.contents === null) return { value: null, locate: null, problems: [{ file, line: 0, column: 0, path: '', message: 'the file is empty' }] };
  const locate = yamlLocator(doc, lines);
  const parsed = schema.safeParse(doc.toJS());
  if (parsed.success) return { value: parsed.data, problems: [], locate };
  const problems: FileProblem[] = [];
  for (const issue of parsed.error.issues) {
    const at = issue.path.filter((p): p is string | number => typeof p === 'string' || typeof p === 'number');
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) problems.push({ file, ...locate([...at, key], true), path: formatPath([...at, key]), message: `unknown key '${key}'` });
    } else {
      problems.push({ file, ...locate(at), path: formatPath(at), message: issue.message });
    }
  }
  return { value: null, problems, locate };
}
