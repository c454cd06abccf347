#!/usr/bin/env node
/** The `saegate` command: parses the subcommand, wires modules, handles signals. */
import { createRequire } from 'node:module';
import { isSaegateError, SaegateError } from '../common/errors.js';
import { HelpRequested } from '../common/options.js';
import { alertsExport } from './alerts.js';
import { baselineRecord } from './baseline-record.js';
import { demo } from './demo.js';
import { evalSteer } from './eval-steer.js';
import { modelSample } from './model-sample.js';
import { modelServe } from './model-serve.js';
import { policyCheck, vectorsConvert } from './policy.js';
import { saeEncode, saeInfo } from './sae.js';
import { saeFeatures } from './sae-features.js';
import { saeTrain } from './sae-train.js';
import { serve } from './serve.js';
import { vectorsBuild } from './vectors-build.js';

const usage = `Usage: saegate <command> [options]

Commands:
  serve                run the saegate proxy in front of an OpenAI-compatible model server
  demo                 run the reference model server on the embedded default model (npm start)
  model serve          serve a llama-family model over the OpenAI API, with taps and steering
  model sample         sample a seeded, reproducible prompt corpus (JSONL) from a model
  sae info DIR         load an SAE (SAELens or sparsify) and print what was loaded
  sae encode           encode activation rows from a .npy/safetensors file to JSON
  sae train            train TopK SAEs on a hook's activations over a corpus (SAELens output + report)
  sae features         what each SAE feature responds to over a corpus (JSON + HTML page)
  baseline record      record a drift baseline: a corpus through the model and an SAE (docs/monitor.md)
  policy check PATH    validate policy files; every problem as file:line:column: path: message
  alerts export RULES  the monitor's alert rules (serve --alert-rules) as Prometheus alerting rules
  vectors import FILE  a llama.cpp control vector (.gguf) to saegate's vector file
  vectors export FILE  a saegate vector file to a llama.cpp control vector (.gguf)
  vectors build        a steering vector from positive and negative prompt sets, with a separation report
  eval steer           what a steering vector does to a behaviour, control text and a retain set (reports)

Run 'saegate <command> --help' for a command's options.`;

interface Closable {
  close(): Promise<void>;
}

/** Closes the running service on SIGINT/SIGTERM (exiting after 5 s at most); a second signal exits at once. */
function closeOnSignals(service: Closable): void {
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) process.exit(1);
    stopping = true;
    process.stderr.write(`${signal}: shutting down\n`);
    // Every part gets 5 s in all (requests in flight, the model server, workers); then it exits anyway.
    setTimeout(() => {
      process.stderr.write(`${signal}: not stopped within 5 s; exiting\n`);
      process.exit(1);
    }, 5000).unref();
    service.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

async function main(argv: string[]): Promise<void> {
  const [command, sub, ...rest] = argv;
  if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
    process.stdout.write(`${usage}\n`);
    return;
  }
  if (command === '--version' || command === '-v') {
    const pkg = createRequire(import.meta.url)('../../package.json') as { version: string };
    process.stdout.write(`${pkg.version}\n`);
    return;
  }
  if (command === 'demo') {
    closeOnSignals(await demo(sub === undefined ? [] : [sub, ...rest]));
    return;
  }
  if (command === 'serve') {
    closeOnSignals(await serve(sub === undefined ? [] : [sub, ...rest]));
    return;
  }
  if (command === 'sae' && sub === 'info') {
    saeInfo(rest);
    return;
  }
  if (command === 'sae' && sub === 'features') {
    await saeFeatures(rest);
    return;
  }
  if (command === 'sae' && sub === 'train') {
    await saeTrain(rest);
    return;
  }
  if (command === 'sae' && sub === 'encode') {
    await saeEncode(rest);
    return;
  }
  if (command === 'baseline' && sub === 'record') {
    await baselineRecord(rest);
    return;
  }
  if (command === 'policy' && sub === 'check') {
    const { code, lines } = await policyCheck(rest);
    (code === 0 ? process.stdout : process.stderr).write(`${lines.join('\n')}\n`);
    process.exitCode = code;
    return;
  }
  if (command === 'alerts' && sub === 'export') {
    process.stdout.write(`${alertsExport(rest)}\n`);
    return;
  }
  if (command === 'vectors' && (sub === 'import' || sub === 'export')) {
    process.stdout.write(`${vectorsConvert(sub, rest)}\n`);
    return;
  }
  if (command === 'vectors' && sub === 'build') {
    process.stdout.write(`${(await vectorsBuild(rest)).join('\n')}\n`);
    return;
  }
  if (command === 'eval' && sub === 'steer') {
    process.stdout.write(`${(await evalSteer(rest)).lines.join('\n')}\n`);
    return;
  }
  if (command === 'model' && sub === 'serve') {
    closeOnSignals(await modelServe(rest));
    return;
  }
  if (command === 'model' && sub === 'sample') {
    await modelSample(rest);
    return;
  }
  throw new SaegateError('SAEGATE_ERR_CLI_USAGE', [`unknown command '${[command, sub].filter(Boolean).join(' ')}'\n\n${usage}`]);
}

main(process.argv.slice(2)).catch((error: unknown) => {
  if (error instanceof HelpRequested) {
    process.stdout.write(`${error.usage}\n`);
    process.exit(0);
  }
  if (isSaegateError(error)) {
    process.stderr.write(`saegate: ${error.code}: ${error.message}\n`);
    process.exit(error.code === 'SAEGATE_ERR_CLI_USAGE' ? 2 : 1);
  }
  process.stderr.write(`saegate: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
