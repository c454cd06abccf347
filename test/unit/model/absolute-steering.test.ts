import { describe, expect, it } from 'vitest';
import { absoluteSteering, type PlanSteeringEntry } from '../../../src/model/runtime-protocol.js';

const vector = Float32Array.of(1, 2);
const entry = (over: Partial<PlanSteeringEntry>): PlanSteeringEntry => ({ hook: 'blocks.0.hook_resid_post', vector, scale: 1, fromPosition: 0, untilPosition: null, ...over });
const ranges = (entries: PlanSteeringEntry[], promptLength: number) => absoluteSteering(entries, promptLength).map((e) => [e.fromPosition, e.untilPosition, 'span' in e]);

describe('absoluteSteering', () => {
  it('keeps absolute entries as they are', () => {
    expect(ranges([entry({ fromPosition: 3, untilPosition: 9 })], 5)).toEqual([[3, 9, false]]);
  });

  it("counts 'prompt' from the first prompt token and stops at the prompt's end", () => {
    expect(ranges([entry({ span: 'prompt' })], 5)).toEqual([[0, 5, false]]);
    expect(ranges([entry({ span: 'prompt', fromPosition: 1, untilPosition: 3 })], 5)).toEqual([[1, 3, false]]);
    expect(ranges([entry({ span: 'prompt', fromPosition: 2, untilPosition: 50 })], 5)).toEqual([[2, 5, false]]);
    // A window past the prompt steers nothing.
    expect(ranges([entry({ span: 'prompt', fromPosition: 7 })], 5)).toEqual([]);
  });

  it("counts 'generated' from the prompt's length", () => {
    expect(ranges([entry({ span: 'generated' })], 5)).toEqual([[5, null, false]]);
    expect(ranges([entry({ span: 'generated', fromPosition: 2, untilPosition: 4 })], 5)).toEqual([[7, 9, false]]);
  });
});
