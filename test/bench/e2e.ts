/**
 * The whole path, as users run it (issue 14): real processes, a load generator on the OpenAI API,
 * interleaved rounds of
 *
 *   direct                  load → model server (no tap)
 *   proxy                   load → saegate serve → model server without a tap (the HTTP hop alone)
 *   saegate                 load → saegate serve (no SAE) → model server --tap
 *   saegate+sae             … with `--sae` (a seeded TopK SAE on one hook, every tapped row)
 *   saegate+sae+drift       … plus `--baseline` and `--watch` (8 features): monitoring only, so
 *                           every row takes the monitoring batch deadline (--sae-monitor-delay-ms)
 *   saegate+sae+monitor     … plus `--baseline`, `--watch` (8 features) and `--policies` (a
 *                           conditional steer and a conditional flag on watched features)
 *   saegate+sae+scoped      … the same, with the conditional policy matching one request in
 *                           four (`--guarded-every N`: header `x-bench-guarded: 1`, which the load
 *                           generator sets on every Nth completion in every arm): the other
 *                           requests go to the model server with the monitoring tap hold
 *                           (`x-saegate-tap-max-delay-ms`)
 *
 * Every arm has its own model-server process (same model, same flags), so a tapped and an
 * untapped server are compared side by side. Model servers are pinned to core 0, saegate and this
 * load generator to core 1 (`taskset`), where the machine has 2 cores or more. Each round runs
 * every arm in turn (rotated start) at 1, 8 and 32 streams: each stream sends streaming
 * completions (128 tokens, temperature 0.8, `stream_options.include_usage`) back to back for the
 * round's seconds. Reported per arm, as the median over rounds:
 *
 *   tok/s and × direct      generated tokens per second of wall time, against direct in the same round
 *                           (ratios: median over rounds and a distribution-free interval for it,
 *                           from order statistics, with its coverage printed under the table)
 *   TTFT p50                time to first token: request sent to the first chunk with a choice
 *   TPOT p50/p99            time per output token within a request (first to last chunk / (n − 1))
 *   model CPU-µs/tok        the model server's CPU time (every thread, /proc/PID/task/{TID}/schedstat) per generated
 *                           token; × direct and × proxy compare it with the untapped server of the
 *                           direct and proxy arms in the same round (× proxy is the tap's own cost)
 *   loop / worker / kernel  of it, the model server's main thread (event loop: HTTP, tap bridge), its
 *                           busiest other thread (the decode worker), and kernel mode (every thread;
 *                           from clock ticks, so coarse), µs per token
 *   switches/tok            the model server's context switches (every thread) per generated token
 *   tok/step                generated tokens per decode step (the mean decode batch, from /healthz)
 *   onnxruntime µs/tok      wall time inside onnxruntime's run() per generated token (from /healthz)
 *   saegate CPU-µs/tok      saegate's CPU time per generated token
 *   rows/tok                rows encoded per generated token (prompt rows included)
 *   saegate µs/row          what a monitored row costs saegate: (its CPU per token − the no-SAE
 *                           arm's in the same round) × tokens / rows
 *   beyond SAE              that, less the SAE's own arithmetic: raw onnxruntime on the same SAE
 *                           graph at batch 256 (f32 rows, one thread), measured in this process
 *   event loop µs/row       the part of saegate µs/row spent on saegate's main thread (the event
 *                           loop: tap frames, batching, results, monitor, live view, policies)
 *   SAE run µs/row          wall time saegate's SAE workers spent inside onnxruntime's run per
 *                           row (saegate_sae_run_seconds_total): the SAE's arithmetic at the batch
 *                           sizes it really got, with cold caches and preemption on a shared core
 *
 * and, per saegate, the row ledger at the end: tap rows = rows encoded + rows dropped by reason.
 * Models: stories260K (../shared/models; a 64 → 1024 TopK SAE, k 32, at blocks.3) and a synthetic
 * 512-wide, 8-layer model (a 512 → 8192 TopK SAE, k 64, at blocks.4). SAE weights are seeded
 * random: the cost of a TopK SAE does not depend on what it learned. `--sae-arch jumprelu` uses a
 * JumpReLU SAE of about the same L0 instead (`seededSae`), whose features the policies' feature
 * screen bounds tightly; `--sae-dir DIR` a trained SAELens SAE for stories260K (for example the
 * one `saegate demo` trains) instead. The conditional policy's flag is a guard `above: X`
 * (`--guard-above`; default 0 on the seeded TopK SAE, 2.5 otherwise).
 *
 * `--profile DIR` runs every process with `--cpu-prof` into DIR and prints, per process, the
 * functions with the most self time over the whole run (the profiles stay in DIR for a closer
 * look in Chrome DevTools). `--perf-map` runs them with `--perf-basic-prof` instead, for Linux
 * `perf record` (kernel time included, and no preemption charged to JavaScript), for example
 * `perf record -C 0 -g -o core0.data -- npx tsx test/bench/e2e.ts --perf-map …` for the model
 * servers' core; stderr names each process's pid for `perf report --pid`.
 *
 *   npx tsx test/bench/e2e.ts [--quick] [--rounds N] [--seconds S] [--streams 1,8,32]
 *                             [--models stories,synthetic] [--arms direct,saegate,...] [--profile DIR] [--perf-map]
 *                             [--saegate-args='--sae-max-delay-ms 8'] [--model-args='--tap-flush-ms 5']
 *                             [--sae-arch topk|jumprelu] [--sae-dir DIR] [--guard-above X] [--guarded-every N] [--unix] [--late-guard]
 *
 * `--late-guard` gives the conditional policy's guard flag `inResponse: false` (counted, not waited on).
 *
 * `--unix` runs every model server behind a saegate on a Unix socket (`model serve --unix`, `serve
 * --upstream-socket`) instead of loopback TCP; the direct arm stays on TCP. An arm named with
 * `@unix` or `@tcp` (`--arms direct,proxy,proxy@unix,saegate+sae+drift,saegate+sae+drift@unix`)
 * takes that hop whatever `--unix` says, so one run compares both, round by round; an arm's `× proxy`
 * and per-row columns are then taken against the `proxy` and `saegate` arms of its own hop (of the
 * other hop when its own is not run).
 *
 * Prints tables; asserts nothing about time.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Agent, request } from 'undici';
import { createSession, loadOrt } from '../../src/common/ort.js';
import { writeSaeLensDirectory } from '../../src/lab/train/trainer.js';
import { writeSafetensors } from '../../src/common/safetensors.js';
import { buildSaeEncoderGraph, SaeEncoderNames, saeEncoderOutputNames } from '../../src/sae/graph.js';
import { loadSae } from '../../src/sae/load.js';
import { seededUniform } from '../../src/common/random.js';
import type { SaeWeights } from '../../src/sae/types.js';
import { hasSharedModels, makeTempDir, stories260K } from '../helpers/fixtures.js';
import { freePort } from '../helpers/ports.js';
import { seededStandardSae, seededTopKSae } from '../helpers/sae.js';
import { waitFor } from '../helpers/wait.js';
import { median } from '../helpers/bench-stats.js';

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean' },
    rounds: { type: 'string' },
    seconds: { type: 'string' },
    streams: { type: 'string' },
    models: { type: 'string' },
    arms: { type: 'string' },
    tokens: { type: 'string' },
    profile: { type: 'string' },
    'saegate-args': { type: 'string' },
    'model-args': { type: 'string' },
    'perf-map': { type: 'boolean' },
    'sae-arch': { type: 'string' },
    'sae-dir': { type: 'string' },
    'guard-above': { type: 'string' },
    'guarded-every': { type: 'string' },
    unix: { type: 'boolean' },
    'late-guard': { type: 'boolean' },
  },
});
/** A trained SAE (a SAELens directory for stories260K) instead of the seeded one; stories only. */
const saeDirArg = values['sae-dir'] === undefined ? null : path.resolve(values['sae-dir']);
/** The guard flag's threshold (`above`); default: 0 on the seeded TopK SAE, 2.5 otherwise. */
const guardAbove = values['guard-above'] === undefined ? null : Number(values['guard-above']);
if (guardAbove !== null && !Number.isFinite(guardAbove)) throw new Error(`--guard-above: a number, got ${values['guard-above']}`);
/** The seeded SAE's architecture: TopK (default), or JumpReLU with about the same L0 (see `seededSae`). */
const saeArch = values['sae-arch'] ?? 'topk';
if (saeArch !== 'topk' && saeArch !== 'jumprelu') throw new Error(`--sae-arch: topk or jumprelu, got ${saeArch}`);
/** Extra flags for every tapped `saegate model serve` (for example `--tap-flush-ms 5`), split on spaces. */
const extraModelArgs = values['model-args']?.split(' ').filter((a) => a !== '') ?? [];
/** Extra flags for every `saegate serve` (for example `--sae-max-delay-ms 8`), split on spaces. */
const extraSaegateArgs = values['saegate-args']?.split(' ').filter((a) => a !== '') ?? [];
const quick = values.quick === true;
const rounds = Number(values.rounds ?? (quick ? 1 : 3));
const roundSeconds = Number(values.seconds ?? (quick ? 2 : 5));
const streamCounts = (values.streams ?? '1,8,32').split(',').map(Number);
const maxTokens = Number(values.tokens ?? 128);
const profileDir = values.profile === undefined ? null : path.resolve(values.profile);

