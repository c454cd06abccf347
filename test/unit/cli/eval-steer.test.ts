/** `saegate eval steer`'s flags in-process: the combinations it refuses, naming the flag. */
import { describe, expect, it } from 'vitest';
import { evalSteerCommand } from '../../../src/cli/eval-steer.js';
import { parseCommand } from '../../../src/common/options.js';
import { expectSaegateError } from '../../helpers/errors.js';

const base = ['--prompts', 'p.txt', '--vector', 'v.safetensors', '--out', 'out'];

describe('saegate eval steer flags', () => {
  it('takes one setting (--scale, optional --hook) or a sweep', () => {
    expect(parseCommand(evalSteerCommand, [...base, '--scale=-0.5'])).toMatchObject({ scale: -0.5, hook: undefined, samples: 4, seed: 0, positions: 'all', ceBudget: 0.1 });
    expect(parseCommand(evalSteerCommand, [...base, '--sweep', 'layers=2,3,scales=-0.5,1']).sweep).toEqual({ layers: [2, 3], scales: [-0.5, 1] });
  });

  it('refuses a sweep with --hook or --scale, no setting at all, and --model with --upstream', () => {
    expectSaegateError(() => parseCommand(evalSteerCommand, [...base, '--sweep', 'layers=2,scales=1', '--scale', '1']), 'SAEGATE_ERR_CLI_USAGE', '--sweep', 'not both');
    expectSaegateError(() => parseCommand(evalSteerCommand, base), 'SAEGATE_ERR_CLI_USAGE', '--scale');
    expectSaegateError(() => parseCommand(evalSteerCommand, [...base, '--scale', '1', '--model', 'm.bin', '--upstream', 'http://127.0.0.1:1']), 'SAEGATE_ERR_CLI_USAGE', '--upstream');
  });

  it('takes a projection condition, and refuses it with --upstream or --positions, and --for-tokens alone', () => {
    expect(parseCommand(evalSteerCommand, [...base, '--scale=-3', '--when-projection-above', '0.9', '--for-tokens', '2'])).toMatchObject({ whenProjectionAbove: 0.9, forTokens: 2 });
    expect(parseCommand(evalSteerCommand, [...base, '--scale=-3']).forTokens).toBe(1);
    expectSaegateError(() => parseCommand(evalSteerCommand, [...base, '--scale=-3', '--when-projection-above', '0.9', '--upstream', 'http://127.0.0.1:1']), 'SAEGATE_ERR_CLI_USAGE', '--when-projection-above', '--upstream');
    expectSaegateError(() => parseCommand(evalSteerCommand, [...base, '--scale=-3', '--when-projection-above', '0.9', '--positions', 'generated']), 'SAEGATE_ERR_CLI_USAGE', '--when-projection-above', '--positions');
    expectSaegateError(() => parseCommand(evalSteerCommand, [...base, '--scale=-3', '--for-tokens', '2']), 'SAEGATE_ERR_CLI_USAGE', '--for-tokens', '--when-projection-above');
  });

  it('takes --policies instead of --vector and the setting flags, and refuses mixing them', () => {
    const noVector = ['--prompts', 'p.txt', '--out', 'out'];
    expect(parseCommand(evalSteerCommand, [...noVector, '--policies', 'policies/']).policies).toBe('policies/');
    expectSaegateError(() => parseCommand(evalSteerCommand, [...noVector, '--scale=-3']), 'SAEGATE_ERR_CLI_USAGE', '--vector', '--policies');
    expectSaegateError(() => parseCommand(evalSteerCommand, [...base, '--policies', 'policies/']), 'SAEGATE_ERR_CLI_USAGE', '--vector', '--policies');
    expectSaegateError(() => parseCommand(evalSteerCommand, [...noVector, '--policies', 'policies/', '--scale=-3']), 'SAEGATE_ERR_CLI_USAGE', '--policies', '--scale');
    expectSaegateError(() => parseCommand(evalSteerCommand, [...noVector, '--policies', 'policies/', '--when-projection-above', '1']), 'SAEGATE_ERR_CLI_USAGE', '--policies', '--when-projection-above');
  });

  it('refuses a malformed sweep naming the flag and the expected form', () => {
    expectSaegateError(() => parseCommand(evalSteerCommand, [...base, '--sweep', 'layers=2']), 'SAEGATE_ERR_CLI_USAGE', '--sweep', 'layers=L[,L…],scales=X[,X…]');
  });
});
