/**
 * SaeSink fed through its ActivationSink methods with messages decoded from real tap frames, over a
 * real SAE worker pool: tokens attached to result rows, their release after a request's end, the
 * drops reported back to the tap, and exact results (full active sets) for rows with L0 above 64.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { TapSource } from '../../../src/tap/sink.js';
import type { SaeResultBatch } from '../../../src/sae/batcher.js';
import { SaeSink, type SaeSinkOptions } from '../../../src/sae/sink.js';
import { encodeActivationFrame, encodeTokensFrame } from '../../../src/tap/builders.js';
import { decodeMessage } from '../../../src/tap/codec.js';
import type { ActivationsFrame } from '../../../src/tap/server.js';
import { encodedRowsFromResults } from '../../../src/monitor/adapter.js';
import { waitFor } from '../../helpers/wait.js';
import { D_IN, expectExactRows, LOUD, makeSmallSae, makeWideSae, QUIET, rng, uniform, WIDE_D_IN, WIDE_D_SAE, wideRows, type WideReferenceRow } from './sae-fixture.js';

const HOOK = makeSmallSae().config.hookName;
const SOURCE: TapSource = { sessionId: 'session-1', modelId: 'tiny', serverId: undefined };

/** An activations frame as the tap hands it to the sink: decoded from the wire, f16 rows. */
function frame(rows: [string, number][], dModel = D_IN): ActivationsFrame {
  const message = decodeMessage(
    encodeActivationFrame({ hookIndex: 0, dtype: 'f16', dModel, requestIds: rows.map(([id]) => id), positions: Int32Array.from(rows, ([, p]) => p), data: uniform(rng(rows.length), rows.length * dModel, -2, 2) }),
  );
  if (message.type !== 'activations') throw new Error(`decoded a ${message.type} message`);
  return { ...message, hook: HOOK, rowCount: rows.length };
}

/** Tokens of one request: id 100 + position, text `t<position>`. */
function tokensOf(requestId: string, positions: number[]) {
  const message = decodeMessage(encodeTokensFrame({ requestIds: positions.map(() => requestId), positions, tokenIds: positions.map((p) => 100 + p), texts: positions.map((p) => `t${p}`) }));
  if (message.type !== 'tokens') throw new Error(`decoded a ${message.type} message`);
  return message;
}

function end(requestId: string) {
  return { requestId, promptTokens: 1, completionTokens: 1, finishReason: 'stop' as const };
}

/** Result rows as `request@position → [tokenId, text]`, in delivery order. */
function tokenRows(batches: SaeResultBatch[]): string[] {
  return batches.flatMap((b) => Array.from(b.rowRequestIndexes, (k, r) => `${b.requestIds[k]}@${b.positions[r]} → ${b.tokenIds[r]} '${b.tokenTexts[r]}'`));
}

describe('SaeSink', () => {
  let sink: SaeSink | null = null;
  const results: SaeResultBatch[] = [];

  async function start(options: Omit<SaeSinkOptions, 'saes'>): Promise<SaeSink> {
    results.length = 0;
    sink = await SaeSink.create({ saes: [makeSmallSae()], topK: 4, ...options });
    sink.onResult((batch) => results.push(batch));
    return sink;
  }

  /** Resolves once `rows` result rows have been delivered in all. */
  async function delivered(rows: number): Promise<void> {
    while (results.reduce((n, b) => n + b.rowCount, 0) < rows) await new Promise((r) => setTimeout(r, 2));
  }

  afterEach(async () => {
    await sink?.close();
    sink = null;
  });

  it('attaches each row’s token id and text when its results are delivered, and −1 with empty text for positions that have none', async () => {
    const s = await start({ maxBatchRows: 4, maxDelayMs: 1 });
    s.tokens(tokensOf('req-1', [0, 1, 2, 3]), SOURCE);
    s.tokens(tokensOf('req-2', [0]), SOURCE);
    expect(
      s.write(
        frame([
          ['req-1', 0],
          ['req-2', 0],
          ['req-1', 1],
          ['req-2', 1],
          ['req-1', 2],
          ['req-1', 3],
          ['req-1', 4],
          ['req-3', 0],
        ]),
        SOURCE,
      ),
    ).toBe(0);
    await delivered(8);
    expect(tokenRows(results)).toEqual([
      "req-1@0 → 100 't0'",
      "req-2@0 → 100 't0'",
      "req-1@1 → 101 't1'",
      "req-2@1 → -1 ''",
      "req-1@2 → 102 't2'",
      "req-1@3 → 103 't3'",
      "req-1@4 → -1 ''",
      "req-3@0 → -1 ''",
    ]);
  });

  it('keeps an ended request’s tokens until the rows pushed before its end are delivered, then releases them', async () => {
    // A long deadline: rows stay in the open batch until it fills.
    const s = await start({ maxBatchRows: 4, maxDelayMs: 60_000 });
    s.tokens(tokensOf('done', [0, 1]), SOURCE);
    s.tokens(tokensOf('idle', [0]), SOURCE);
    // Nothing is queued yet: an end releases the request's tokens at once.
    s.end(end('idle'), SOURCE);
    expect(s.tokenRequests).toBe(1);
    s.write(
      frame([
        ['done', 0],
        ['done', 1],
      ]),
      SOURCE,
    );
    s.end(end('done'), SOURCE);
    // Its rows sit in the open batch: the tokens stay for them.
    expect(s.tokenRequests).toBe(1);
    s.write(
      frame([
        ['other', 0],
        ['other', 1],
      ]),
      SOURCE,
    );
    await delivered(4);
    expect(tokenRows(results)).toEqual(["done@0 → 100 't0'", "done@1 → 101 't1'", "other@0 → -1 ''", "other@1 → -1 ''"]);
    expect(s.tokenRequests).toBe(0);
  });

  it('forgets the tokens of the least recently touched request beyond maxTokenRequests', async () => {
    const s = await start({ maxBatchRows: 3, maxDelayMs: 1, maxTokenRequests: 2 });
    s.tokens(tokensOf('r1', [0]), SOURCE);
    s.tokens(tokensOf('r2', [0]), SOURCE);
    s.tokens(tokensOf('r3', [0]), SOURCE);
    expect(s.tokenRequests).toBe(2);
    s.write(
      frame([
        ['r1', 0],
        ['r2', 0],
        ['r3', 0],
      ]),
      SOURCE,
    );
    await delivered(3);
    expect(tokenRows(results)).toEqual(["r1@0 → -1 ''", "r2@0 → 100 't0'", "r3@0 → 100 't0'"]);
  });

  it('reports sampled and queue_full rows back to the tap as dropped, and rows of the wrong width as refused', async () => {
    const s = await start({ maxBatchRows: 64, maxDelayMs: 60_000, maxQueuedRows: 8, sampleAboveRows: 4 });
    const rows = Array.from({ length: 20 }, (_, p): [string, number] => ['r', p]);
    const dropped = s.write(frame(rows), SOURCE);
    const stats = s.stats()[HOOK];
    // Four rows below the mark, then sampling, then the hard limit.
    expect(stats.queuedRows).toBeGreaterThan(4);
    expect(stats.queuedRows).toBeLessThanOrEqual(8);
    expect(stats.batcher.rowsDropped.sampled).toBeGreaterThan(0);
    expect(dropped).toBe(20 - stats.queuedRows);
    expect(dropped).toBe(stats.batcher.rowsDropped.sampled + stats.batcher.rowsDropped.queue_full);
    expect(s.write(frame([['r', 0], ['r', 1], ['r', 2]], D_IN + 1), SOURCE)).toBe(3);
    expect(s.stats()[HOOK].rowsRejected).toBe(3);
    expect(s.rowsRejected).toBe(3);
  });
});