const ARMS = ['direct', 'proxy', 'saegate', 'saegate+sae', 'saegate+sae+drift', 'saegate+sae+monitor', 'saegate+sae+scoped'] as const;
type ArmName = (typeof ARMS)[number];
/** The arms that run an SAE. */
const hasSae = (name: ArmName): boolean => name === 'saegate+sae' || name === 'saegate+sae+drift' || name === 'saegate+sae+monitor' || name === 'saegate+sae+scoped';
/** The arms with the conditional policy (on every request, or on one in `GUARDED_EVERY`). */
const hasPolicy = (name: ArmName): boolean => name === 'saegate+sae+monitor' || name === 'saegate+sae+scoped';
/** Every this many completions, one carries `x-bench-guarded: 1` (the scoped arm's policy matches those); `--guarded-every`, default 4. */
const GUARDED_EVERY = Number(values['guarded-every'] ?? 4);
if (!Number.isInteger(GUARDED_EVERY) || GUARDED_EVERY < 1) throw new Error(`--guarded-every: a positive integer, got ${values['guarded-every']}`);
/** With `--unix`, saegate reaches its model server over a Unix socket (model serve --unix, serve --upstream-socket). */
const unixUpstream = values.unix === true;
/** An arm to run: its path, and the hop between saegate and the model server. */
interface ArmSpec {
  name: ArmName;
  /** saegate reaches the model server on a Unix socket (never for `direct`). */
  unix: boolean;
  /** How tables and ledgers name it: `name`, with `@unix` on a socket. */
  label: string;
}
const armSpecs: ArmSpec[] = (values.arms?.split(',') ?? [...ARMS]).map((entry) => {
  const [name, hop] = entry.split('@') as [ArmName, string | undefined];
  if (!ARMS.includes(name)) throw new Error(`unknown arm ${name}; arms: ${ARMS.join(', ')}`);
  if (hop !== undefined && hop !== 'unix' && hop !== 'tcp') throw new Error(`arm ${entry}: the hop after @ is unix or tcp`);
  const unix = name !== 'direct' && (hop === undefined ? unixUpstream : hop === 'unix');
  return { name, unix, label: unix ? `${name}@unix` : name };
});
for (const [i, a] of armSpecs.entries()) if (armSpecs.findIndex((b) => b.label === a.label) !== i) throw new Error(`arm ${a.label} is listed twice`);
if (!armSpecs.some((a) => a.name === 'direct')) armSpecs.unshift({ name: 'direct', unix: false, label: 'direct' });

const repo = fileURLToPath(new URL('../../', import.meta.url));
const main = path.join(repo, 'src/cli/main.ts');
const cores = os.availableParallelism();
const pin = cores >= 2;
const MODEL_CORE = '0';
const SAEGATE_CORE = '1';

interface ModelCase {
  name: string;
  /** `--model` value. */
  spec: string;
  hook: string;
  dIn: number;
  dSae: number;
  k: number;
}

const models: ModelCase[] = [];
const wanted = new Set((values.models ?? 'stories,synthetic').split(','));
if (wanted.has('stories')) {
  if (hasSharedModels) models.push({ name: 'stories260K', spec: stories260K.model, hook: 'blocks.3.hook_resid_post', dIn: 64, dSae: 1024, k: 32 });
  else process.stdout.write('stories260K not found under ../shared/models: synthetic model only\n');
}
if (wanted.has('synthetic')) models.push({ name: 'synthetic 512×8', spec: 'synthetic:dim=512,layers=8,heads=8,kv=8,hidden=1376,vocab=4096,ctx=512,seed=1', hook: 'blocks.4.hook_resid_post', dIn: 512, dSae: 8192, k: 64 });

