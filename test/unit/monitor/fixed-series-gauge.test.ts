import { Gauge, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { FixedSeriesGauge } from '../../../src/monitor/fixed-series-gauge.js';

const labelSets = [
  { feature: '1', label: 'a "quoted" one', window: '1m' },
  { feature: '2', label: 'b\\c', window: '1m' },
  { feature: '1', label: 'a "quoted" one', window: '5m' },
];

describe('FixedSeriesGauge', () => {
  it('writes the same exposition text as Gauge.set for the series present, refreshed at every scrape', async () => {
    let scrape = 0;
    const fixed = new Registry();
    new FixedSeriesGauge({ name: 'g', help: 'h', labelNames: ['feature', 'label', 'window'], registers: [fixed] }, labelSets, (values, present) => {
      scrape++;
      // Series 2 appears from the second scrape on; series 0 and 1 change every scrape.
      values[0] = scrape;
      values[1] = scrape / 4;
      present[0] = present[1] = 1;
      if (scrape >= 2) {
        values[2] = 7;
        present[2] = 1;
      }
    });
    const reference = (n: number): Promise<string> => {
      const registry = new Registry();
      const gauge = new Gauge({ name: 'g', help: 'h', labelNames: ['feature', 'label', 'window'], registers: [registry] });
      gauge.set(labelSets[0], n);
      gauge.set(labelSets[1], n / 4);
      if (n >= 2) gauge.set(labelSets[2], 7);
      return registry.metrics();
    };
    expect(await fixed.metrics()).toBe(await reference(1));
    expect(await fixed.metrics()).toBe(await reference(2));
    expect(await fixed.metrics()).toBe(await reference(3));
    expect((await fixed.getMetricsAsJSON())[0].values).toHaveLength(3);
  });

  it('refuses a label set with a name it does not declare', () => {
    expect(() => new FixedSeriesGauge({ name: 'g', help: 'h', labelNames: ['feature'], registers: [] }, [{ feature: '1', window: '1m' } as { feature: string }], () => {})).toThrow(/window/);
  });
});
