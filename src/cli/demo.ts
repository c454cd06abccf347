/**
 * `saegate demo` (what `npm start` runs): the main job on an embedded default. The saegate proxy
 * in front of the reference model server, which connects to saegate's tap and streams residual
 * rows of one hook point for every request; an SAE runs over those rows (the SAE engine), trained
 * on the first start and cached (src/cli/demo-sae.ts). The model is stories260K from
 * ../shared/models, or a seeded synthetic model when that folder is absent.
 */
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import { isSaegateError, SaegateError } from '../common/errors.js';
import { flag, integer, parseCommand, text, type CommandSpec } from '../common/options.js';
import { startModelServer } from '../model/server.js';
import { loadModel } from '../model/load.js';
import { allHookPoints } from '../model/types.js';
import { bindSaeToModel, loadSae } from '../sae/load.js';
import type { SaeWeights } from '../sae/types.js';
import { fallbackNotice, resolveDefaultModel } from './model-resolve.js';
import { DEMO_STEER_HEADER } from './demo-policies.js';
import { cacheRoot, DemoSaeInterrupted, ensureDemoSae, featuresPage } from './demo-sae.js';
import { startProxyWithSaes } from './serve.js';
import { isLoopbackHost } from '../proxy/config.js';

const demoOptions = {
  port: { type: integer(0, 65535), default: 9000, help: "the saegate proxy's listen port (0 = any free port)" },
  modelPort: { type: integer(0, 65535), default: 8000, help: "the reference model server's port (0 = any free port)" },
  host: { type: text('HOST'), default: '127.0.0.1', help: "the proxy's listen address" },
  sae: { type: text('DIR'), defaultText: 'the demo SAE', help: 'run this SAE (SAELens or sparsify directory) instead of the demo SAE' },
  noSae: { type: flag, default: false, help: 'run no SAE: saegate counts the tapped rows only' },
} as const;

export const demoCommand = {
  name: 'demo',
  synopsis: 'saegate demo [--port N] [--model-port N] [--host HOST] [--sae DIR | --no-sae]',
  description:
    'Starts the saegate proxy (default port 9000) in front of the reference model server (default port\n' +
      "8000; port 0 for either picks a free one, and the URLs printed say which) on an embedded default model,\n" +
    "with the model server connected to saegate's tap and an SAE running over the tapped hook point,\n" +
    'and prints what to try. The model is $SAEGATE_MODEL, else stories260K from $SAEGATE_MODELS_DIR,\n' +
    '../shared/models next to the repository or the cache, else downloaded (sha256-verified) into the\n' +
    'cache; offline, a seeded synthetic model, labelled as such.',
  options: demoOptions,
  epilogue:
    'Without --sae, the first start trains a small demo SAE for the model (model sample → sae train →\n' +
    'sae features, about a minute) and caches it in $SAEGATE_CACHE_DIR, else $XDG_CACHE_HOME/saegate,\n' +
    'else ~/.cache/saegate; later starts load it at once.',
  check: (f) => (f.sae !== undefined && f.noSae ? { option: 'noSae', message: '--sae and --no-sae exclude each other' } : undefined),
} as const satisfies CommandSpec<typeof demoOptions>;

export interface Demo {
  proxyUrl: string;
  modelUrl: string;
  close(): Promise<void>;
}

/**
 * Returns the port `host:port` can be listened on: `port` itself, or for 0 the free port the system
 * gave the probe. Throws SAEGATE_ERR_CONFIG naming the flag when it cannot (taken, or not ours).
 */
async function probePort(host: string, port: number, flag: string): Promise<number> {
  const probe = net.createServer();
  try {
    await new Promise<void>((resolve, reject) => {
      probe.once('error', reject);
      probe.listen({ host, port, exclusive: true }, resolve);
    });
    return (probe.address() as net.AddressInfo).port;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? String(error);
    throw new SaegateError('SAEGATE_ERR_CONFIG', [flag, `cannot listen on ${host}:${port} (${code}); pass --${flag} N for another port`]);
  } finally {
    await new Promise<void>((resolve) => probe.close(() => resolve()));
  }
}

/** One line: hook, shape, architecture and where it came from. */
function saeSummary(sae: SaeWeights): string {
  const c = sae.config;
  return `${c.hookName}: ${c.dIn} → ${c.dSae} ${c.architecture}${c.k === null ? '' : ` k = ${c.k}`} (${c.source})`;
}