// ---------------------------------------------------------------------------------------------
// Processes

interface Proc {
  name: string;
  child: ChildProcess;
  out: () => string;
  exited: Promise<number | null>;
}
const procs: Proc[] = [];

function startProc(name: string, core: string, args: string[]): Proc {
  const nodeArgs = ['--import', 'tsx'];
  // For `perf record`: JIT-compiled functions get names in /tmp/perf-PID.map.
  if (values['perf-map'] === true) nodeArgs.push('--perf-basic-prof');
  if (profileDir !== null) {
    const dir = path.join(profileDir, name.replace(/[^a-zA-Z0-9.+-]+/g, '_'));
    fs.mkdirSync(dir, { recursive: true });
    nodeArgs.push('--cpu-prof', '--cpu-prof-dir', dir);
  }
  const command = pin ? 'taskset' : process.execPath;
  const full = pin ? ['-c', core, process.execPath, ...nodeArgs, main, ...args] : [...nodeArgs, main, ...args];
  // taskset execs node: the child's pid is node's, which /proc is read for.
  const child = spawn(command, full, { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const proc = { name, child, out: () => out, exited };
  process.stderr.write(`${name}: pid ${child.pid}\n`);
  procs.push(proc);
  return proc;
}

/** Waits for `check` (test/helpers/wait.ts), failing at once with its output when `proc` exits first. */
function waitUntil(what: string, check: () => Promise<boolean> | boolean, proc: Proc, deadlineMs = 120_000): Promise<void> {
  return waitFor(
    what,
    async () => {
      if (proc.child.exitCode !== null) throw new Error(`${proc.name} exited before ${what}:\n${proc.out().slice(-3000)}`);
      return check();
    },
    { deadlineMs, intervalMs: 50, observed: () => proc.out().slice(-3000) },
  );
}

async function status(url: string): Promise<number> {
  try {
    const res = await request(url);
    await res.body.dump();
    return res.statusCode;
  } catch {
    return 0;
  }
}

async function stopAll(): Promise<void> {
  for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGINT');
  const stopped = Promise.all(procs.map((p) => p.exited));
  const timer = setTimeout(() => procs.forEach((p) => p.child.exitCode === null && p.child.kill('SIGKILL')), 20_000);
  await stopped;
  clearTimeout(timer);
}
process.on('exit', () => procs.forEach((p) => p.child.exitCode === null && p.child.kill('SIGKILL')));

/** One thread's counters so far: on-CPU ns (schedstat), kernel-mode clock ticks (stat), context switches (status). */
interface ThreadCounters {
  ns: number;
  sysTicks: number;
  switches: number;
}

/** Counters of every thread of `pid`, by TID, from /proc/PID/task/TID/{schedstat,stat,status}. */
function threadCounters(pid: number): Map<number, ThreadCounters> {
  const out = new Map<number, ThreadCounters>();
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    const dir = `/proc/${pid}/task/${tid}`;
    try {
      const ns = Number(fs.readFileSync(`${dir}/schedstat`, 'utf8').split(' ')[0]);
      // stat: "pid (comm) state …"; after the comm, field 15 of the line (stime) is the 13th.
      const stat = fs.readFileSync(`${dir}/stat`, 'utf8');
      const sysTicks = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[12]);
      const status = fs.readFileSync(`${dir}/status`, 'utf8');
      const switches = [...status.matchAll(/ctxt_switches:\s+(\d+)/g)].reduce((n, m) => n + Number(m[1]), 0);
      out.set(Number(tid), { ns, sysTicks, switches });
    } catch {
      // the thread exited between the listing and the read
    }
  }
  return out;
}

/**
 * What `pid` spent between two `threadCounters` readings: CPU ns of every thread, of the main
 * thread (TID = PID: the event loop) and of the busiest other thread (in a model server, the
 * decode worker); kernel-mode ns (from clock ticks, so coarse); context switches.
 */
interface CpuSplit {
  all: number;
  main: number;
  busiestOther: number;
  sys: number;
  switches: number;
}
const NS_PER_TICK = 1e9 / Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
function cpuBetween(pid: number, before: Map<number, ThreadCounters>, after: Map<number, ThreadCounters>): CpuSplit {
  const split: CpuSplit = { all: 0, main: 0, busiestOther: 0, sys: 0, switches: 0 };
  for (const [tid, now] of after) {
    const was = before.get(tid) ?? { ns: 0, sysTicks: 0, switches: 0 };
    const d = now.ns - was.ns;
    split.all += d;
    split.sys += (now.sysTicks - was.sysTicks) * NS_PER_TICK;
    split.switches += now.switches - was.switches;
    if (tid === pid) split.main = d;
    else split.busiestOther = Math.max(split.busiestOther, d);
  }
  return split;
}
const NO_CPU: CpuSplit = { all: 0, main: 0, busiestOther: 0, sys: 0, switches: 0 };

// ---------------------------------------------------------------------------------------------
// Set-up per model

/**
 * A seeded SAE for the model case: TopK (k of the case), or with `--sae-arch jumprelu` a JumpReLU
 * SAE with the same weights, inputs rescaled to norm √d_in (`constant_norm_rescale`) and one
 * threshold for every feature, set so that about k features fire per row: with W_enc uniform in
 * ±1/√d_in, a rescaled row's pre-activations spread over the features as a normal of variance 1/3
 * whatever the row, so the threshold is that normal's (1 − k/d_sae) quantile.
 */
function seededSae(m: ModelCase, seed: number): SaeWeights {
  const options = { dIn: m.dIn, dSae: m.dSae, hook: m.hook, seed, scales: { W_enc: 2 / Math.sqrt(m.dIn), b_enc: 0.01, W_dec: 2 / Math.sqrt(m.dSae), b_dec: 0.01 } };
  if (saeArch === 'topk') return seededTopKSae({ ...options, k: m.k });
  const sae = seededStandardSae(options);
  const threshold = Math.sqrt(1 / 3) * normalQuantile(1 - m.k / m.dSae);
  return { ...sae, config: { ...sae.config, architecture: 'jumprelu', normalizeActivations: 'constant_norm_rescale' }, threshold: new Float32Array(m.dSae).fill(threshold) };
}

