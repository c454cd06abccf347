/**
 * `serve --watch FILE`: labels default from the SAE's features.yaml labels, then `feature N`; every
 * problem is reported at its line and column; more features than the cap stop start-up.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { formatProblem } from '../../../src/common/yaml-locate.js';
import { parseWatchFile, readWatchFile } from '../../../src/monitor/watch-file.js';
import { expectSaegateError } from '../../helpers/errors.js';

const saes = new Map([
  ['res', { dSae: 100, labels: new Map([[7, 'from features.yaml']]) }],
  ['mlp', { dSae: 50 }],
]);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'saegate-watch-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('watched-features file', () => {
  it('takes labels from the file, then from features.yaml, then "feature N"', () => {
    const text = 'features:\n  - {sae: res, index: 7}\n  - {sae: res, index: 8, label: mine}\n  - {sae: mlp, index: 3}\n';
    const { watched, problems } = parseWatchFile(text, 'w.yaml', saes, 10);
    expect(problems).toEqual([]);
    expect(watched!.get('res')).toEqual([
      { feature: 7, label: 'from features.yaml' },
      { feature: 8, label: 'mine' },
    ]);
    expect(watched!.get('mlp')).toEqual([{ feature: 3, label: 'feature 3' }]);
  });

  it('reports every problem at its line and column', () => {
    const text = 'features:\n  - {sae: res, index: 100}\n  - {sae: nope, index: 1}\n  - {sae: mlp, index: 3}\n  - {sae: mlp, index: 3}\n  - {sae: mlp, indx: 4}\n';
    const { watched, problems } = parseWatchFile(text, 'w.yaml', saes, 10);
    expect(watched).toBeNull();
    expect(problems.map(formatProblem)).toEqual([
      'w.yaml:6:5: features[4].index: Invalid input: expected number, received undefined',
      "w.yaml:6:16: features[4].indx: unknown key 'indx'",
    ]);
    const second = parseWatchFile(text.replace('  - {sae: mlp, indx: 4}\n', ''), 'w.yaml', saes, 10).problems.map(formatProblem);
    expect(second).toEqual([
      'w.yaml:2:23: features[0].index: feature 100 is outside d_sae = 100 of SAE \'res\'',
      "w.yaml:3:11: features[1].sae: no SAE 'nope' is loaded (loaded: res, mlp)",
      "w.yaml:5:23: features[3].index: feature 3 of SAE 'mlp' is listed twice",
    ]);
  });

  it('refuses more watched features than the cap, naming the flag', () => {
    const file = path.join(dir, 'many.yaml');
    fs.writeFileSync(file, JSON.stringify({ features: Array.from({ length: 5 }, (_, i) => ({ sae: 'res', index: i })) }));
    expect(readWatchFile(file, saes, 5).get('res')).toHaveLength(5);
    expectSaegateError(() => readWatchFile(file, saes, 4), 'SAEGATE_ERR_WATCH_FILE', file, '5 watched features exceed --max-watched-features (4)');
    expectSaegateError(() => readWatchFile(path.join(dir, 'missing.yaml'), saes, 4), 'SAEGATE_ERR_WATCH_FILE', 'cannot read (ENOENT)');
  });
});
