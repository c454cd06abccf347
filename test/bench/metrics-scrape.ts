/**
 * `/metrics` scrape cost with the drift monitor at its documented scale (issue 10): 3 SAEs of
 * d_sae 16384, 500 watched features spread over them (each with a firing-rate and a mean-activation
 * series per window), baselines loaded and windows assessed, so every drift score and threshold
 * series is present. Baseline in the same run: the same 3 SAEs with no watched features and no
 * baselines. A scrape is `registry.metrics()`, what the proxy's /metrics handler serves.
 *
 * Then the watched-feature series alone, two ways in the same run: `Gauge.set(labels, value)` per
 * series in `collect()` (what the monitor did before `FixedSeriesGauge`) and `FixedSeriesGauge`
 * (label objects built once, values written in place), same 2 × 500 × 3 series and values.
 *
 *   npx tsx test/bench/metrics-scrape.ts [--scrapes 200]
 */
import { performance } from 'node:perf_hooks';
import { Gauge, Registry } from 'prom-client';
import { FixedSeriesGauge } from '../../src/monitor/fixed-series-gauge.js';
import { SeededRandom } from '../../src/common/random.js';
import { BaselineRecorder } from '../../src/monitor/baseline-recorder.js';
import type { EncodedRows } from '../../src/monitor/rows.js';
import { MonitorService } from '../../src/monitor/service.js';

const scrapesArg = process.argv.indexOf('--scrapes');
const scrapes = scrapesArg > 0 ? Number(process.argv[scrapesArg + 1]) : 200;
const D_SAE = 16384;
const L0 = 32;
const SAES = 3;
const WATCHED = 500;

function batch(rows: number, random: SeededRandom, request: string): EncodedRows {
  const offsets = new Uint32Array(rows + 1);
  const indices = new Uint32Array(rows * L0);
  const values = new Float32Array(rows * L0);
  for (let r = 0; r < rows; r++) {
    const start = Math.floor(random.next() * D_SAE);
    for (let k = 0; k < L0; k++) {
      indices[r * L0 + k] = (start + k * 977) % D_SAE;
      values[r * L0 + k] = random.next() * 3;
    }
    offsets[r + 1] = (r + 1) * L0;
  }
  return { rows, offsets, indices, values, l0: new Uint32Array(rows).fill(L0), fvu: new Float32Array(rows).map(() => random.next() * 0.3), requestIndex: new Uint32Array(rows), requestIds: [request] };
}

