import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FeatureAccumulator } from '../../../../src/lab/features/accumulator.js';
import { readFeatureReport, writeFeatureReport, type FeatureReport } from '../../../../src/lab/features/report.js';
import { expectSaegateError } from '../../../helpers/errors.js';
import { makeTempDir, removeTempDir } from '../../../helpers/fixtures.js';
import { reportMeta, sparseDocument } from './fixtures.js';

function sampleReport(): FeatureReport {
  const acc = new FeatureAccumulator({ dSae: 3, windowBefore: 1, windowAfter: 1 });
  acc.addDocument(sparseDocument('doc "1"', [{ 0: 1.5 }, { 0: 2, 1: 0.25 }, {}], { texts: ['Hello', ' </script>', '\n'] }));
  acc.addDocument(sparseDocument('doc2', [{ 1: 3 }]));
  const report = acc.finish(reportMeta(3));
  report.features[1] = { ...report.features[1], label: 'a label', notes: 'notes', tags: ['x'] };
  return report;
}

describe('feature report files', () => {
  const dir = makeTempDir('saegate-report-');
  afterAll(() => removeTempDir(dir));

  it('reads back exactly what it wrote', () => {
    const report = sampleReport();
    const file = path.join(dir, 'features.json');
    writeFeatureReport(file, report);
    expect(readFeatureReport(file)).toEqual(report);
  });

  it('writes the header on the first line and one feature per line', () => {
    const file = path.join(dir, 'lines.json');
    writeFeatureReport(file, sampleReport());
    const lines = fs.readFileSync(file, 'utf8').split('\n');
    expect(lines[0]).toMatch(/^\{"version":1,"sae":.*"features":\[$/);
    expect(lines.slice(1, 4).map((line) => (JSON.parse(line.replace(/,$/, '')) as { index: number }).index)).toEqual([0, 1, 2]);
    expect(lines.slice(4)).toEqual([']}', '']);
    // No temporary file is left beside it.
    expect(fs.readdirSync(dir).filter((name) => name.endsWith('.tmp'))).toEqual([]);
  });

  it('names the file when it cannot be written', () => {
    const file = path.join(dir, 'missing-dir', 'features.json');
    expectSaegateError(() => writeFeatureReport(file, sampleReport()), 'SAEGATE_ERR_FEATURE_REPORT', file, 'cannot write');
  });

  /** Writes `report` after `mutate`, as JSON, and returns the file. */
  function writeMutated(name: string, mutate: (report: Record<string, unknown> & FeatureReport) => void): string {
    const report = structuredClone(sampleReport()) as Record<string, unknown> & FeatureReport;
    mutate(report);
    const file = path.join(dir, name);
    fs.writeFileSync(file, JSON.stringify(report));
    return file;
  }

  const bad: [string, (report: Record<string, unknown> & FeatureReport) => void, string][] = [
    ['another version', (r) => Object.assign(r, { version: 2 }), 'version 2 is not supported'],
    ['a field of the wrong type', (r) => Object.assign(r.features[1], { firing: 'two' }), "field 'features.1.firing'"],
    ['a missing field', (r) => delete (r as Partial<FeatureReport>).summary, "field 'summary'"],
    ['a frequency above 1', (r) => Object.assign(r.features[0], { frequency: 1.5 }), "field 'features.0.frequency'"],
    ['too few features', (r) => r.features.pop(), "'features' has 2 entries, expected one per latent (d_sae = 3)"],
    ['features out of order', (r) => r.features.reverse(), 'features.0.index is 2, expected 0'],
    ['a marked token outside the window', (r) => Object.assign(r.features[0].examples[0], { marked: 7 }), 'features.0.examples.0.marked is 7'],
    ['activations not matching tokens', (r) => r.features[0].examples[0].activations.push(1), 'features.0.examples.0: 4 activations for 3 tokens'],
    ['histogram counts not summing to firing', (r) => (r.features[0].histogram.counts[0] += 1), 'histogram counts sum to 3, expected firing = 2'],
    ['a dead flag contradicting firing', (r) => Object.assign(r.features[2], { dead: false }), 'features.2.dead is false but firing is 0'],
  ];

  it.each(bad)('refuses a report with %s, naming the file', (name, mutate, message) => {
    const file = writeMutated(`${name.replace(/\W+/g, '-')}.json`, mutate);
    expectSaegateError(() => readFeatureReport(file), 'SAEGATE_ERR_FEATURE_REPORT', `feature report '${file}'`, message);
  });

  it('refuses a missing file and a file that is not JSON', () => {
    const missing = path.join(dir, 'nope.json');
    expectSaegateError(() => readFeatureReport(missing), 'SAEGATE_ERR_FEATURE_REPORT', missing, 'cannot read');
    const broken = path.join(dir, 'broken.json');
    fs.writeFileSync(broken, '{"version": 1, ');
    expectSaegateError(() => readFeatureReport(broken), 'SAEGATE_ERR_FEATURE_REPORT', broken, 'not valid JSON');
  });
});
