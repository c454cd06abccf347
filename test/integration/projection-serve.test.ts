/**
 * Projection monitors end to end on stories260K, no SAE: a projection baseline recorded in the test
 * with `saegate baseline record --projection` (in-process), then `serve --projection` with that
 * baseline in front of the reference model server, driven by the real `openai` client. Traffic
 * steered (the reference server's body `steering` field) along the same direction one layer before
 * the hook shifts the projection: `saegate_drift_score{statistic="projection_psi"}` exceeds
 * `saegate_drift_threshold` in /metrics; unsteered traffic from the corpus' distribution does not.
 */
import fs from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { baselineRecord } from '../../src/cli/baseline-record.js';
import { startProxyWithSaes } from '../../src/cli/serve.js';
import { SeededRandom } from '../../src/common/random.js';
import { readBaseline } from '../../src/monitor/baseline.js';
import { monitorKey } from '../../src/monitor/metrics.js';
import type { MonitorService } from '../../src/monitor/service.js';
import { startModelServer, type ModelServer } from '../../src/model/server.js';
import type { ProxyServer } from '../../src/proxy/server.js';
import { writeVectorFile } from '../../src/steering/formats.js';
import { makeSteeringVector } from '../../src/steering/vector.js';
import { hasSharedModels, makeTempDir, needsSharedModels, stories260K } from '../helpers/fixtures.js';
import { freePort } from '../helpers/ports.js';
import { waitFor } from '../helpers/wait.js';

const HOOK = 'blocks.3.hook_resid_post';
const STEER_HOOK = 'blocks.2.hook_resid_post';
const D_MODEL = 64;
const STEER_SCALE = 1;

const subjects = ['Lily', 'Tom', 'a little cat', 'the big dog', 'Grandpa', 'Sue and her mom', 'a small bird', 'Ben'];
const actions = ['went to the park', 'found a shiny stone', 'wanted to play', 'saw a red ball', 'ate an apple', 'built a tower'];
const endings = ['and was happy.', 'and smiled.', 'but it was too hot.', 'with a friend.', 'in the garden.'];
/** Short stories, the i-th from a fixed mix of parts (the corpus and the live traffic share the mix). */
function story(i: number): string {
  return `Once upon a time, ${subjects[i % subjects.length]} ${actions[(i * 5 + 1) % actions.length]} ${endings[(i * 3 + 2) % endings.length]}`;
}

/** A seeded unit direction of stories260K's width. */
function direction(): Float32Array {
  const random = new SeededRandom(17);
  const v = Float32Array.from({ length: D_MODEL }, () => random.next() - 0.5);
  const norm = Math.hypot(...v);
  return v.map((x) => x / norm);
}

interface Stack {
  model: ModelServer;
  proxy: ProxyServer;
  monitor: MonitorService;
  client: OpenAI;
  close(): Promise<void>;
}