describe.each([
  { architecture: 'standard' as const, seed: 700 },
  { architecture: 'jumprelu' as const, seed: 800 },
])('SaeSink with a $architecture SAE whose L0 grows mid-stream past 64 (d_sae 512)', ({ architecture, seed }) => {
  let sink: SaeSink | null = null;
  afterEach(async () => {
    await sink?.close();
    sink = null;
  });

  it('delivers every active latent of every row, batch by batch, with exact L0, errors and firing counts, and the monitor sees them all', async () => {
    const sae = makeWideSae(architecture, seed);
    const BATCH = 8;
    // Quiet rows, then loud rows (three batches), then quiet rows again, each from its own request.
    const phases = [
      { requestId: 'quiet-1', ...wideRows(sae, BATCH, QUIET, seed + 1) },
      { requestId: 'loud', ...wideRows(sae, 3 * BATCH, LOUD, seed + 2) },
      { requestId: 'quiet-2', ...wideRows(sae, BATCH, QUIET, seed + 3) },
    ];
    const refOf = new Map<string, WideReferenceRow>();
    for (const phase of phases) phase.refs.forEach((ref, p) => refOf.set(`${phase.requestId}@${p}`, ref));
    sink = await SaeSink.create({ saes: [sae], maxBatchRows: BATCH, maxDelayMs: 60_000 });
    const batches: SaeResultBatch[] = [];
    sink.onResult((batch) => batches.push(batch));
    for (const phase of phases) {
      const count = phase.refs.length;
      const message = decodeMessage(
        encodeActivationFrame({ hookIndex: 0, dtype: 'f32', dModel: WIDE_D_IN, requestIds: Array<string>(count).fill(phase.requestId), positions: Int32Array.from({ length: count }, (_, p) => p), data: phase.rows }),
      );
      if (message.type !== 'activations') throw new Error(`decoded a ${message.type} message`);
      expect(sink.write({ ...message, hook: sae.config.hookName, rowCount: count }, SOURCE)).toBe(0);
    }
    await waitFor('5 result batches', () => batches.length === 5, { observed: () => batches.length });

    const firing = new Uint32Array(WIDE_D_SAE);
    const wanted = new Uint32Array(WIDE_D_SAE);
    for (const batch of batches) {
      const refs = Array.from(batch.positions, (position, r) => refOf.get(`${batch.requestIds[batch.rowRequestIndexes[r]]}@${position}`)!);
      expectExactRows(batch, refs, WIDE_D_SAE);
      // The monitor's view of the batch: CSR rows as long as L0, holding the reference's active sets.
      const encoded = encodedRowsFromResults(batch);
      refs.forEach((ref, r) => {
        const features = Array.from(encoded.indices.subarray(encoded.offsets[r], encoded.offsets[r + 1])).sort((a, b) => a - b);
        expect(features).toEqual(ref.active);
        expect(encoded.l0[r]).toBe(ref.active.length);
        for (const j of features) firing[j]++;
        for (const j of ref.active) wanted[j]++;
      });
    }
    expect(Array.from(firing)).toEqual(Array.from(wanted));
    // The list width follows each batch's largest L0: narrow, past 64 for the loud rows, narrow again.
    const widths = batches.map((b) => b.topK);
    expect(widths[0]).toBeLessThan(64);
    expect(Math.min(...widths.slice(1, 4))).toBeGreaterThan(100);
    expect(widths[4]).toBeLessThan(64);
  });
});
