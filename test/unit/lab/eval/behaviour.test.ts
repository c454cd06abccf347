import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { compileBehaviour, loadBehaviour } from '../../../../src/lab/eval/behaviour.js';
import { expectSaegateError } from '../../../helpers/errors.js';

describe('behaviours', () => {
  it('matches the default refusal phrases case-insensitively, curly apostrophes included', () => {
    const refusal = loadBehaviour(undefined);
    expect(refusal.matches('I\u2019m sorry, but I cannot help with that.')).toBe(true);
    expect(refusal.matches('as an ai model')).toBe(true);
    expect(refusal.matches('Sure! Here is a story about a cat.')).toBe(false);
  });

  it('reads /regular expressions/ with flags, phrases and comments, one per line', () => {
    const b = compileBehaviour('words.txt', ['# negative words', '/\\b(sad|cried)\\b/i', 'scared', '']);
    expect(b.patterns).toEqual(['/\\b(sad|cried)\\b/i', 'scared']);
    expect(b.matches('She was SAD.')).toBe(true);
    expect(b.matches('The saddle was red.')).toBe(false);
    expect(b.matches('He got Scared')).toBe(true);
  });

  it('refuses a bad regular expression naming the file and line, and a file with no patterns', () => {
    expectSaegateError(() => compileBehaviour('words.txt', ['sad', '/(unclosed/']), 'SAEGATE_ERR_CONFIG', 'words.txt:2', '/(unclosed/');
    expectSaegateError(() => compileBehaviour('empty.txt', ['# only a comment']), 'SAEGATE_ERR_CONFIG', 'empty.txt', 'at least one phrase');
  });

  it("loads the study's negative-emotion file from examples/", () => {
    const file = path.resolve(import.meta.dirname, '../../../../examples/behaviours/negative-emotion.txt');
    expect(fs.existsSync(file)).toBe(true);
    const b = loadBehaviour(file);
    expect(b.matches('Tom cried and cried.')).toBe(true);
    expect(b.matches('Tom smiled.')).toBe(false);
  });
});