/** The SAE the demo runs: --sae DIR, the cached demo SAE (trained when missing), or none. */
async function demoSae(
  flags: { sae?: string; noSae: boolean },
  model: string,
  hooks: { sae: string; steer: string },
  contextLength: number,
): Promise<{ sae: SaeWeights; featuresPage: string | null; baseline: string | null; policies: string | null } | null> {
  if (flags.noSae) return null;
  if (flags.sae !== undefined) return { sae: loadSae(flags.sae), featuresPage: featuresPage(flags.sae), baseline: null, policies: null };
  try {
    const cached = await ensureDemoSae({ model, hook: hooks.sae, steerHook: hooks.steer, contextLength, log: (line) => process.stderr.write(line) });
    return { sae: loadSae(cached.dir), featuresPage: cached.featuresPage, baseline: cached.baseline, policies: cached.policies };
  } catch (error) {
    if (error instanceof DemoSaeInterrupted) {
      process.stderr.write(`saegate demo: ${error.message}\n`);
      process.exit(130);
    }
    // The demo still runs without it; the reason is said, not swallowed.
    const reason = isSaegateError(error) ? `${error.code}: ${error.message}` : String(error);
    process.stderr.write(`saegate demo: could not train the demo SAE, so running without one (${reason})\n`);
    return null;
  }
}

