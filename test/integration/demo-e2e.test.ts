/**
 * `npm start` as a new user meets it (issue 13): the default command on stories260K from the shared
 * models, with an empty cache. The first start trains the demo SAE, records its drift baseline,
 * builds the example steering vector and writes the example policies; then a request through the
 * printed URL is answered with stories text, the live view's WebSocket shows its tokens with SAE
 * features, /metrics shows the request, the SAE rows and the drift series, the printed steering
 * curl's header steers, and SIGINT stops everything: the process exits and nothing answers on its
 * ports any more.
 */
import OpenAI from 'openai';
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { withCli, waitForApiUrl } from '../helpers/cli.js';
import { hasSharedModels, makeTempDir, needsSharedModels, removeTempDir, stories260K } from '../helpers/fixtures.js';
import { waitFor } from '../helpers/wait.js';

interface LiveRequest {
  id: string;
  tokens: { text: string; features: { index: number }[] }[];
}

describe.skipIf(!hasSharedModels)(needsSharedModels('npm start end to end on stories260K'), () => {
  it('serves stories, shows them in the live view, exports SAE and drift series, steers on request and stops on SIGINT', async () => {
    const cache = makeTempDir('demo-e2e-cache');
    try {
      await withCli(
        ['demo', '--port', '0', '--model-port', '0'],
        async (demo) => {
          const url = await waitForApiUrl(demo, 280_000);
          const out = demo.out();
          expect(out).toContain(`${url}/ui`);
          expect(out).toContain("-H 'x-saegate-steer: less-sad'");
          expect(demo.err()).toMatch(/\[5\/5\] steering vector \(happy minus sad openings\): done/);

          // The live view, opened before the request.
          const seen = new Map<string, LiveRequest>();
          const ws = new WebSocket(`${url.replace('http', 'ws')}/ui/ws`);
          ws.on('message', (data: Buffer) => {
            const message = JSON.parse(data.toString()) as { type: string; requests?: LiveRequest[] };
            for (const request of message.requests ?? []) seen.set(request.id, request);
          });
          await new Promise<void>((resolve, reject) => ws.once('open', resolve).once('error', reject));

          const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0 });
          const { data: completion, response } = await client.completions
            .create({ model: 'stories260K', prompt: 'Once upon a time', max_tokens: 40, temperature: 0 })
            .withResponse();
          expect(completion.choices[0].text).toMatch(/\b(a|the|was|named|little)\b/);
          expect(response.headers.get('x-saegate-applied')).toBe('policy=demo-watch@1');
          const id = response.headers.get('x-request-id')!;
          await waitFor('the live view shows the request with SAE features on its tokens', () => {
            const request = seen.get(id);
            return request !== undefined && request.tokens.length >= 40 && request.tokens.some((t) => t.features.length > 0);
          }, { deadlineMs: 60_000, observed: () => ({ id, seen: [...seen.values()].map((r) => ({ id: r.id, tokens: r.tokens.length, withFeatures: r.tokens.filter((t) => t.features.length > 0).length })) }) });
          ws.close();

          const steered = await fetch(`${url}/v1/completions`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', 'x-saegate-steer': 'less-sad' },
            body: JSON.stringify({ model: 'stories260K', prompt: 'Once upon a time', max_tokens: 40, temperature: 0 }),
          });
          expect(steered.headers.get('x-saegate-applied')).toMatch(/^policy=demo-less-sad@1, policy=demo-watch@1, steering=plan-/);

          // The monitor assesses every 5 s: wait for the drift series of the baseline recorded on the first start.
          await waitFor('drift scores on /metrics', async () => /^saegate_drift_score\{[^}]*statistic="jsd",window="1m"\} /m.test(await (await fetch(`${url}/metrics`)).text()), { deadlineMs: 30_000 });
          const metrics = await (await fetch(`${url}/metrics`)).text();
          expect(metrics).toMatch(/^saegate_requests_total\{[^}]*\} [1-9]/m);
          expect(Number(/^saegate_sae_rows_encoded_total\{[^}]*\} (\d+)/m.exec(metrics)?.[1] ?? 0)).toBeGreaterThanOrEqual(40);
          expect(metrics).toMatch(/^saegate_baseline_loaded\{[^}]*\} 1$/m);
          expect(metrics).toMatch(/^saegate_feature_firing_rate\{[^}]*label="[^"]+"[^}]*\} /m);

          demo.child.kill('SIGINT');
          expect(await demo.exited).toBe(0);
          await expect(fetch(`${url}/healthz`)).rejects.toThrow();
        },
        { env: { SAEGATE_DEMO_MODEL: stories260K.model, SAEGATE_CACHE_DIR: cache }, deadlineMs: 330_000 },
      );
    } finally {
      removeTempDir(cache);
    }
  }, 360_000);
});
