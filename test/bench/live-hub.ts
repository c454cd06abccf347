/**
 * Live view hub benchmark: the main-thread cost of `LiveHub.features` per SAE result row, the work
 * the live view adds to every result batch in `serve`. Run: `npx tsx test/bench/live-hub.ts`.
 *
 * Batches of 256 rows from 8 requests, `topK` feature slots per row (all filled), fed in order of
 * position as the engine does. Three variants, alternated A-B-C-C-B-A twice so the machine's load
 * falls on all alike, each segment at least `SEGMENT_MS`; the median segment's rows/s is reported:
 *
 * - **baseline**: the least any per-row consumer does: look up the row's request in a Map and read
 *   every feature slot (sum the values);
 * - **tracked**: `hub.features` with all 8 requests tracked (tokens and top-3 lists updated; the
 *   token cap is set above the positions fed, so no token is turned away);
 * - **untracked**: `hub.features` when no request is tracked (the cost for traffic older than the
 *   last 50 requests).
 *
 * Ratios are quoted against the baseline measured in the same run; no wall-clock threshold.
 */
import { performance } from 'node:perf_hooks';
import { LiveHub, type LiveFeatureBatch } from '../../src/proxy/live/hub.js';
import { median } from '../helpers/bench-stats.js';

const ROWS = 256;
const REQUESTS = 8;
const SEGMENT_MS = 300;

function makeBatch(topK: number, step: number): LiveFeatureBatch {
  const requestIds = Array.from({ length: REQUESTS }, (_, r) => `req-${r}`);
  const rowRequestIndexes = new Uint16Array(ROWS);
  const positions = new Int32Array(ROWS);
  const indices = new Int32Array(ROWS * topK);
  const values = new Float32Array(ROWS * topK);
  for (let row = 0; row < ROWS; row++) {
    rowRequestIndexes[row] = row % REQUESTS;
    positions[row] = step * (ROWS / REQUESTS) + Math.floor(row / REQUESTS);
    for (let k = 0; k < topK; k++) {
      indices[row * topK + k] = (row * 31 + k * 7) % 16384;
      values[row * topK + k] = ((row * 13 + k * 5) % 97) / 10;
    }
  }
  return { hook: 'blocks.2.hook_resid_post', rowCount: ROWS, topK, requestIds, rowRequestIndexes, positions, tokenTexts: Array.from({ length: ROWS }, () => ' tok'), indices, values };
}

type Variant = 'baseline' | 'tracked' | 'untracked';

function runSegment(variant: Variant, batches: LiveFeatureBatch[]): number {
  const known = new Map(batches[0].requestIds.map((id, i) => [id, i]));
  let sink = 0;
  let rows = 0;
  const start = performance.now();
  while (performance.now() - start < SEGMENT_MS) {
    // A fresh hub per pass over the batches, so positions are new and the token lists grow as in serve.
    const hub = new LiveHub({ maxTokens: batches.length * (ROWS / REQUESTS) + 1 });
    if (variant === 'tracked') for (const id of batches[0].requestIds) hub.started({ requestId: id, route: 'completions', model: null, policies: [], steeringTerms: 0 });
    for (const batch of batches) {
      if (variant === 'baseline') {
        for (let r = 0; r < batch.rowCount; r++) {
          sink += known.get(batch.requestIds[batch.rowRequestIndexes[r]]) ?? 0;
          for (let k = 0; k < batch.topK; k++) sink += batch.values[r * batch.topK + k];
        }
      } else {
        hub.features(batch);
      }
      rows += batch.rowCount;
    }
  }
  const seconds = (performance.now() - start) / 1000;
  if (sink === Number.NEGATIVE_INFINITY) console.log(sink);
  return rows / seconds;
}

console.log(`LiveHub.features: ${ROWS}-row batches from ${REQUESTS} requests; median of 4 segments of ${SEGMENT_MS} ms per variant`);
for (const topK of [8, 64, 256]) {
  const batches = Array.from({ length: 16 }, (_, step) => makeBatch(topK, step));
  const order: Variant[] = ['baseline', 'tracked', 'untracked', 'untracked', 'tracked', 'baseline'];
  const results: Record<Variant, number[]> = { baseline: [], tracked: [], untracked: [] };
  runSegment('tracked', batches); // warm-up
  for (let round = 0; round < 2; round++) for (const variant of order) results[variant].push(runSegment(variant, batches));
  const base = median(results.baseline);
  const tracked = median(results.tracked);
  const untracked = median(results.untracked);
  const fmt = (rowsPerSecond: number): string => `${(rowsPerSecond / 1e6).toFixed(2)} M rows/s (${(1e9 / rowsPerSecond).toFixed(0)} ns/row)`;
  console.log(
    `topK ${String(topK).padStart(3)}: baseline ${fmt(base)}; tracked ${fmt(tracked)}, ${(base / tracked).toFixed(2)}× the baseline's time; ` +
      `untracked ${fmt(untracked)}, ${(base / untracked).toFixed(2)}×`,
  );
}
