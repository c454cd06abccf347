import { Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { SeededRandom } from '../../../src/common/random.js';
import { ArrayHistogram } from '../../../src/monitor/array-histogram.js';

const BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2];
const LABELS = ['model', 'sae', 'hook'] as const;

/** The same observations into a plain prom-client Histogram and into an ArrayHistogram, each on its own registry. */
function pair() {
  const plainRegistry = new Registry();
  const arrayRegistry = new Registry();
  const config = { name: 'h', help: 'a histogram', labelNames: [...LABELS], buckets: BUCKETS };
  const plain = new Histogram({ ...config, registers: [plainRegistry] });
  const array = new ArrayHistogram({ ...config, registers: [arrayRegistry] });
  return { plain, array, plainRegistry, arrayRegistry };
}

describe('ArrayHistogram', () => {
  it('exports exactly what a plain Histogram exports for the same observations, in text and JSON, per series', async () => {
    const { plain, array, plainRegistry, arrayRegistry } = pair();
    const random = new SeededRandom(3);
    const seriesLabels = [
      { model: 'm', sae: 'a', hook: 'blocks.1' },
      { model: 'm', sae: 'b', hook: 'blocks.2' },
    ];
    for (const labels of seriesLabels) {
      const recorder = array.recorder(labels);
      const child = plain.labels(labels);
      // Values on the bucket edges, between them, below the first and above the last.
      for (const v of [0, 0.01, 0.05, 0.1, 2, 3, -1]) {
        recorder.observe(v);
        child.observe(v);
      }
      for (let i = 0; i < 500; i++) {
        const v = random.next() * 2.5;
        recorder.observe(v);
        child.observe(v);
      }
    }
    expect(await arrayRegistry.metrics()).toBe(await plainRegistry.metrics());
    expect(await array.get()).toEqual(await plain.get());
  });

  it('lists a recorded series at zero before its first observation, and ignores non-finite values a plain Histogram would throw on', async () => {
    const { plain, array, plainRegistry, arrayRegistry } = pair();
    const labels = { model: 'm', sae: 'a', hook: 'h' };
    const recorder = array.recorder(labels);
    plain.zero(labels);
    expect(await arrayRegistry.metrics()).toBe(await plainRegistry.metrics());
    recorder.observe(Number.NaN);
    recorder.observe(Number.POSITIVE_INFINITY);
    expect(() => plain.labels(labels).observe(Number.NaN)).toThrow(TypeError);
    expect(await arrayRegistry.metrics()).toBe(await plainRegistry.metrics());
    recorder.observe(0.2);
    expect(await arrayRegistry.metrics()).toContain('h_bucket{le="0.25",model="m",sae="a",hook="h"} 1');
    expect(await arrayRegistry.metrics()).toContain('h_count{model="m",sae="a",hook="h"} 1');
  });

  it('refuses a label name it was not given, as a plain Histogram does', () => {
    const { array } = pair();
    expect(() => array.recorder({ model: 'm', sae: 'a', hook: 'h', other: 'x' } as never)).toThrow();
  });

  it('keeps recorders working after reset, from zero', async () => {
    const { array, arrayRegistry } = pair();
    const recorder = array.recorder({ model: 'm', sae: 'a', hook: 'h' });
    recorder.observe(0.2);
    array.reset();
    expect(await arrayRegistry.metrics()).toContain('h_count{model="m",sae="a",hook="h"} 0');
    recorder.observe(0.3);
    expect(await arrayRegistry.metrics()).toContain('h_count{model="m",sae="a",hook="h"} 1');
  });
});
