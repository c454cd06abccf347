import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { SaegateError, err, errorCodes, type SaegateErrorCode } from '../../../src/common/errors.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const doc = fs.readFileSync(path.join(root, 'docs/errors.md'), 'utf8');

/** `| \`CODE\` | status | type | kind | when |` rows of docs/errors.md. */
function documentedRows(): Map<string, string[]> {
  const rows = new Map<string, string[]>();
  for (const line of doc.split('\n')) {
    const match = /^\| `(SAEGATE_ERR_[A-Z0-9_]+)` \|(.*)$/.exec(line);
    if (match) rows.set(match[1], match[2].split('|').map((cell) => cell.trim()));
  }
  return rows;
}

/** Every .ts file under src/, except the code table itself. */
function sourceFiles(dir = path.join(root, 'src')): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(full);
    return entry.name.endsWith('.ts') && full !== path.join(root, 'src/common/errors.ts') ? [full] : [];
  });
}

describe('error codes', () => {
  it('documents every code in docs/errors.md with its HTTP status, type and kind', () => {
    const rows = documentedRows();
    for (const code of errorCodes) {
      const cells = rows.get(code);
      expect(cells, `docs/errors.md lacks ${code}`).toBeDefined();
      const error = new SaegateError(code);
      expect(cells?.slice(0, 3), code).toEqual([String(error.status), error.type, error.kind]);
    }
  });

  it('documents no code that the code table lacks', () => {
    const known = new Set<string>(errorCodes);
    const extra = [...documentedRows().keys()].filter((code) => !known.has(code));
    expect(extra).toEqual([]);
  });

  it('raises every code somewhere in src/ (a documented code nothing raises is a lie)', () => {
    const text = sourceFiles().map((file) => fs.readFileSync(file, 'utf8')).join('\n');
    const unraised = errorCodes.filter((code) => !text.includes(`'${code}'`));
    expect(unraised).toEqual([]);
  });

  it('gives programmer errors (kind bug) status 500, never a client status', () => {
    const bugs = errorCodes.filter((code) => new SaegateError(code).kind === 'bug');
    expect(bugs).toEqual(expect.arrayContaining<SaegateErrorCode>(['SAEGATE_ERR_ARGUMENT', 'SAEGATE_ERR_FEATURE_ARGUMENT', 'SAEGATE_ERR_TAP_ARGUMENT', 'SAEGATE_ERR_INTERNAL']));
    for (const code of bugs) expect(new SaegateError(code).status, code).toBe(500);
  });

  it('fills message templates in order and serialises OpenAI-shaped', () => {
    const e = err('SAEGATE_ERR_CONTEXT_LENGTH', 512, 600, 100, 500);
    expect(e.message).toBe("This model's maximum context length is 512 tokens, but the request asks for 600 tokens (100 in the prompt plus max_tokens 500).");
    expect(e.status).toBe(400);
    expect(e.kind).toBe('client');
    expect(JSON.parse(JSON.stringify(e))).toEqual({
      error: { message: e.message, type: 'invalid_request_error', param: null, code: 'SAEGATE_ERR_CONTEXT_LENGTH' },
    });
  });
});
