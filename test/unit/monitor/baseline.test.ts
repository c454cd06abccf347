import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkCompatible, readBaseline, writeBaseline, type Baseline } from '../../../src/monitor/baseline.js';
import { BaselineRecorder } from '../../../src/monitor/baseline-recorder.js';
import { BaselineReference } from '../../../src/monitor/reference.js';
import { expectSaegateError } from '../../helpers/errors.js';
import { encodedRows } from '../../helpers/encoded-rows.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'saegate-baseline-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const identity = { model: 'tiny', sae: { id: 'sae-a', hash: 'sha256:aa' }, hook: 'blocks.1.hook_resid_post', saegateVersion: '0.1.0', createdAt: '2025-01-01T00:00:00.000Z' };

function recorded(): Baseline {
  const recorder = new BaselineRecorder({ dSae: 6, l0Edges: [1, 2], fvuEdges: [0.5], projectionEdges: [0] });
  recorder.addRows(encodedRows([{ features: [[4, 1], [1, 1]], fvu: 0.25, projection: -1 }]));
  recorder.addRows(encodedRows([{ features: [[4, 2]], fvu: 0.75, projection: 1 }]));
  expect(recorder.endDocument()).toBe(1);
  expect(recorder.endDocument()).toBe(1); // an empty document is not recorded
  recorder.addDocument(encodedRows([{ features: [], fvu: 0.5, projection: 2 }, { features: [[0, 1]], fvu: 0.1, projection: 3 }]));
  return recorder.toBaseline(identity);
}

function writeJson(name: string, value: unknown): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, JSON.stringify(value));
  return file;
}

describe('BaselineRecorder', () => {
  it('records each document’s sparse firing counts and histograms, and provenance totals', () => {
    const baseline = recorded();
    expect(baseline.provenance).toEqual({ ...identity, dSae: 6, tokens: 4, documents: 2 });
    expect(baseline.bins).toEqual({ l0: [1, 2], fvu: [0.5], projection: [0] });
    expect(baseline.documents[0]).toEqual({ tokens: 2, features: [1, 4], counts: [1, 2], l0: [0, 1, 1], fvu: [1, 1], fvuSum: 1, projection: [1, 1] });
    expect(baseline.documents[1]).toEqual({ tokens: 2, features: [0], counts: [1], l0: [1, 1, 0], fvu: [1, 1], fvuSum: expect.closeTo(0.6, 6), projection: [0, 2] });
  });

  it('round-trips through a file', () => {
    const file = path.join(dir, 'round.json');
    writeBaseline(file, recorded());
    expect(readBaseline(file)).toEqual(recorded());
  });
});

describe('readBaseline', () => {
  it.each([
    ['not JSON', (file: string) => fs.writeFileSync(file, '{'), 'not valid JSON'],
    ['another version', (file: string) => fs.writeFileSync(file, JSON.stringify({ ...recorded(), version: 2 })), 'version 2 is not supported'],
    ['a field of the wrong type', (file: string) => fs.writeFileSync(file, JSON.stringify({ ...recorded(), provenance: { ...recorded().provenance, dSae: 'six' } })), "field 'provenance.dSae'"],
  ])('refuses %s, naming the file', (_name, write, fragment) => {
    const file = path.join(dir, `bad-${_name.replace(/ /g, '-')}.json`);
    write(file);
    expectSaegateError(() => readBaseline(file), 'SAEGATE_ERR_BASELINE_FILE', file, fragment);
  });

  it('refuses a missing file', () => {
    expectSaegateError(() => readBaseline(path.join(dir, 'absent.json')), 'SAEGATE_ERR_BASELINE_FILE', 'absent.json', 'cannot read');
  });

  it.each([
    ['histogram not summing to tokens', (b: Baseline) => (b.documents[0].l0 = [0, 0, 1]), 'documents.0.l0 counts sum to 1, expected'],
    ['features not increasing', (b: Baseline) => (b.documents[0].features = [4, 1]), 'documents.0.features is not strictly increasing'],
    ['a feature outside d_sae', (b: Baseline) => (b.documents[1].features = [6]), 'feature 6 is outside d_sae = 6'],
    ['a count above the tokens', (b: Baseline) => (b.documents[0].counts = [1, 3]), 'documents.0.counts.1 is 3'],
    ['provenance tokens off', (b: Baseline) => (b.provenance.tokens = 5), 'provenance.tokens is 5 but the documents hold 4'],
    ['a projection histogram without bins', (b: Baseline) => delete b.bins.projection, 'documents.0.projection is present'],
  ])('refuses an inconsistent baseline: %s', (_name, spoil, fragment) => {
    const baseline = recorded();
    spoil(baseline);
    const file = writeJson('inconsistent.json', baseline);
    expectSaegateError(() => readBaseline(file), 'SAEGATE_ERR_BASELINE_FILE', file, fragment);
  });
});

describe('checkCompatible', () => {
  const expected = { model: 'tiny', saeId: 'sae-a', saeHash: 'sha256:aa', hook: 'blocks.1.hook_resid_post', dSae: 6, l0Edges: [1, 2], fvuEdges: [0.5] };

  it('accepts the SAE the baseline was recorded for', () => {
    expect(checkCompatible(recorded(), expected, 'b.json')).toBeUndefined();
  });

  it('names every differing field, expected vs recorded, and the file', () => {
    const e = expectSaegateError(
      () => checkCompatible(recorded(), { ...expected, model: 'big', hook: 'blocks.2.hook_resid_post', dSae: 8, saeHash: 'sha256:bb', fvuEdges: [0.4] }, 'b.json'),
      'SAEGATE_ERR_BASELINE_MISMATCH',
      "baseline 'b.json'",
      'model: expected "big", baseline has "tiny"',
      'hook: expected "blocks.2.hook_resid_post"',
      'dSae: expected 8, baseline has 6',
      'sae.hash: expected "sha256:bb"',
      'bins.fvu: expected [0.4], baseline has [0.5]',
    );
    expect(e.message).not.toContain('sae.id');
  });
});

describe('BaselineReference', () => {
  it('sums documents and computes each feature’s dispersion across documents', () => {
    const ref = new BaselineReference(recorded());
    expect(ref.totals.tokens).toBe(4);
    expect([...ref.totals.firingCounts]).toEqual([1, 1, 0, 0, 2, 0]);
    expect([...ref.totals.l0Histogram]).toEqual([1, 2, 1]);
    // Feature 4: counts (2, 0) in documents of 2 tokens; rate 0.5 → expected (1, 1); X² = 1 + 1 = 2, φ = 2/1.
    expect(ref.dispersion[4]).toBeCloseTo(2, 12);
    // Feature 1: counts (1, 0), rate 0.25 → expected (0.5, 0.5): X² = 0.5 + 0.5 = 1 → φ = 1.
    expect(ref.dispersion[1]).toBeCloseTo(1, 12);
    expect(ref.dispersion[2]).toBe(1);
    expect(ref.meanFvu).toBeCloseTo(1.6 / 4, 6);
  });
});