/** Writes the bench SAE as a SAELens directory: TopK through the trainer's writer, JumpReLU here (with its `threshold`). */
function writeSaeDirectory(dir: string, sae: SaeWeights): void {
  if (sae.config.architecture === 'topk') {
    writeSaeLensDirectory(dir, sae);
    return;
  }
  const { dIn, dSae, hookName } = sae.config;
  fs.mkdirSync(dir, { recursive: true });
  const cfg = { architecture: 'jumprelu', d_in: dIn, d_sae: dSae, dtype: 'float32', hook_name: hookName, apply_b_dec_to_input: sae.config.applyBDecToInput, normalize_activations: sae.config.normalizeActivations };
  fs.writeFileSync(path.join(dir, 'cfg.json'), `${JSON.stringify(cfg)}\n`);
  writeSafetensors(path.join(dir, 'sae_weights.safetensors'), {
    W_enc: { dtype: 'F32', shape: [dIn, dSae], data: sae.W_enc },
    b_enc: { dtype: 'F32', shape: [dSae], data: sae.b_enc },
    W_dec: { dtype: 'F32', shape: [dSae, dIn], data: sae.W_dec },
    b_dec: { dtype: 'F32', shape: [dIn], data: sae.b_dec },
    threshold: { dtype: 'F32', shape: [dSae], data: sae.threshold ?? new Float32Array(dSae) },
  });
}

/** The standard normal's quantile at p (bisection on erf's complement; plenty for a threshold). */
function normalQuantile(p: number): number {
  const cdf = (z: number): number => {
    // Abramowitz–Stegun 7.1.26 for erf, |error| < 1.5e-7.
    const x = Math.abs(z) / Math.SQRT2;
    const t = 1 / (1 + 0.3275911 * x);
    const erf = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-x * x);
    return z >= 0 ? (1 + erf) / 2 : (1 - erf) / 2;
  };
  let lo = -10;
  let hi = 10;
  for (let i = 0; i < 80; i++) {
    const mid = (lo + hi) / 2;
    if (cdf(mid) < p) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

const prompts = ['happy.txt', 'sad.txt', 'control.txt'].flatMap((file) =>
  fs
    .readFileSync(path.join(repo, 'examples/prompts', file), 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '' && !l.startsWith('#')),
);

interface Arm {
  name: ArmName;
  /** `name`, with `@unix` when saegate reaches its model server on a Unix socket. */
  label: string;
  model: Proc;
  saegate: Proc | null;
  /** Base URL the load goes to. */
  url: string;
  /** saegate's base URL (metrics), when there is one. */
  saegateUrl: string | null;
  /** The model server's base URL (/healthz: its engine's counters). */
  modelUrl: string;
  /** The Unix socket the model server listens on (`--unix`), or null on TCP. */
  modelSocket: string | null;
}

/** GET `path` from an arm's model server (TCP or its Unix socket). */
async function modelGet(arm: Pick<Arm, 'modelUrl' | 'modelSocket'>, path: string): Promise<unknown> {
  const dispatcher = arm.modelSocket === null ? undefined : new Agent({ connect: { socketPath: arm.modelSocket } });
  try {
    return await (await request(`${arm.modelUrl}${path}`, { dispatcher })).body.json();
  } finally {
    await dispatcher?.close();
  }
}

const MODEL_NAME = 'bench';

async function startModelServer(m: ModelCase, arm: ArmName, tapUrl: string | null): Promise<{ proc: Proc; url: string }> {
  const port = await freePort();
  const args = ['model', 'serve', '--model', m.spec, '--name', MODEL_NAME, '--port', String(port), '--max-batch', '32', '--threads', '1'];
  if (tapUrl !== null) args.push('--tap', tapUrl);
  const proc = startProc(`${m.name} model ${arm}`, MODEL_CORE, args);
  const url = `http://127.0.0.1:${port}`;
  await waitUntil(`${proc.name} listening`, async () => (await status(`${url}/v1/models`)) === 200, proc);
  return { proc, url };
}

/** µs per row of raw onnxruntime on the SAE's encoder graph at batch 256 (one thread, f32 rows). */
async function rawSaeMicrosPerRow(sae: SaeWeights): Promise<number> {
  const ort = await loadOrt();
  const session = await createSession(buildSaeEncoderGraph(sae), { device: 'cpu', intraOpThreads: 1, spinning: false });
  const batch = 256;
  const u = seededUniform(5);
  const rows = Float32Array.from({ length: batch * sae.config.dIn }, () => u() - 0.5);
  const feeds = { [SaeEncoderNames.input]: new ort.Tensor('float32', rows, [batch, sae.config.dIn]) };
  const outputs = [...saeEncoderOutputNames];
  for (let i = 0; i < 3; i++) await session.run(feeds, outputs);
  let runs = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < 1000) {
    await session.run(feeds, outputs);
    runs++;
  }
  const us = ((performance.now() - t0) * 1000) / (runs * batch);
  await session.release();
  return us;
}

