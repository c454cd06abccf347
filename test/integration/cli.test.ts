/** The `saegate` command as a user runs it: a real process, real signals. */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { demoSaeDir } from '../../src/cli/demo-sae.js';
import { writeSafetensors } from '../../src/common/safetensors.js';
import { runCliToExit, waitForApiUrl, withCli } from '../helpers/cli.js';
import { makeTempDir, removeTempDir } from '../helpers/fixtures.js';
import { waitFor } from '../helpers/wait.js';
import WebSocket from 'ws';



describe('saegate CLI', () => {
  it('serves a synthetic model on a free port, answers /v1/models, and exits 0 on SIGTERM', async () => {
    await withCli(['model', 'serve', '--model', 'synthetic:dim=32,layers=2,heads=4,kv=2,hidden=64,vocab=300,ctx=64,seed=1', '--name', 'tiny', '--port', '0'], async (proc) => {
      const url = await waitForApiUrl(proc);
      const models = (await (await fetch(`${url}/v1/models`)).json()) as { data: { id: string; synthetic: boolean }[] };
      expect(models.data.map((m) => [m.id, m.synthetic])).toEqual([['tiny', true]]);
      expect(proc.out()).toContain('saegate model server: tiny (SYNTHETIC model, not trained: d_model 32');
      proc.child.kill('SIGTERM');
      expect(await proc.exited).toBe(0);
    });
  });

  it('rejects a bad flag value with exit code 2, naming the flag', async () => {
    const proc = await runCliToExit(['model', 'serve', '--model', 'x.bin', '--device', 'tpu']);
    expect(proc.code).toBe(2);
    expect(proc.err).toContain('--device');
    expect(proc.err).toContain('SAEGATE_ERR_CLI_USAGE');
  });

  it('fails at load with a typed error naming a missing model file', async () => {
    const proc = await runCliToExit(['model', 'serve', '--model', '/nonexistent/model.bin', '--port', '0']);
    expect(proc.code).toBe(1);
    expect(proc.err).toMatch(/SAEGATE_ERR_MODEL_FILE.*\/nonexistent\/model\.bin/);
  });
});

