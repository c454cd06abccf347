import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { SaegateError, err, errorCodes } from '../../../src/common/errors.js';

describe('error codes', () => {
  it('documents every code in docs/errors.md with its HTTP status', () => {
    const doc = fs.readFileSync(new URL('../../../docs/errors.md', import.meta.url), 'utf8');
    for (const code of errorCodes) {
      const row = doc.split('\n').find((line) => line.startsWith(`| \`${code}\``));
      expect(row, `docs/errors.md lacks ${code}`).toBeDefined();
      expect(row).toContain(`| ${new SaegateError(code).status} |`);
    }
  });

  it('fills message templates in order and serialises OpenAI-shaped', () => {
    const e = err('SAEGATE_ERR_CONTEXT_LENGTH', 512, 600, 100, 500);
    expect(e.message).toBe("This model's maximum context length is 512 tokens, but the request asks for 600 tokens (100 in the prompt plus max_tokens 500).");
    expect(e.status).toBe(400);
    expect(JSON.parse(JSON.stringify(e))).toEqual({
      error: { message: e.message, type: 'invalid_request_error', param: null, code: 'SAEGATE_ERR_CONTEXT_LENGTH' },
    });
  });
});