async function setUp(m: ModelCase, dir: string): Promise<Arm[]> {
  const saeDir = path.join(dir, 'bench');
  let sae: SaeWeights;
  if (saeDirArg !== null) {
    // The policies name an SAE by its directory: a copy named `bench`.
    fs.mkdirSync(saeDir, { recursive: true });
    for (const file of ['cfg.json', 'sae_weights.safetensors']) fs.copyFileSync(path.join(saeDirArg, file), path.join(saeDir, file));
    sae = loadSae(saeDir);
    if (sae.config.dIn !== m.dIn) throw new Error(`--sae-dir: d_in ${sae.config.dIn} does not match ${m.name}'s ${m.dIn}`);
  } else {
    sae = seededSae(m, 11);
    writeSaeDirectory(saeDir, sae);
  }
  saeLabel = saeDirArg !== null ? `trained ${sae.config.architecture}${sae.config.k !== null ? ` k ${sae.config.k}` : ''} ${sae.config.dIn} → ${sae.config.dSae} from ${saeDirArg}, at ${sae.config.hookName}` : `${m.dIn} → ${m.dSae} ${saeArch === 'topk' ? `TopK k ${m.k}` : `JumpReLU, about ${m.k} active`} at ${m.hook}`;
  rawMicrosPerRow = await rawSaeMicrosPerRow(sae);
  const watched = [1, 2, 3, 5, 8, 13, 21, 34];
  fs.writeFileSync(path.join(dir, 'watch.yaml'), `features:\n${watched.map((i) => `  - {sae: bench, index: ${i}, label: f${i}}\n`).join('')}`);
  const policyDir = path.join(dir, 'policies');
  fs.mkdirSync(policyDir, { recursive: true });
  // A watched feature steers its own decoder direction down while it fires; another one flags:
  // when it is active on the TopK SAE (rarely), when it is far above its threshold on the JumpReLU
  // one (a guard that practically never fires, the usual case for a safety rule).
  const flagAbove = guardAbove ?? (saeArch === 'topk' && saeDirArg === null ? 0 : 2.5);
  fs.writeFileSync(
    path.join(policyDir, 'bench.yaml'),
    [
      'apiVersion: saegate/v1',
      'kind: Policy',
      'metadata: {name: bench-conditional}',
      'spec:',
      '  actions:',
      `    - monitor: {sae: bench, features: [{index: ${watched[0]}}, {index: ${watched[1]}}]}`,
      '    - steer:',
      `        vector: sae:bench#${watched[0]}`,
      '        scale: -0.5',
      `        when: {feature: {sae: bench, index: ${watched[0]}, above: 0}}`,
      `    - flag: {name: bench-flag, when: {feature: {sae: bench, index: ${watched[1]}, above: ${flagAbove}}}${values['late-guard'] === true ? ', inResponse: false' : ''}}`,
      '',
    ].join('\n'),
  );
  // The scoped arm's copy matches guarded requests only.
  const scopedDir = path.join(dir, 'policies-scoped');
  fs.mkdirSync(scopedDir, { recursive: true });
  const policyText = fs.readFileSync(path.join(policyDir, 'bench.yaml'), 'utf8');
  fs.writeFileSync(path.join(scopedDir, 'bench.yaml'), policyText.replace('spec:\n', 'spec:\n  match: {headers: {x-bench-guarded: ["1"]}}\n'));
  const corpus = path.join(dir, 'corpus.jsonl');
  fs.writeFileSync(corpus, prompts.map((text, id) => `${JSON.stringify({ id, text })}\n`).join(''));
  const baseline = path.join(dir, 'baseline.json');
  execFileSync(process.execPath, ['--import', 'tsx', main, 'baseline', 'record', '--sae', saeDir, '--corpus', corpus, '--model', m.spec, '--out', baseline], { cwd: repo, stdio: ['ignore', 'ignore', 'pipe'] });

  const arms: Arm[] = [];
  for (const { name, unix, label } of armSpecs) {
    if (name === 'direct') {
      const { proc, url } = await startModelServer(m, name, null);
      arms.push({ name, label, model: proc, saegate: null, url, saegateUrl: null, modelUrl: url, modelSocket: null });
      continue;
    }
    const upstreamPort = await freePort();
    const modelSocket = unix ? path.join(dir, `model-${label.replace(/[+@]/g, '-')}.sock`) : null;
    const upstreamArgs = modelSocket === null ? ['--upstream', `http://127.0.0.1:${upstreamPort}`] : ['--upstream', 'http://localhost', '--upstream-socket', modelSocket];
    const args = ['serve', ...upstreamArgs, '--port', '0', ...(name === 'proxy' ? [] : ['--require-tap']), ...extraSaegateArgs];
    if (hasSae(name)) args.push('--sae', saeDir);
    if (name === 'saegate+sae+drift' || hasPolicy(name)) args.push('--baseline', baseline, '--watch', path.join(dir, 'watch.yaml'));
    if (hasPolicy(name)) args.push('--policies', name === 'saegate+sae+scoped' ? scopedDir : policyDir);
    const saegate = startProc(`${m.name} saegate ${label}`, SAEGATE_CORE, args);
    let apiUrl = '';
    let tapUrl = '';
    await waitUntil(`${saegate.name} printing its URLs`, () => {
      const api = /OpenAI API\s+(http:\/\/\S+)\/v1/.exec(saegate.out());
      const tap = /tap\s+(ws:\/\/\S+)/.exec(saegate.out());
      if (api && tap) [apiUrl, tapUrl] = [api[1], tap[1]];
      return api !== null && tap !== null;
    }, saegate);
    // The model server takes the port saegate forwards to (freePort: free a moment ago).
    const modelPort = upstreamPort;
    const listenArgs = modelSocket === null ? ['--port', String(modelPort)] : ['--unix', modelSocket];
    const modelArgs = ['model', 'serve', '--model', m.spec, '--name', MODEL_NAME, ...listenArgs, '--max-batch', '32', '--threads', '1', ...(name === 'proxy' ? [] : ['--tap', tapUrl, ...extraModelArgs])];
    const model = startProc(`${m.name} model ${label}`, MODEL_CORE, modelArgs);
    await waitUntil(`${saegate.name} ready with its tap connected`, async () => (await status(`${apiUrl}/readyz`)) === 200, model);
    arms.push({ name, label, model, saegate, url: apiUrl, saegateUrl: apiUrl, modelUrl: modelSocket === null ? `http://127.0.0.1:${modelPort}` : 'http://localhost', modelSocket });
  }
  return arms;
}

// ---------------------------------------------------------------------------------------------
// Load

interface RoundResult {
  tokens: number;
  wallS: number;
  tpotMs: number[];
  /** Time to first token: request sent → first chunk with a choice. */
  ttftMs: number[];
  modelCpuNs: number;
  /** The model server's main thread (event loop: HTTP, tap bridge) and its decode worker. */
  modelMainNs: number;
  modelWorkerNs: number;
  /** The model server's kernel-mode CPU and context switches (every thread). */
  modelSysNs: number;
  modelSwitches: number;
  /** The model server's engine over the round: decode steps, and milliseconds inside onnxruntime. */
  decodeSteps: number;
  onnxMs: number;
  saegateCpuNs: number;
  /** saegate's main thread (event loop) alone. */
  saegateMainNs: number;
  rowsEncoded: number;
  /** Seconds saegate's SAE workers spent inside onnxruntime's run. */
  saeRunS: number;
  errors: number;
}

/** Completions sent so far (every `GUARDED_EVERY`th is guarded). */
let completionsSent = 0;

