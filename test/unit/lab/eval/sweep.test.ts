import { describe, expect, it } from 'vitest';
import { wilson } from '../../../../src/lab/eval/stats.js';
import { bestSetting, sweepSchema, sweepSettings, type SettingResult } from '../../../../src/lab/eval/sweep.js';

function result(hook: string, scale: number, afterHits: number, deltaCe: number, retainHeld: boolean | null = null): SettingResult {
  const before = wilson(30, 100);
  const after = wilson(afterHits, 100);
  return {
    hook,
    scale,
    target: { before, after, relativeReduction: (before.value - after.value) / before.value },
    retain: retainHeld === null ? null : { before, after: before, relativeReduction: 0, held: retainHeld },
    control: { ceBefore: 2, ceAfter: 2 + deltaCe, deltaCe: { value: deltaCe, low: deltaCe - 0.01, high: deltaCe + 0.01 }, agreement: wilson(10, 30) },
  };
}

describe('sweeps', () => {
  it('parses layers and scales in either order into a layer-major grid', () => {
    const spec = sweepSchema.parse('layers=2,3,scales=-0.5,1e0');
    expect(spec).toEqual({ layers: [2, 3], scales: [-0.5, 1] });
    expect(sweepSchema.parse('scales=2,layers=4')).toEqual({ layers: [4], scales: [2] });
    expect(sweepSettings(spec).map((s) => `${s.hook}@${s.scale}`)).toEqual([
      'blocks.2.hook_resid_post@-0.5',
      'blocks.2.hook_resid_post@1',
      'blocks.3.hook_resid_post@-0.5',
      'blocks.3.hook_resid_post@1',
    ]);
  });

  it('refuses a sweep without both keys or with a scale that is not a number', () => {
    expect(sweepSchema.safeParse('layers=1,2').success).toBe(false);
    expect(sweepSchema.safeParse('layers=1,scales=x').success).toBe(false);
    expect(sweepSchema.safeParse('layers=a,scales=1').success).toBe(false);
  });

  it('names the lowest target rate within the CE budget whose retain check held', () => {
    const results = [
      result('blocks.1.hook_resid_post', 1, 20, 0.02),
      result('blocks.2.hook_resid_post', 4, 2, 0.3), // best rate, over budget
      result('blocks.3.hook_resid_post', 2, 5, 0.05, false), // retain fell
      result('blocks.4.hook_resid_post', 2, 8, 0.09, true),
      result('blocks.4.hook_resid_post', 3, 8, 0.07, true), // same rate, smaller ΔCE
    ];
    expect(bestSetting(results, 0.1)).toMatchObject({ hook: 'blocks.4.hook_resid_post', scale: 3 });
    expect(bestSetting(results, 0.01)).toBeNull();
  });
});
