import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FeatureAccumulator } from '../../../../src/lab/features/accumulator.js';
import { applyLabels, parseFeatureLabels, readFeatureLabels } from '../../../../src/lab/features/labels.js';
import { expectSaegateError } from '../../../helpers/errors.js';
import { makeTempDir, removeTempDir } from '../../../helpers/fixtures.js';
import { reportMeta, sparseDocument } from './fixtures.js';

const goodFile = `# Labels for blocks.1.hook_resid_post
0: dense bias direction
12:
  label: "the word 'time'"
  notes: |
    Fires on "time" in "once upon a time",
    less on other nouns.
  tags: [lexical, stories]
"7": quoted key
1023: {label: last feature}
`;

describe('readFeatureLabels', () => {
  const dir = makeTempDir('saegate-labels-');
  afterAll(() => removeTempDir(dir));

  function writeLabels(name: string, text: string): string {
    const file = path.join(dir, name);
    fs.writeFileSync(file, text);
    return file;
  }

  it('reads string labels, label mappings with notes and tags, and quoted keys', () => {
    const labels = readFeatureLabels(writeLabels('features.yaml', goodFile), { dSae: 1024 });
    expect([...labels.keys()]).toEqual([0, 12, 7, 1023]);
    expect(labels.get(0)).toEqual({ label: 'dense bias direction' });
    expect(labels.get(12)).toEqual({ label: "the word 'time'", notes: 'Fires on "time" in "once upon a time",\nless on other nouns.\n', tags: ['lexical', 'stories'] });
    expect(labels.get(7)).toEqual({ label: 'quoted key' });
    expect(labels.get(1023)).toEqual({ label: 'last feature' });
  });

  it('reads an empty file or one with only comments as no labels', () => {
    expect(readFeatureLabels(writeLabels('empty.yaml', ''), { dSae: 4 }).size).toBe(0);
    expect(readFeatureLabels(writeLabels('comments.yaml', '# nothing yet\n'), { dSae: 4 }).size).toBe(0);
  });

  it('names the file when it cannot be read', () => {
    const missing = path.join(dir, 'missing.yaml');
    expectSaegateError(() => readFeatureLabels(missing, { dSae: 4 }), 'SAEGATE_ERR_FEATURE_LABELS', `feature labels '${missing}'`, 'cannot read');
  });

  const bad: [string, string, string[]][] = [
    ['a YAML syntax error', '1: fine\n2: [unclosed\n3: x\n', ['YAML syntax error at line 3', 'Flow sequence']],
    ['a bad indent', '1: fine\n  2: nested\n', ['YAML syntax error at line 1']],
    ['a list at the top level', '- a\n- b\n', ['expected a mapping of feature index to label at the top level, got a list']],
    ['a key that is not an integer', '1: a\n1.5: b\n', ["key '1.5' (line 2)", 'expected a feature index (an integer from 0 to 1023)']],
    ['a key that is a word', 'abc: x\n', ["key 'abc' (line 1)", 'expected a feature index']],
    ['a negative key', '-1: x\n', ["key '-1' (line 1)", 'expected a feature index']],
    ['a key out of range for d_sae', '0: a\n1024: b\n', ["key '1024' (line 2)", 'feature 1024 is out of range for d_sae = 1024']],
    ['a duplicate key', '5: a\n6: b\n5: c\n', ["key '5' (line 3)", 'feature 5 is already labelled at line 1']],
    ['a duplicate spelled differently', '7: a\n"07": b\n', [`key '"07"' (line 2)`, 'feature 7 is already labelled at line 1']],
    ['an empty label', '3: ""\n', ["key '3' (line 1)", 'the label is empty']],
    ['a blank label in a mapping', '3: {label: "   "}\n', ["key '3' (line 1)", 'the label is empty']],
    ['a null value', '3:\n', ["key '3' (line 1)", 'expected a label string or a mapping {label, notes?, tags?}, got null']],
    ['a number value', '3: 42\n', ['got number 42']],
    ['a list value', '3: [a, b]\n', ['got a list']],
    ['a mapping without a label', '3: {notes: x}\n', ["key '3' (line 1)", "field 'label' is missing"]],
    ['an unknown field', '3: {label: x, colour: red}\n', ["unknown field 'colour'"]],
    ['tags that are not strings', '3: {label: x, tags: [1]}\n', ["field 'tags.0'"]],
  ];

  it.each(bad)('refuses %s, naming the file, key and line', (name, text, fragments) => {
    const file = writeLabels(`${name.replace(/\W+/g, '-')}.yaml`, text);
    expectSaegateError(() => readFeatureLabels(file, { dSae: 1024 }), 'SAEGATE_ERR_FEATURE_LABELS', `feature labels '${file}'`, ...fragments);
  });
});

describe('applyLabels', () => {
  const acc = new FeatureAccumulator({ dSae: 3 });
  acc.addDocument(sparseDocument('d', [{ 0: 1, 2: 1 }]));
  const report = acc.finish(reportMeta(3));
  report.features[2] = { ...report.features[2], label: 'old', notes: 'old notes', tags: ['old'] };

  it('sets label, notes and tags of labelled features and leaves the others alone', () => {
    const labels = parseFeatureLabels('0: {label: zero, notes: n, tags: [t]}\n2: two\n', 'features.yaml', { dSae: 3 });
    const labelled = applyLabels(report, labels);
    expect(labelled.features[0]).toMatchObject({ index: 0, label: 'zero', notes: 'n', tags: ['t'], firing: 1 });
    expect(labelled.features[1]).toEqual(report.features[1]);
    // The file's entry replaces the old one whole: no stale notes or tags.
    expect(labelled.features[2]).toEqual({ ...report.features[2], label: 'two', notes: undefined, tags: undefined });
    expect('notes' in labelled.features[2]).toBe(false);
    // The input report is not changed.
    expect(report.features[0].label).toBeUndefined();
    expect(report.features[2].label).toBe('old');
  });

  it('refuses labels for features the report does not have', () => {
    expectSaegateError(() => applyLabels(report, new Map([[3, { label: 'x' }]])), 'SAEGATE_ERR_FEATURE_ARGUMENT', 'feature 3', '3 features');
  });
});