async function oneCompletion(agent: Agent, url: string, prompt: string): Promise<{ tokens: number; tpotMs: number | null; ttftMs: number | null }> {
  const sent = performance.now();
  const guarded = completionsSent++ % GUARDED_EVERY === 0;
  const res = await request(`${url}/v1/completions`, {
    method: 'POST',
    dispatcher: agent,
    headers: { 'content-type': 'application/json', ...(guarded && { 'x-bench-guarded': '1' }) },
    body: JSON.stringify({ model: MODEL_NAME, prompt, max_tokens: maxTokens, temperature: 0.8, stream: true, stream_options: { include_usage: true } }),
  });
  if (res.statusCode !== 200) {
    throw new Error(`${url}: HTTP ${res.statusCode}: ${await res.body.text()}`);
  }
  let buffer = '';
  let first = 0;
  let last = 0;
  let tokens = 0;
  for await (const piece of res.body) {
    const now = performance.now();
    buffer += (piece as Buffer).toString();
    let cut: number;
    while ((cut = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      if (!event.startsWith('data: ') || event === 'data: [DONE]') continue;
      const chunk = JSON.parse(event.slice(6)) as { choices?: { text?: string }[]; usage?: { completion_tokens: number } | null };
      if (chunk.usage) tokens = chunk.usage.completion_tokens;
      else if ((chunk.choices?.length ?? 0) > 0) {
        if (first === 0) first = now;
        last = now;
      }
    }
  }
  return { tokens, tpotMs: tokens > 1 && last > first ? (last - first) / (tokens - 1) : null, ttftMs: first > 0 ? first - sent : null };
}

async function scrape(url: string): Promise<Map<string, number>> {
  const res = await request(`${url}/metrics`);
  const text = await res.body.text();
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line === '') continue;
    const space = line.lastIndexOf(' ');
    const key = line.slice(0, space);
    out.set(key, Number(line.slice(space + 1)));
  }
  return out;
}

/** Sum of every series of `name` (all label sets). */
function total(metrics: Map<string, number>, name: string): number {
  let sum = 0;
  for (const [key, value] of metrics) if (key === name || key.startsWith(`${name}{`)) sum += value;
  return sum;
}

interface EngineCounters {
  decode_steps: number;
  onnxruntime_ms: number;
}

async function engineCounters(arm: Arm): Promise<EngineCounters> {
  return ((await modelGet(arm, '/healthz')) as { engine: EngineCounters }).engine;
}

async function runRound(arm: Arm, streams: number, seconds: number): Promise<RoundResult> {
  const agent = new Agent({ connections: streams, keepAliveTimeout: 30_000 });
  const before = arm.saegateUrl ? await scrape(arm.saegateUrl) : null;
  const engine0 = await engineCounters(arm);
  const model0 = threadCounters(arm.model.child.pid!);
  const sg0 = arm.saegate ? threadCounters(arm.saegate.child.pid!) : new Map<number, ThreadCounters>();
  const t0 = performance.now();
  const deadline = t0 + seconds * 1000;
  let tokens = 0;
  let errors = 0;
  const tpot: number[] = [];
  const ttft: number[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: streams }, async () => {
      while (performance.now() < deadline) {
        try {
          const r = await oneCompletion(agent, arm.url, prompts[next++ % prompts.length]);
          tokens += r.tokens;
          if (r.tpotMs !== null) tpot.push(r.tpotMs);
          if (r.ttftMs !== null) ttft.push(r.ttftMs);
        } catch (e) {
          errors++;
          if (errors === 1) process.stderr.write(`${arm.label}: ${(e as Error).message}\n`);
        }
      }
    }),
  );
  const wallS = (performance.now() - t0) / 1000;
  const model = cpuBetween(arm.model.child.pid!, model0, threadCounters(arm.model.child.pid!));
  const sg = arm.saegate ? cpuBetween(arm.saegate.child.pid!, sg0, threadCounters(arm.saegate.child.pid!)) : NO_CPU;
  const after = arm.saegateUrl ? await scrape(arm.saegateUrl) : null;
  const engine1 = await engineCounters(arm);
  await agent.close();
  const delta = (name: string): number => (before && after ? total(after, name) - total(before, name) : 0);
  return { tokens, wallS, tpotMs: tpot, ttftMs: ttft, modelCpuNs: model.all, modelMainNs: model.main, modelWorkerNs: model.busiestOther, modelSysNs: model.sys, modelSwitches: model.switches, decodeSteps: engine1.decode_steps - engine0.decode_steps, onnxMs: engine1.onnxruntime_ms - engine0.onnxruntime_ms, saegateCpuNs: sg.all, saegateMainNs: sg.main, rowsEncoded: delta('saegate_sae_rows_encoded_total'), saeRunS: delta('saegate_sae_run_seconds_total'), errors };
}

// ---------------------------------------------------------------------------------------------
// Report

/**
 * The median of per-round values with a distribution-free confidence interval from order
 * statistics: [x(k), x(n+1−k)] for the largest k whose coverage, 1 − 2·P(Binomial(n, ½) < k), is
 * at least 90% (with 3 to 5 rounds that is the range, ~75–94%; the coverage is printed with the
 * table). Rounds are paired within an arm's round, so the interval is about the ratio itself.
 */
function medianWithInterval(xs: number[], digits: number): string {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  const n = s.length;
  if (n < 3) return f(median(s), digits);
  const k = orderStatisticK(n);
  return `${f(median(s), digits)} [${f(s[k - 1], digits)}–${f(s[n - k], digits)}]`;
}
/** Largest k ≥ 1 with 1 − 2·P(Binomial(n, ½) ≤ k − 1) ≥ 0.9 (k = 1 when none reaches it). */
function orderStatisticK(n: number): number {
  let k = 1;
  for (let c = 2; c <= Math.floor(n / 2); c++) if (intervalCoverage(n, c) >= 0.9) k = c;
  return k;
}
function intervalCoverage(n: number, k: number): number {
  let below = 0;
  let binom = 1; // C(n, 0)
  for (let i = 0; i < k; i++) {
    below += binom / 2 ** n;
    binom = (binom * (n - i)) / (i + 1);
  }
  return 1 - 2 * below;
}
function quantile(xs: number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}
const f = (x: number, digits = 0): string => (Number.isFinite(x) ? x.toFixed(digits) : '–');