describe('saegate demo (npm start)', () => {
  it('serves the model through the proxy with the tap connected, rows reach saegate, and the synthetic model is labelled in the banner, /v1/models and the live view', async () => {
    await withCli(['demo', '--port', '0', '--model-port', '0', '--no-sae'], async (proc) => {
      const url = await waitForApiUrl(proc);
      // Port 0 for both: the demo prints the ports it took, and they are the ones serving.
      expect(url).toMatch(/^http:\/\/127\.0\.0\.1:[1-9]\d*$/);
      const modelUrl = /model server \(direct\)\s+(http:\/\/127\.0\.0\.1:[1-9]\d*)\/v1/.exec(proc.out())?.[1];
      expect(modelUrl).toBeDefined();
      expect(modelUrl).not.toBe(url);
      expect(proc.out()).toContain(`ws://127.0.0.1:${new URL(url).port}/v1/tap`);
      expect(proc.out()).toMatch(new RegExp(`live view\\s+${url}/ui\\s`));
      const ui = await fetch(`${url}/ui`);
      expect(ui.status).toBe(200);
      expect(ui.headers.get('content-security-policy')).toContain("default-src 'self'");
      // Labelled synthetic: the banner, /v1/models (direct and through saegate) and the live view's snapshot.
      expect(proc.out()).toMatch(/^saegate demo: proxy → reference model server with synthetic \(SYNTHETIC model, not trained: synthetic:dim=32,/m);
      for (const base of [modelUrl, url]) {
        expect((await (await fetch(`${base}/v1/models`)).json()) as unknown).toMatchObject({ data: [{ id: 'synthetic', object: 'model', synthetic: true }] });
      }
      const snapshot = await new Promise<unknown>((resolve, reject) => {
        const ws = new WebSocket(`${url.replace('http', 'ws')}/ui/ws`);
        ws.once('message', (data: Buffer) => {
          resolve(JSON.parse(data.toString()));
          ws.close();
        });
        ws.once('error', reject);
      });
      expect(snapshot).toMatchObject({ type: 'snapshot', servedModel: { name: 'synthetic', synthetic: true } });
      const rowsReceived = async (): Promise<number> => Number(/^saegate_tap_rows_total (\S+)$/m.exec(await (await fetch(`${url}/metrics`)).text())?.[1] ?? 'NaN');
      // The model server connects to the tap with backoff once saegate listens.
      await waitFor('the model server connected to the demo proxy\'s tap', async () => /^saegate_tap_connections 1$/m.test(await (await fetch(`${url}/metrics`)).text()), { intervalMs: 50, deadlineMs: 30_000 });
      const res = await fetch(`${url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'synthetic', prompt: 'hi', max_tokens: 5, temperature: 0 }),
      });
      expect(res.status).toBe(200);
      expect(res.headers.get('x-saegate-applied')).toBe('none');
      await waitFor('tapped rows counted by the demo proxy', async () => (await rowsReceived()) >= 1, { intervalMs: 50 });
      // Prompt rows (BOS + the prompt's tokens) and generated rows all arrive.
      expect(await rowsReceived()).toBeGreaterThanOrEqual(5);
      expect(proc.out()).toMatch(/SAE\s+none/);
      proc.child.kill('SIGTERM');
      expect(await proc.exited).toBe(0);
    }, { env: { SAEGATE_DEMO_MODEL: 'synthetic:dim=32,layers=2,heads=4,kv=2,hidden=64,vocab=300,ctx=64,seed=1' } });
  });

  const DEMO_MODEL = 'synthetic:dim=32,layers=2,heads=4,kv=2,hidden=64,vocab=300,ctx=64,seed=1';
  const HOOK = 'blocks.1.hook_resid_post';

  /** A completion through the demo, then the SAE's and the tap's row counters once they agree. */
  async function completeAndCount(url: string): Promise<{ tapRows: number; saeEncoded: number; saeDropped: number }> {
    const metrics = async (): Promise<string> => (await fetch(`${url}/metrics`)).text();
    const value = (text: string, series: string): number => Number(text.split('\n').find((line) => line.startsWith(`${series} `))?.slice(series.length + 1) ?? 'NaN');
    await waitFor('the model server connected to the demo proxy\'s tap', async () => /^saegate_tap_connections 1$/m.test(await metrics()), { intervalMs: 50, deadlineMs: 30_000 });
    const res = await fetch(`${url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'synthetic', prompt: 'hi', max_tokens: 6, temperature: 0 }),
    });
    expect(res.status).toBe(200);
    let counts = { tapRows: 0, saeEncoded: 0, saeDropped: 0 };
    await waitFor(
      'at least 8 tapped rows, each encoded or dropped by the SAE',
      async () => {
        const text = await metrics();
        const tapRows = value(text, 'saegate_tap_rows_total');
        const saeEncoded = value(text, `saegate_sae_rows_encoded_total{hook="${HOOK}"}`);
        const saeDropped = ['queue_full', 'sampled', 'worker_exited', 'encode_failed', 'bad_width'].reduce((sum, reason) => sum + value(text, `saegate_sae_rows_dropped_total{hook="${HOOK}",reason="${reason}"}`), 0);
        counts = { tapRows, saeEncoded, saeDropped };
        return tapRows >= 8 && saeEncoded + saeDropped === tapRows;
      },
      { intervalMs: 50, observed: () => counts },
    );
    return counts;
  }

  it('trains the demo SAE on its first start, caches it, encodes every tapped row with it, and loads it from the cache next time', async () => {
    const cache = makeTempDir('demo-cache');
    try {
      const env = { SAEGATE_DEMO_MODEL: DEMO_MODEL, SAEGATE_CACHE_DIR: cache };
      // Work directories of earlier first starts: one whose process is gone (killed mid-training)
      // is removed, one whose process lives (a demo training now: this test's runner) is kept.
      const target = demoSaeDir(DEMO_MODEL, HOOK, env);
      const deadPid = spawnSync('true').pid;
      const abandoned = `${target}.partial-${deadPid}-abc123`;
      const live = `${target}.partial-${process.pid}-def456`;
      for (const d of [abandoned, live]) fs.mkdirSync(path.join(d, 'sae'), { recursive: true });
      // The first start trains (about a minute on two cores) before it listens.
      let firstErr = '';
      const firstOut = await withCli(['demo', '--port', '0', '--model-port', '0'], async (first) => {
        const url = await waitForApiUrl(first, 200_000);
        expect(first.err()).toContain(`training a demo SAE for ${HOOK}`);
        expect(first.out()).toMatch(new RegExp(`SAE\\s+${HOOK.replace(/\./g, '\\.')}: 32 → 512 topk k = 8`));
        // BOS + 'h' + 'i' prompt rows and the generated tokens' rows: every one encoded, none dropped.
        const counts = await completeAndCount(url);
        expect(counts.saeDropped).toBe(0);
        expect(counts.saeEncoded).toBe(counts.tapRows);
        // The whole loop from the first request: drift against the recorded baseline, the example
        // policies (watch on every request; steering only with the header the banner prints).
        const ready = (await (await fetch(`${url}/readyz`)).json()) as { monitor: { saes: { drift: boolean; problem: unknown }[] } };
        expect(ready.monitor.saes).toMatchObject([{ drift: true, problem: null }]);
        const body = JSON.stringify({ model: 'any', prompt: 'Once upon a time', max_tokens: 8, temperature: 0 });
        const plain = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
        expect(plain.headers.get('x-saegate-applied')).toBe('policy=demo-watch@1');
        first.child.kill('SIGTERM');
        expect(await first.exited).toBe(0);
        firstErr = first.err();
        return first.out();
      }, { env, deadlineMs: 220_000 });
      // One complete SAE directory in the cache; of the work directories only the live one is left.
      const entries = fs.readdirSync(path.join(cache, 'demo-sae')).sort();
      expect(entries).toEqual([path.basename(target), path.basename(live)]);
      const dir = target;
      for (const file of ['cfg.json', 'sae_weights.safetensors', 'report.json', 'features.html', 'features.json', 'baseline.json', 'policies/watch.yaml']) expect(fs.existsSync(path.join(dir, file)), file).toBe(true);
      expect(firstOut).toContain(`file://${path.join(dir, 'features.html')}`);
      const report = JSON.parse(fs.readFileSync(path.join(dir, 'report.json'), 'utf8')) as { heldOut: { fvu: number }; sae: { directory: string }; data: { source: string } };
      expect(report.heldOut.fvu).toBeLessThan(0.5);
      // The quiet first start: a line per phase and a summary; no line per document, no collector
      // chatter, and no path of the work directory the SAE was built in.
      // Phase 5 (the example steer vector) is skipped on this synthetic model: its 64-token context is too short for the prompt sets.
      expect(firstErr.match(/^saegate demo: \[\d\/5\] .*: done in [\d.]+ s$/gm)).toHaveLength(4);
      expect(firstErr).toMatch(/^saegate demo: \[5\/5\] steering vector skipped, so no example steer policy \(/m);
      expect(firstErr).toMatch(new RegExp(`^saegate demo: demo SAE ready in ${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: held-out FVU [\\d.]+, L0 [\\d.]+`, 'm'));
      expect(firstErr).not.toMatch(/collect:|skipped document|k=8 \[/);
      expect(firstErr).not.toContain('.partial-');
      // The report and the feature page name the cache directory, not the work directory.
      expect(report.sae.directory).toBe(dir);
      expect(report.data.source).toContain(`corpus ${path.join(dir, 'corpus.jsonl')} through`);
      const features = JSON.parse(fs.readFileSync(path.join(dir, 'features.json'), 'utf8')) as { sae: { path: string }; corpus: { path: string } };
      expect([features.sae.path, features.corpus.path]).toEqual([dir, path.join(dir, 'corpus.jsonl')]);
      for (const file of ['report.json', 'report.md', 'features.json', 'features.html']) expect(fs.readFileSync(path.join(dir, file), 'utf8'), file).not.toContain('.partial-');
      expect(fs.readFileSync(path.join(dir, 'features.html'), 'utf8')).toContain(dir);

      await withCli(['demo', '--port', '0', '--model-port', '0'], async (second) => {
        const url2 = await waitForApiUrl(second);
        expect(second.err()).not.toContain('training');
        expect(second.out()).toContain(`(${dir})`);
        const again = await completeAndCount(url2);
        expect(again.saeEncoded).toBe(again.tapRows);
        second.child.kill('SIGTERM');
        expect(await second.exited).toBe(0);
      }, { env });
    } finally {
      removeTempDir(cache);
    }
  }, 240_000);

  it('refuses an --sae for another model with a typed error naming the file and both widths, and a missing one naming the path', async () => {
    const dir = makeTempDir('demo-sae');
    try {
      writeTinySae(dir);
      const wrong = await runCliToExit(['demo', '--port', '0', '--model-port', '0', '--sae', dir], { env: { SAEGATE_DEMO_MODEL: DEMO_MODEL } });
      expect(wrong.code).toBe(1);
      expect(wrong.err).toMatch(/SAEGATE_ERR_SAE_FILE/);
      expect(wrong.err).toContain(dir);
      expect(wrong.err).toContain('d_in 8 does not match the model\'s d_model 32');
      const missing = await runCliToExit(['demo', '--port', '0', '--model-port', '0', '--sae', '/nonexistent/sae'], { env: { SAEGATE_DEMO_MODEL: DEMO_MODEL } });
      expect(missing.code).toBe(1);
      expect(missing.err).toMatch(/SAEGATE_ERR_SAE_FILE.*\/nonexistent\/sae/);
      const both = await runCliToExit(['demo', '--sae', dir, '--no-sae'], { env: { SAEGATE_DEMO_MODEL: DEMO_MODEL } });
      expect(both.code).toBe(2);
      expect(both.err).toContain('--sae and --no-sae exclude each other');
      // A taken port is refused before any training, naming the flag.
      const taken = net.createServer();
      await new Promise<void>((resolve) => taken.listen({ host: '127.0.0.1', port: 0 }, resolve));
      const port = (taken.address() as net.AddressInfo).port;
      try {
        const busy = await runCliToExit(['demo', '--port', String(port), '--model-port', '0'], { env: { SAEGATE_DEMO_MODEL: DEMO_MODEL, SAEGATE_CACHE_DIR: dir } });
        expect(busy.code).toBe(1);
        expect(busy.err).toContain(`SAEGATE_ERR_CONFIG`);
        expect(busy.err).toContain(`cannot listen on 127.0.0.1:${port} (EADDRINUSE); pass --port N`);
        expect(busy.err).not.toContain('training');
      } finally {
        await new Promise<void>((resolve) => taken.close(() => resolve()));
      }
    } finally {
      removeTempDir(dir);
    }
  });
});

const dIn = 8;
const dSae = 32;
const values = (n: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i + 1) * 0.1);

/** A TopK (k = 4) SAELens directory for blocks.2.hook_resid_post with d_in 8, d_sae 32. */
function writeTinySae(dir: string): void {
  fs.writeFileSync(
    path.join(dir, 'cfg.json'),
    JSON.stringify({ architecture: 'topk', activation_fn_kwargs: { k: 4 }, d_in: dIn, d_sae: dSae, dtype: 'float32', hook_name: 'blocks.2.hook_resid_post', model_name: 'stories260K', apply_b_dec_to_input: true, normalize_activations: 'none' }),
  );
  writeSafetensors(path.join(dir, 'sae_weights.safetensors'), {
    W_enc: { dtype: 'F32', shape: [dIn, dSae], data: values(dIn * dSae) },
    b_enc: { dtype: 'F32', shape: [dSae], data: values(dSae) },
    W_dec: { dtype: 'F32', shape: [dSae, dIn], data: values(dSae * dIn) },
    b_dec: { dtype: 'F32', shape: [dIn], data: values(dIn) },
  });
}

describe('saegate sae info and sae encode', () => {
  it('encodes rows offline as the TopK equations say, prints what it loaded, and names the file when it is broken', async () => {
    const dir = makeTempDir('saegate-sae-');
    try {
      writeTinySae(dir);
      // Encode three rows offline and check them against the TopK equations computed here.
      const x = Float32Array.from({ length: 3 * dIn }, (_, i) => Math.cos(i * 0.7));
      let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (3, ${dIn}), }`;
      header += ' '.repeat(64 - ((10 + header.length + 1) % 64)) + '\n';
      const npyBytes = Buffer.concat([Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, header.length & 0xff, header.length >> 8]), Buffer.from(header), Buffer.from(x.buffer)]);
      fs.writeFileSync(path.join(dir, 'rows.npy'), npyBytes);
      const enc = await runCliToExit(['sae', 'encode', '--sae', dir, '--input', path.join(dir, 'rows.npy'), '--output', path.join(dir, 'out.json')]);
      expect(enc.code).toBe(0);
      const out = JSON.parse(fs.readFileSync(path.join(dir, 'out.json'), 'utf8')) as { top_k: number | null; rows: { indices: number[]; values: number[]; l0: number }[] };
      // No --top-k: no cap, every active feature is listed (at most k = 4 for this TopK SAE).
      expect(out.top_k).toBeNull();
      expect(out.rows).toHaveLength(3);
      const w = values(dIn * dSae);
      const bEnc = values(dSae);
      const bDec = values(dIn);
      out.rows.forEach((row, r) => {
        const pre = Array.from({ length: dSae }, (_, j) => {
          let acc = bEnc[j];
          for (let i = 0; i < dIn; i++) acc += (x[r * dIn + i] - bDec[i]) * w[i * dSae + j];
          return acc;
        });
        const expected = pre
          .map((v, j) => [j, v] as const)
          .sort((a, b) => b[1] - a[1])
          .slice(0, 4)
          .filter(([, v]) => v > 0);
        expect(row.indices).toEqual(expected.map(([j]) => j));
        row.values.forEach((v, k) => expect(v).toBeCloseTo(expected[k][1], 5));
        expect(row.l0).toBe(expected.length);
      });

      const ok = await runCliToExit(['sae', 'info', dir]);
      expect(ok.code).toBe(0);
      expect(ok.out).toMatch(/topk/);
      expect(ok.out).toContain('blocks.2.hook_resid_post');
      expect(ok.out).toMatch(/8\s*×\s*32/);

      fs.writeFileSync(path.join(dir, 'cfg.json'), JSON.stringify({ architecture: 'mystery', d_in: dIn, d_sae: dSae, hook_name: 'blocks.2.hook_resid_post' }));
      const bad = await runCliToExit(['sae', 'info', dir]);
      expect(bad.code).toBe(1);
      expect(bad.err).toContain('SAEGATE_ERR_SAE_FILE');
      expect(bad.err).toContain('mystery');
    } finally {
      removeTempDir(dir);
    }
  });
});

describe('saegate serve --sae', () => {
  it('loads the SAE before listening, says which hook it runs on, and refuses a broken SAE at start', async () => {
    const dir = makeTempDir('saegate-serve-sae-');
    try {
      writeTinySae(dir);
      await withCli(['serve', '--upstream', 'http://127.0.0.1:9', '--port', '0', '--sae', dir], async (proc) => {
        await waitForApiUrl(proc);
        expect(proc.out()).toMatch(/SAEs\s+blocks\.2\.hook_resid_post/);
        expect(proc.out()).toMatch(/live view\s+http:\/\/127\.0\.0\.1:\d+\/ui\n/);
        proc.child.kill('SIGTERM');
        expect(await proc.exited).toBe(0);
      });

      fs.writeFileSync(path.join(dir, 'cfg.json'), '{"architecture": "topk"');
      const bad = await runCliToExit(['serve', '--upstream', 'http://127.0.0.1:9', '--port', '0', '--sae', dir]);
      expect(bad.code).toBe(1);
      expect(bad.err).toContain('SAEGATE_ERR_SAE_FILE');
    } finally {
      removeTempDir(dir);
    }
  });
});