/** `scrapes` timed scrapes of `registry` after one untimed one: p50 and p99 ms, the text's size and series count. */
async function timeScrapes(registry: Registry): Promise<{ p50: number; p99: number; bytes: number; series: number }> {
  const text = await registry.metrics();
  const times: number[] = [];
  for (let i = 0; i < scrapes; i++) {
    const t0 = performance.now();
    await registry.metrics();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  const series = text.split('\n').filter((line) => line.length > 0 && !line.startsWith('#')).length;
  return { p50: times[Math.floor(times.length * 0.5)], p99: times[Math.min(times.length - 1, Math.floor(times.length * 0.99))], bytes: Buffer.byteLength(text), series };
}

async function scenario(watchedTotal: number, withBaselines: boolean): Promise<{ p50: number; p99: number; bytes: number; series: number }> {
  const random = new SeededRandom(7);
  const registry = new Registry();
  const perSae = Math.ceil(watchedTotal / SAES);
  const saes = Array.from({ length: SAES }, (_, s) => ({
    model: 'bench-model',
    sae: `sae${s}`,
    hook: `blocks.${s}.hook_resid_post`,
    dSae: D_SAE,
    watched: Array.from({ length: Math.min(perSae, watchedTotal - s * perSae) }, (_, i) => ({ feature: i * 31, label: `feature ${i * 31} of sae${s}` })),
  }));
  const service = new MonitorService({ saes, registry, maxWatchedFeatures: Math.max(watchedTotal, 1) });
  for (const sae of saes) {
    for (let b = 0; b < 8; b++) service.offerRows(sae.hook, batch(256, random, `r${b}`));
    if (withBaselines) {
      const recorder = new BaselineRecorder({ dSae: D_SAE });
      for (let d = 0; d < 200; d++) recorder.addDocument(batch(64, random, `doc${d}`));
      service.replaceBaseline(sae.sae, { baseline: recorder.toBaseline({ model: 'bench-model', sae: { id: sae.sae, hash: 'h' }, hook: sae.hook, saegateVersion: 'bench' }) });
    }
  }
  await Promise.resolve(service.assess());
  const result = await timeScrapes(registry);
  await service.close();
  return result;
}

const WINDOWS = ['1m', '5m', '1h'];
const featureLabelNames = ['model', 'sae', 'hook', 'feature', 'label', 'window'] as const;

/** Scrape time of the watched-feature series alone: per-series `set` in collect() or `FixedSeriesGauge`. */
async function featureSeries(fixed: boolean): Promise<{ p50: number; p99: number; bytes: number; series: number }> {
  const registry = new Registry();
  const labelSets = Array.from({ length: SAES }, (_, s) =>
    WINDOWS.flatMap((window) => Array.from({ length: Math.ceil(WATCHED / SAES) }, (_, i) => ({ model: 'bench-model', sae: `sae${s}`, hook: `blocks.${s}.hook_resid_post`, feature: String(i * 31), label: `feature ${i * 31} of sae${s}`, window }))),
  ).flat();
  const value = (i: number, scrape: number): number => ((i * 7919 + scrape) % 1000) / 1000;
  let scrape = 0;
  for (const name of ['saegate_feature_firing_rate', 'saegate_feature_mean_activation']) {
    if (fixed) {
      new FixedSeriesGauge({ name, help: name, labelNames: featureLabelNames, registers: [registry] }, labelSets, (values, present) => {
        scrape++;
        for (let i = 0; i < labelSets.length; i++) {
          values[i] = value(i, scrape);
          present[i] = 1;
        }
      });
    } else {
      const ids = labelSets.map((l) => ({ sae: l.sae, hook: l.hook, feature: Number(l.feature), label: l.label, window: l.window }));
      new Gauge({
        name,
        help: name,
        labelNames: featureLabelNames,
        registers: [registry],
        collect() {
          scrape++;
          // As the monitor built them: a fresh label object per series per scrape.
          for (let i = 0; i < ids.length; i++) this.set({ model: 'bench-model', sae: ids[i].sae, hook: ids[i].hook, feature: String(ids[i].feature), label: ids[i].label, window: ids[i].window }, value(i, scrape));
        },
      });
    }
  }
  return timeScrapes(registry);
}

// Interleaved: baseline, full, baseline, full; the second pair is reported (warm).
await scenario(0, false);
await scenario(WATCHED, true);
const bare = await scenario(0, false);
const full = await scenario(WATCHED, true);
const line = (name: string, r: { p50: number; p99: number; bytes: number; series: number }): string =>
  `${name.padEnd(44)} scrape p50 ${r.p50.toFixed(2).padStart(6)} ms  p99 ${r.p99.toFixed(2).padStart(6)} ms  ${String(r.series).padStart(5)} series  ${(r.bytes / 1024).toFixed(0).padStart(4)} KiB\n`;
process.stdout.write(line(`${SAES} SAEs × d_sae ${D_SAE}, no watched, no baselines`, bare));
process.stdout.write(line(`${SAES} SAEs, ${WATCHED} watched, baselines, assessed`, full));
process.stdout.write(`ratio full / bare: p50 ×${(full.p50 / bare.p50).toFixed(2)}, p99 ×${(full.p99 / bare.p99).toFixed(2)}\n`);

// The watched-feature series alone, interleaved the same way (warm second pair).
await featureSeries(false);
await featureSeries(true);
const perSet = await featureSeries(false);
const fixedSeries = await featureSeries(true);
process.stdout.write(line(`${2 * WATCHED * WINDOWS.length} feature series, Gauge.set per series`, perSet));
process.stdout.write(line(`${2 * WATCHED * WINDOWS.length} feature series, FixedSeriesGauge`, fixedSeries));
process.stdout.write(`ratio FixedSeriesGauge / Gauge.set: p50 ×${(fixedSeries.p50 / perSet.p50).toFixed(2)}, p99 ×${(fixedSeries.p99 / perSet.p99).toFixed(2)}\n`);