async function ledger(arm: Arm): Promise<string> {
  const url = arm.saegateUrl;
  if (!url) return '';
  // Rows of the last round may still wait in an open batch (up to --sae-monitor-delay-ms): the
  // ledger is read once nothing is queued or in flight at the SAE.
  let m = await scrape(url);
  if (hasSae(arm.name)) {
    await waitFor(`${arm.label}: SAE rows settled`, async () => {
      m = await scrape(url);
      return total(m, 'saegate_sae_queued_rows') === 0 && total(m, 'saegate_sae_rows_encoded_total') + total(m, 'saegate_sae_rows_dropped_total') + total(m, 'saegate_tap_rows_dropped_total') >= total(m, 'saegate_tap_rows_total');
    }, { deadlineMs: 5000, intervalMs: 50 }).catch(() => undefined);
  }
  const tapRows = total(m, 'saegate_tap_rows_total');
  const encoded = total(m, 'saegate_sae_rows_encoded_total');
  const drops: string[] = [];
  for (const name of ['saegate_tap_rows_dropped_total', 'saegate_sae_rows_dropped_total', 'saegate_monitor_rows_dropped_total']) {
    for (const [key, value] of m) if ((key === name || key.startsWith(`${name}{`)) && value > 0) drops.push(`${key} ${value}`);
  }
  const droppedSae = total(m, 'saegate_sae_rows_dropped_total') + total(m, 'saegate_tap_rows_dropped_total');
  const batches = total(m, 'saegate_sae_batches_total');
  const sae =
    arm.name === 'saegate' || arm.name === 'proxy'
      ? 'no SAE'
      : `encoded ${encoded} + dropped ${droppedSae} = ${encoded + droppedSae} ${encoded + droppedSae === tapRows ? '(balanced)' : '(NOT balanced)'} in ${batches} SAE batches (${f(encoded / batches, 1)} rows each, ${total(m, 'saegate_sae_urgent_batches_total')} on the short deadline)`;
  const steering = hasPolicy(arm.name)
    ? `; policy triggers ${total(m, 'saegate_policy_triggers_total')}, plan updates ${total(m, 'saegate_policy_plan_updates_total')}, plans ${total(m, 'saegate_steering_plans_total')}, own tap holds ${total(m, 'saegate_policy_tap_holds_total')}`
    : '';
  // The model server's writes to the tap over the whole run (warm-up included), per 1,000 tokens.
  const health = (await modelGet(arm, '/healthz')) as { engine: { generated_tokens: number }; tap?: { writes: number } };
  const writes = health.tap === undefined ? '' : `; model server tap writes ${health.tap.writes} (${f((1000 * health.tap.writes) / health.engine.generated_tokens, 1)} per 1,000 tokens)`;
  return `  ${arm.label}: tap rows ${tapRows}; ${sae}; drops: ${drops.length === 0 ? 'none' : drops.join(', ')}${steering}${writes}`;
}

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

/**
 * Self time per function over the measured rounds only: V8 stamps samples on the monotonic clock
 * `process.hrtime` reads (µs), the same in every process, so samples outside [from, to] (start-up,
 * module loading, warm-up, shutdown) are left out.
 */
