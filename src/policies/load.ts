/**
 * Reading policy files: a directory (or one file) of YAML or JSON, each file one or more YAML
 * documents (`---`), each document one policy. Every problem is collected — not only the first —
 * as `file:line:column: path: message`, pointing at the key or value in the file as written, so
 * `saegate policy check` can print them all and a bad hot reload can log exactly where it broke.
 *
 * Directory listing skips names starting with `.`: editors' swap files, and Kubernetes ConfigMap
 * volumes, whose real files live in `..data/` (a symlink swapped atomically on update) and
 * appear at the top level as symlinks `name → ..data/name`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { LineCounter, parseAllDocuments } from 'yaml';
import type { z } from 'zod';
import { formatPath, formatProblem, yamlLocator, type FileProblem } from '../common/yaml-locate.js';
import { policySchema, type Policy } from './schema.js';

/** One problem in a policy file. */
export type PolicyProblem = FileProblem;

export { formatPath, formatProblem };

/** A parsed policy and where it came from, able to point at any path inside it. */
export interface PolicySource {
  policy: Policy;
  file: string;
  /** Index of the document inside the file (0 for single-document files). */
  document: number;
  /** Line and column of the node at `path` (or of its nearest existing ancestor). */
  locate(path: readonly (string | number)[], atKey?: boolean): { line: number; column: number };
}

export interface PolicyFilesResult {
  sources: PolicySource[];
  problems: PolicyProblem[];
  /** Files read, in order. */
  files: string[];
}

const POLICY_EXTENSIONS = new Set(['.yaml', '.yml', '.json']);

/** Policy files of a directory (sorted by name) or the file itself. */
export function listPolicyFiles(target: string): string[] {
  const stat = fs.statSync(target);
  if (!stat.isDirectory()) return [target];
  return fs
    .readdirSync(target)
    .filter((name) => !name.startsWith('.') && POLICY_EXTENSIONS.has(path.extname(name).toLowerCase()))
    .sort()
    .map((name) => path.join(target, name))
    .filter((file) => fs.statSync(file).isFile());
}

type Segment = string | number;

function unionMessage(at: readonly Segment[]): string {
  const last = at[at.length - 1];
  if (typeof last === 'number' && at[at.length - 2] === 'actions') return 'an action is one of {monitor: …}, {steer: …}, {flag: …}, {abort: …}';
  if (last === 'when') return 'a condition is {feature: {sae, index, above, forTokens?}} or {projection: {vector, hook, above, forTokens?}}';
  if (last === 'positions') return "positions is 'prompt', 'generated', 'all' or {from, until?}";
  return 'does not match any of the accepted forms';
}

/**
 * Flattens one zod issue into problems. A union (an action, a condition, positions) reports one
 * issue with every branch's errors; the branch that got deepest into the value is the one the
 * author meant (`{steer: {scale: "x"}}` fails the steer branch at `steer.scale`, the others at the
 * top), so its issues are reported, at their own paths.
 */
function flattenIssue(issue: z.core.$ZodIssue, prefix: readonly Segment[]): { path: Segment[]; message: string; atKey: boolean }[] {
  const at: Segment[] = [...prefix, ...issue.path.filter((p): p is Segment => typeof p === 'string' || typeof p === 'number')];
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => ({ path: [...at, key], message: `unknown key '${key}'`, atKey: true }));
  }
  if (issue.code === 'invalid_union') {
    const branches = issue.errors.filter((branch) => branch.length > 0);
    if (branches.length > 0) {
      const depth = (branch: z.core.$ZodIssue[]) => Math.max(...branch.map((i) => i.path.length + (i.code === 'unrecognized_keys' ? -1 : 0)));
      const best = branches.reduce((a, b) => (depth(b) > depth(a) ? b : a));
      if (depth(best) > 0) return best.flatMap((inner) => flattenIssue(inner, at));
    }
    return [{ path: at, message: unionMessage(at), atKey: false }];
  }
  return [{ path: at, message: issue.message, atKey: false }];
}

/** Parses one file's text; `file` names it in problems. */
export function parsePolicyText(text: string, file: string): { sources: PolicySource[]; problems: PolicyProblem[] } {
  const lines = new LineCounter();
  const body = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  const docs = parseAllDocuments(body, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const sources: PolicySource[] = [];
  const problems: PolicyProblem[] = [];
  const list = Array.isArray(docs) ? docs : [];
  if (!Array.isArray(docs)) {
    problems.push({ file, line: 1, column: 1, path: '', message: 'empty YAML stream' });
    return { sources, problems };
  }
  list.forEach((doc, index) => {
    if (doc.errors.length > 0) {
      for (const error of doc.errors) {
        const { line, col } = lines.linePos(error.pos[0]);
        problems.push({ file, line, column: col, path: '', message: `YAML syntax error: ${error.message.split('\n')[0]}` });
      }
      return;
    }
    if (doc.contents === null) return; // an empty document (e.g. a trailing `---`)
    const locate = yamlLocator(doc, lines);
    const parsed = policySchema.safeParse(doc.toJS());
    if (!parsed.success) {
      for (const issue of parsed.error.issues) {
        for (const { path: at, message, atKey } of flattenIssue(issue, [])) problems.push({ file, ...locate(at, atKey), path: formatPath(at), message });
      }
      return;
    }
    sources.push({ policy: parsed.data, file, document: index, locate });
  });
  return { sources, problems };
}

/** Reads every policy file of `target` (a directory or a file). */
export function readPolicyFiles(target: string): PolicyFilesResult {
  let files: string[];
  try {
    files = listPolicyFiles(target);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return { sources: [], files: [], problems: [{ file: target, line: 0, column: 0, path: '', message: code === 'ENOENT' ? 'no such file or directory' : `cannot read (${code ?? String(error)})` }] };
  }
  const sources: PolicySource[] = [];
  const problems: PolicyProblem[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (error) {
      problems.push({ file, line: 0, column: 0, path: '', message: `cannot read (${(error as NodeJS.ErrnoException).code ?? String(error)})` });
      continue;
    }
    const result = parsePolicyText(text, file);
    sources.push(...result.sources);
    problems.push(...result.problems);
  }
  return { sources, problems, files };
}