describe.skipIf(!hasSharedModels)(needsSharedModels('serve --projection on stories260K'), () => {
  let dir: string;
  let vectorFile: string;
  let baselineFile: string;
  const v = direction();

  beforeAll(async () => {
    dir = makeTempDir('projection-serve-');
    vectorFile = path.join(dir, 'persona.safetensors');
    writeVectorFile(vectorFile, makeSteeringVector(vectorFile, { [HOOK]: v }, { method: 'manual' }));
    const corpus = path.join(dir, 'stories.jsonl');
    fs.writeFileSync(corpus, Array.from({ length: 48 }, (_, i) => `${JSON.stringify({ id: i, text: story(i) })}\n`).join(''));
    baselineFile = path.join(dir, 'persona-baseline.json');
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      await baselineRecord(['--projection', `persona=${vectorFile}`, '--corpus', corpus, '--out', baselineFile, '--model', stories260K.model, '--tokenizer', stories260K.tokenizer]);
    } finally {
      stderr.mockRestore();
    }
  }, 120_000);

  afterAll(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  async function startStack(): Promise<Stack> {
    const port = await freePort();
    const model = await startModelServer({ model: stories260K.model, tokenizer: stories260K.tokenizer, port: 0, tapUrl: `ws://127.0.0.1:${port}/v1/tap` });
    const { server: proxy, monitor } = await startProxyWithSaes({ upstream: model.url, port }, [], undefined, { projection: [`persona=${vectorFile}`], baseline: [baselineFile], assessIntervalMs: 600_000 });
    await waitFor('the model server subscribed to the projection hook', () => proxy.tap.server.connections.length > 0 && model.tap!.client.subscription !== null);
    const client = new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    return {
      model,
      proxy,
      monitor: monitor!,
      client,
      close: async () => {
        await proxy.close({ timeoutMs: 500 });
        await model.close();
      },
    };
  }

  /** Sends `count` completions (steered when `scale` is given); waits until the monitor has every tapped row. */
  async function traffic(stack: Stack, count: number, scale?: number): Promise<void> {
    const rows = (): number => stack.monitor.readings().get(monitorKey('persona', HOOK))!.rows;
    let expected = 0;
    for (let i = 0; i < count; i += 4) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(4, count - i) }, (_, k) => {
          const body = {
            model: 'stories260K',
            prompt: story(100 + i + k),
            // One token: the rows are the prompt's, as in the recorded baseline (the collector records prompts).
            max_tokens: 1,
            temperature: 0,
            ...(scale !== undefined && { steering: [{ hook: STEER_HOOK, vector: Array.from(v), scale, positions: 'all' }] }),
          };
          return stack.client.completions.create(body as unknown as OpenAI.CompletionCreateParamsNonStreaming);
        }),
      );
      for (const c of batch) expected += c.usage!.prompt_tokens + c.usage!.completion_tokens - 1;
    }
    await waitFor('the monitor received every tapped row', () => rows() >= expected, { observed: () => ({ rows: rows(), expected }) });
  }

  /** `saegate_drift_score` and `saegate_drift_threshold` of projection_psi in window 1m, from /metrics. */
  async function scrape(stack: Stack): Promise<{ score: number; threshold: number; text: string }> {
    await stack.monitor.assess();
    const text = await (await fetch(`${stack.proxy.url}/metrics`)).text();
    const read = (metric: string): number => {
      const line = text.split('\n').find((l) => l.startsWith(`${metric}{`) && l.includes('sae="persona"') && l.includes('statistic="projection_psi"') && l.includes('window="1m"'));
      expect(line, `${metric} for persona in /metrics`).toBeDefined();
      return Number(line!.split(' ').pop());
    };
    return { score: read('saegate_drift_score'), threshold: read('saegate_drift_threshold'), text };
  }

  it('records a projection baseline: no features, quantile edges, the vector named in its provenance', () => {
    const baseline = readBaseline(baselineFile);
    expect(baseline.provenance).toMatchObject({ model: 'stories260K', sae: { id: 'persona' }, hook: HOOK, dSae: 1, documents: 48 });
    expect(baseline.provenance.sae.hash).toMatch(/^vector:[0-9a-f]{64}$/);
    expect(baseline.bins.projection!.length).toBeGreaterThan(10);
    expect(baseline.documents.every((d) => d.features.length === 0)).toBe(true);
  });

  it('unsteered traffic stays under the projection_psi threshold; traffic steered along the vector exceeds it', async () => {
    const plain = await startStack();
    try {
      const ready = (await (await fetch(`${plain.proxy.url}/readyz`)).json()) as { monitor: { saes: unknown[] } };
      expect(ready.monitor.saes).toMatchObject([{ sae: 'persona', hook: HOOK, drift: true, problem: null }]);
      await traffic(plain, 24);
      const { score, threshold, text } = await scrape(plain);
      expect(score).toBeLessThan(threshold);
      // A projection monitor exports projection_psi only.
      expect(text).not.toMatch(/saegate_drift_score\{[^}]*sae="persona"[^}]*statistic="jsd"/);
    } finally {
      await plain.close();
    }
    const steered = await startStack();
    try {
      await traffic(steered, 24, STEER_SCALE);
      const { score, threshold } = await scrape(steered);
      expect(score).toBeGreaterThan(threshold);
    } finally {
      await steered.close();
    }
  }, 120_000);
});
