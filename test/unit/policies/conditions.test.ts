import { describe, expect, it } from 'vitest';
import type { CompiledPolicy } from '../../../src/policies/compile.js';
import { RequestConditions, type PositionValues } from '../../../src/policies/conditions.js';
import { makeSteeringVector } from '../../../src/steering/vector.js';

const vector = makeSteeringVector('<memory>', new Map([['blocks.2.hook_resid_post', Float32Array.of(1, 2, 3, 4)]]));

function policy(over: Partial<CompiledPolicy>): CompiledPolicy {
  return { name: 'p', qualifiedName: 'p@1', priority: 100, failClosed: false, match: {}, steers: [], watches: [], flags: [], aborts: [], file: 'p.yaml', ...over };
}

/** Feature 7 of SAE demo takes `series[position]`. */
function at(series: number[], position: number): PositionValues {
  return { feature: (sae, index) => (sae === 'demo' && index === 7 ? (series[position] ?? 0) : 0), projection: () => Number.NaN };
}

const when = (above: number, forTokens = 1) => ({ feature: { sae: 'demo', index: 7, above, forTokens } });

describe('conditional rules', () => {
  it('fires a steer at the first position past the threshold for n consecutive tokens, steering from the next position', () => {
    const series = [0, 3, 0, 3, 3, 3, 0];
    const c = new RequestConditions('r', [policy({ steers: [{ vector, hooks: ['blocks.2.hook_resid_post'], scale: -2, positions: 'all', when: when(2, 2), forTokens: 4 }] })], []);
    const events = series.flatMap((_, p) => c.observe(p, at(series, p)));
    expect(events.map((e) => [e.kind, e.triggerPosition])).toEqual([['steer', 4]]);
    expect(c.steering.map((t) => [t.hook, t.scale, t.fromPosition, t.untilPosition])).toEqual([['blocks.2.hook_resid_post', -2, 5, 9]]);
    expect(c.active).toBe(false);
  });

  it('evaluates positions in order even when rows arrive out of order, and fires once', () => {
    const series = [0, 0, 5, 5, 5];
    const c = new RequestConditions('r', [policy({ flags: [{ name: 'hot', when: when(1) }] })], []);
    expect(c.observe(2, at(series, 2))).toEqual([]);
    expect(c.observe(0, at(series, 0))).toEqual([]);
    const events = c.observe(1, at(series, 1));
    expect(events.map((e) => [e.kind, e.triggerPosition, e.detail])).toEqual([['flag', 2, 'hot']]);
    expect(c.observe(3, at(series, 3))).toEqual([]);
  });

  it('stays active until its last rule fires, then reads no more values', () => {
    const series = [0, 5, 0, 9, 9];
    const c = new RequestConditions('r', [policy({ flags: [{ name: 'low', when: when(1) }, { name: 'high', when: when(8) }] })], []);
    let reads = 0;
    const counted = (p: number): PositionValues => ({ feature: (sae, index) => (reads++, at(series, p).feature(sae, index)), projection: () => Number.NaN });
    const fired = series.slice(0, 3).flatMap((_, p) => c.observe(p, counted(p)));
    expect(fired.map((e) => [e.detail, e.triggerPosition])).toEqual([['low', 1]]);
    expect(c.active).toBe(true);
    expect(c.observe(3, counted(3)).map((e) => [e.detail, e.triggerPosition])).toEqual([['high', 3]]);
    expect(c.active).toBe(false);
    const before = reads;
    expect(c.observe(4, counted(4))).toEqual([]);
    expect(reads).toBe(before);
  });

  it('never fires for a request whose values stay under the threshold, and keeps the initial steering', () => {
    const initial = [{ hook: 'blocks.2.hook_resid_post', vector: vector.hooks.get('blocks.2.hook_resid_post')!, scale: 1, fromPosition: 0, untilPosition: null }];
    const c = new RequestConditions('r', [policy({ aborts: [{ when: when(10), reason: 'x' }] })], initial);
    for (let p = 0; p < 50; p++) expect(c.observe(p, at([], p))).toEqual([]);
    expect(c.steering).toEqual(initial);
    expect(c.active).toBe(true);
  });
});