function summariseProfiles(dir: string, from: number, to: number, top = 14): string {
  const lines: string[] = [];
  const label = (node: ProfileNode): string => {
    const { functionName, url, lineNumber } = node.callFrame;
    const where = url === '' ? '' : ` ${url.replace(/^file:\/\//, '').replace(repo, '').replace(/.*node_modules\//, 'node_modules/')}:${lineNumber + 1}`;
    return `${functionName || '(anonymous)'}${where}`;
  };
  for (const sub of fs.readdirSync(dir).sort()) {
    const files = fs.readdirSync(path.join(dir, sub)).filter((x) => x.endsWith('.cpuprofile'));
    for (const file of files) {
      const profile = JSON.parse(fs.readFileSync(path.join(dir, sub, file), 'utf8')) as CpuProfile;
      const byId = new Map(profile.nodes.map((n) => [n.id, n]));
      const parent = new Map<number, number>();
      for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
      const self = new Map<string, number>();
      // Inclusive time of the project's own functions (src/): every distinct one on the sample's stack.
      const inclusive = new Map<string, number>();
      let all = 0;
      let at = profile.startTime;
      for (let i = 0; i < profile.samples.length; i++) {
        const node = byId.get(profile.samples[i])!;
        const dt = profile.timeDeltas[i] ?? 0;
        at += dt;
        if (at < from || at > to) continue;
        const key = label(node);
        self.set(key, (self.get(key) ?? 0) + dt);
        all += dt;
        const seen = new Set<string>();
        for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
          const n = byId.get(id)!;
          if (!n.callFrame.url.includes('/src/')) continue;
          const k = label(n);
          if (seen.has(k)) continue;
          seen.add(k);
          inclusive.set(k, (inclusive.get(k) ?? 0) + dt);
        }
      }
      if (all === 0) continue;
      const idle = self.get('(idle)') ?? 0;
      const busy = all - idle;
      if (busy < 0.02 * all) continue;
      lines.push(`${sub}/${file}: ${f(all / 1e3)} ms of measured rounds, ${f(busy / 1e3)} ms busy`);
      self.delete('(idle)');
      lines.push('  self time (share of busy):');
      for (const [key, t] of [...self].sort((a, b) => b[1] - a[1]).slice(0, top)) lines.push(`    ${f((t / busy) * 100, 1).padStart(5)}%  ${key}`);
      lines.push('  inclusive time of src/ functions (share of busy):');
      for (const [key, t] of [...inclusive].sort((a, b) => b[1] - a[1]).slice(0, top)) lines.push(`    ${f((t / busy) * 100, 1).padStart(5)}%  ${key}`);
    }
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------

process.stdout.write(
  `e2e: ${rounds} round(s) × ${roundSeconds} s per arm and stream count; ${maxTokens}-token streaming completions at temperature 0.8; ` +
    `${pin ? `model servers on core ${MODEL_CORE}, saegate and the load generator on core ${SAEGATE_CORE}` : 'one core: no pinning'}` +
    `${armSpecs.some((a) => a.name === 'saegate+sae+scoped') ? `; the scoped arm's policy matches one completion in ${GUARDED_EVERY}` : ''}\n`,
);
if (pin) execFileSync('taskset', ['-a', '-p', '-c', SAEGATE_CORE, String(process.pid)], { stdio: 'ignore' });

let rawMicrosPerRow = NaN;
/** How the SAE of the model case being run is described in its table's title. */
let saeLabel = '';
let measuredFrom = Infinity;
let measuredTo = 0;
try {
  for (const m of models) {
    const dir = makeTempDir('saegate-e2e-');
    process.stderr.write(`${m.name}: starting processes…\n`);
    const arms = await setUp(m, dir);
    for (const arm of arms) for (const s of streamCounts) await runRound(arm, s, Math.min(1, roundSeconds)); // warm-up
    measuredFrom = Math.min(measuredFrom, Number(process.hrtime.bigint() / 1000n));
    const results = new Map<string, RoundResult[]>();
    for (let r = 0; r < rounds; r++) {
      for (const s of streamCounts) {
        for (let i = 0; i < arms.length; i++) {
          const arm = arms[(i + r) % arms.length];
          process.stderr.write(`${m.name}: round ${r + 1}/${rounds}, ${s} stream(s), ${arm.label}\n`);
          const result = await runRound(arm, s, roundSeconds);
          const key = `${s}|${arm.label}`;
          results.set(key, [...(results.get(key) ?? []), result]);
        }
      }
    }
    measuredTo = Number(process.hrtime.bigint() / 1000n);
    const lines = [
      `\n## ${m.name} (SAE ${saeLabel}; raw onnxruntime ${f(rawMicrosPerRow, 2)} µs/row at batch 256)\n`,
      '| streams | path | tok/s | × direct | TTFT p50 ms | TPOT p50 ms | TPOT p99 ms | model CPU-µs/tok | of it, loop / worker / kernel | switches/tok | tok/step | onnxruntime µs/tok | × direct | × proxy | saegate CPU-µs/tok | rows/tok | saegate µs/row | beyond SAE | event loop µs/row | SAE run µs/row | errors |',
      '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
    ];
    for (const s of streamCounts) {
      const direct = results.get(`${s}|direct`)!;
      /** The rounds of arm `name` on `arm`'s own hop, else on the other one, else undefined. */
      const sameHop = (arm: Arm, name: ArmName): RoundResult[] | undefined => {
        const own = arm.modelSocket !== null ? `${name}@unix` : name;
        return results.get(`${s}|${own}`) ?? results.get(`${s}|${own === name ? `${name}@unix` : name}`);
      };
      for (const arm of arms) {
        const noSae = sameHop(arm, 'saegate');
        const rs = results.get(`${s}|${arm.label}`)!;
        const tps = rs.map((x) => x.tokens / x.wallS);
        const ratio = rs.map((x, i) => x.tokens / x.wallS / (direct[i].tokens / direct[i].wallS));
        const modelCpu = rs.map((x) => x.modelCpuNs / 1e3 / x.tokens);
        const modelMain = rs.map((x) => x.modelMainNs / 1e3 / x.tokens);
        const modelWorker = rs.map((x) => x.modelWorkerNs / 1e3 / x.tokens);
        const modelSys = rs.map((x) => x.modelSysNs / 1e3 / x.tokens);
        const modelSwitches = rs.map((x) => x.modelSwitches / x.tokens);
        const tokPerStep = rs.map((x) => x.tokens / x.decodeSteps);
        const onnxPerTok = rs.map((x) => (x.onnxMs * 1e3) / x.tokens);
        const modelRatio = rs.map((x, i) => x.modelCpuNs / x.tokens / (direct[i].modelCpuNs / direct[i].tokens));
        const sgCpu = rs.map((x) => x.saegateCpuNs / 1e3 / x.tokens);
        const rowsPerToken = rs.map((x) => x.rowsEncoded / x.tokens);
        const perRow = rs.map((x, i) => (x.rowsEncoded > 0 && noSae ? ((x.saegateCpuNs / x.tokens - noSae[i].saegateCpuNs / noSae[i].tokens) * x.tokens) / 1e3 / x.rowsEncoded : NaN));
        const mainPerRow = rs.map((x, i) => (x.rowsEncoded > 0 && noSae ? ((x.saegateMainNs / x.tokens - noSae[i].saegateMainNs / noSae[i].tokens) * x.tokens) / 1e3 / x.rowsEncoded : NaN));
        const runPerRow = rs.map((x) => (x.rowsEncoded > 0 ? (x.saeRunS * 1e6) / x.rowsEncoded : NaN));
        const proxy = sameHop(arm, 'proxy');
        const proxyRatio = rs.map((x, i) => (proxy ? x.modelCpuNs / x.tokens / (proxy[i].modelCpuNs / proxy[i].tokens) : NaN));
        const tpot = rs.flatMap((x) => x.tpotMs);
        const ttft = rs.flatMap((x) => x.ttftMs);
        const sae = hasSae(arm.name);
        lines.push(
          `| ${s} | ${arm.label} | ${f(median(tps))} | ${medianWithInterval(ratio, 2)} | ${f(quantile(ttft, 0.5), 2)} | ${f(quantile(tpot, 0.5), 2)} | ${f(quantile(tpot, 0.99), 2)} | ${f(median(modelCpu))} | ${f(median(modelMain))} / ${f(median(modelWorker))} / ${f(median(modelSys))} | ${f(median(modelSwitches), 2)} | ${f(median(tokPerStep), 2)} | ${f(median(onnxPerTok))} | ${medianWithInterval(modelRatio, 2)} | ${medianWithInterval(proxyRatio, 2)} | ${arm.saegate ? f(median(sgCpu)) : '–'} | ${sae ? f(median(rowsPerToken), 2) : '–'} | ${sae ? f(median(perRow), 1) : '–'} | ${sae ? f(median(perRow) - rawMicrosPerRow, 1) : '–'} | ${sae ? f(median(mainPerRow), 1) : '–'} | ${sae ? f(median(runPerRow), 1) : '–'} | ${rs.reduce((a, x) => a + x.errors, 0)} |`,
        );
      }
    }
    const k = orderStatisticK(rounds);
    if (rounds >= 3) lines.push('', `Ratios: median over ${rounds} rounds [x(${k})–x(${rounds + 1 - k})], a distribution-free interval for the median covering ${f(intervalCoverage(rounds, k) * 100, 1)}%.`);
    lines.push('', 'Row ledger (tap rows = encoded + dropped):');
    for (const arm of arms) if (arm.saegate) lines.push(await ledger(arm));
    process.stdout.write(`${lines.join('\n')}\n`);
    await stopAll();
    procs.length = 0;
    fs.rmSync(dir, { recursive: true, force: true });
  }
} finally {
  await stopAll();
}
if (profileDir !== null) process.stdout.write(`\n## CPU profiles (${profileDir})\n${summariseProfiles(profileDir, measuredFrom, measuredTo)}\n`);