export async function demo(argv: string[]): Promise<Demo> {
  const flags = parseCommand(demoCommand, argv);
  // Flag, SAEGATE_MODEL, a models folder, ../shared/models, the cache, a verified download of
  // stories260K, else the labelled synthetic model (src/cli/model-resolve.ts).
  let lastPercent = -1;
  const resolved = await resolveDefaultModel({
    cacheDir: cacheRoot(),
    onProgress: (file, received, total) => {
      const percent = total ? Math.floor((100 * received) / total) : -1;
      if (percent !== lastPercent && percent % 10 === 0) process.stderr.write(`downloading ${file}: ${percent}%\n`);
      lastPercent = percent;
    },
  });
  const notice = fallbackNotice(resolved);
  if (notice !== null) process.stderr.write(`saegate demo: ${notice}\n`);
  const model = resolved.model;
  const tapHost = flags.host === '0.0.0.0' || flags.host === '::' ? '127.0.0.1' : flags.host;
  const loaded = await loadModel({ model, ...(resolved.tokenizer !== null && { tokenizer: resolved.tokenizer }) });
  const cfg = loaded.weights.config;
  // The middle block's residual stream: blocks.2 of stories260K's five.
  const defaultHook = `blocks.${Math.floor(cfg.nLayers / 2)}.hook_resid_post`;
  // A taken port fails now, not after a first start's minute of training.
  if (flags.port !== 0) await probePort(flags.host, flags.port, 'port');
  if (flags.modelPort !== 0) await probePort('127.0.0.1', flags.modelPort, 'model-port');
  // The SAE is ready (trained on a first start) before anything listens, so the model server's
  // tap finds saegate up and the first request already has its rows encoded.
  // The example steer policy acts at blocks.3 (the layer docs/steering.md's sweep found best), or the last block of a shallower model.
  const steerHook = `blocks.${Math.min(3, cfg.nLayers - 1)}.hook_resid_post`;
  const chosen = await demoSae(flags, model, { sae: defaultHook, steer: steerHook }, cfg.maxSeqLen);
  // An SAE for another model or hook is refused here, naming its file and what did not match.
  if (chosen) bindSaeToModel(chosen.sae, { dModel: cfg.dim, hookPoints: allHookPoints(cfg) });
  // The model server is told saegate's tap URL before saegate listens (it retries until then), so
  // the proxy's port must be known up front: --port 0 takes the free port a probe is given just
  // before the servers start (the URLs printed below say which).
  const proxyPort = flags.port !== 0 ? flags.port : await probePort(flags.host, 0, 'port');
  const server = await startModelServer({ model, loaded, host: '127.0.0.1', port: flags.modelPort, tapUrl: `ws://${tapHost}:${proxyPort}/v1/tap` });
  let proxy;
  let live;
  try {
    ({ server: proxy, live } = await startProxyWithSaes(
      { upstream: server.url, host: flags.host, port: proxyPort },
      chosen ? [chosen.sae] : [],
      chosen?.policies ?? undefined,
      chosen?.baseline ? { baseline: [chosen.baseline] } : {},
    ));
  } catch (error) {
    await server.close();
    throw error;
  }
  const name = server.model.name;
  // The live view's header names the model, with a SYNTHETIC badge for the fallback.
  live.hub.setServedModel({
    name,
    synthetic: resolved.synthetic,
    detail: resolved.synthetic ? `seeded random weights, not trained (${model})${resolved.note ? `: ${resolved.note}` : ''}` : model,
  });
  // The banner waits for the model server's tap (it retries until saegate listens), so the first
  // request a user sends already streams rows to the SAE, the monitor and the live view.
  if (proxy.tap.server.connections.length === 0) {
    let timer: NodeJS.Timeout | undefined;
    const connected = await Promise.race([
      proxy.tap.server.nextConnection().then(() => true),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), 15_000))),
    ]);
    clearTimeout(timer);
    if (!connected) process.stderr.write('saegate demo: the model server has not connected to the tap after 15 s; requests are served, but without activations until it does\n');
  }
  const hook = chosen?.sae.config.hookName ?? defaultHook;
  if (!chosen) proxy.tap.subscribeAll({ hooks: [hook], dtype: 'f16', includePrompt: true });
  const saeLines = chosen
    ? `  SAE                           ${saeSummary(chosen.sae)}\n` +
      (chosen.featuresPage ? `  feature page                  file://${path.resolve(chosen.featuresPage)}  (what each feature responds to)\n` : '')
    : `  SAE                           none (--no-sae, or see above)\n`;
  const metricsHint = chosen ? 'saegate_sae_rows_encoded_total grows with every token' : 'saegate_tap_rows_total grows with every request';
  process.stdout.write(
    `saegate demo: proxy → reference model server with ${name} (${resolved.synthetic ? `SYNTHETIC model, not trained: ${model}` : model})\n\n` +
      `  OpenAI API (through saegate)  ${proxy.url}/v1\n` +
      `  model server (direct)         ${server.url}/v1\n` +
      `  metrics                       ${proxy.url}/metrics   (${metricsHint})\n` +
      (isLoopbackHost(flags.host)
        ? `  live view                     ${proxy.url}/ui  (requests as they happen, tokens coloured by their strongest feature)\n`
        : `  live view                     ${proxy.url}/ui  (refused off loopback: the demo sets no admin token; docs/live-view.md)\n`) +
      `  tap                           ${proxy.tapUrl}  (the model server connects here and streams ${hook} as f16)\n` +
      saeLines +
      `\nTry:\n` +
      `  curl -s ${proxy.url}/v1/completions -H 'content-type: application/json' \\\n` +
      `    -d '{"model":"${name}","prompt":"Once upon a time","max_tokens":40,"temperature":0}'\n` +
      (chosen?.policies && fs.existsSync(path.join(chosen.policies, 'less-sad.yaml'))
        ? `  the same request steered away from sad stories by the example policy (compare the text and x-saegate-applied):\n` +
          `  curl -si ${proxy.url}/v1/completions -H 'content-type: application/json' -H '${DEMO_STEER_HEADER.name}: ${DEMO_STEER_HEADER.value}' \\\n` +
          `    -d '{"model":"${name}","prompt":"Once upon a time","max_tokens":40,"temperature":0}'\n`
        : '') +
      `  curl -s ${proxy.url}/metrics | grep ${chosen ? 'saegate_sae_rows' : 'saegate_tap_rows'}\n` +
      (chosen?.baseline ? `  curl -s ${proxy.url}/metrics | grep saegate_drift_score   (drift against the baseline, per window)\n` : '') +
      '\n' +
      (chosen?.policies ? `  files: SAE, baseline and policies in ${chosen.sae.config.source} (policies/ is watched: edit it and the set reloads)\n` : '') +
      `  Steer it directly on the model server: add "steering":[{"hook":"${hook}","vector":[…${cfg.dim} numbers…],"scale":4}]\n` +
      `  (docs/model-server.md). Ctrl-C stops.\n`,
  );
  return {
    proxyUrl: proxy.url,
    modelUrl: server.url,
    async close() {
      await proxy.close();
      await server.close();
    },
  };
}
