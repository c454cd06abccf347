/**
 * `saegate eval steer`: what a steering setting does to a target behaviour, a retain set and
 * control text (docs/steering.md, "Evaluating steering"). The logic is in src/lab/eval/; this file
 * parses flags, starts the reference model server in-process (or points at --upstream), runs the
 * unsteered arm once and one steered arm per setting, and writes the reports.
 *
 * Steering travels in the request body's `steering` field (direct mode), so no tap is needed and
 * any server that takes that field works with --upstream. A condition (--when-projection-above)
 * reads the in-process engine's residual rows on the unsteered pass, so it needs the in-process
 * model.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { z } from 'zod';
import { err } from '../common/errors.js';
import { writeTextAtomically } from '../common/json-file.js';
import { custom, decimal, integer, oneOf, parseCommand, text, type CommandSpec } from '../common/options.js';
import { readCorpus, type CorpusDocument } from '../lab/corpus/read.js';
import { loadBehaviour } from '../lab/eval/behaviour.js';
import { EvalClient, type SteeringEntry } from '../lab/eval/client.js';
import { ProjectionTrace, type ProjectionCondition } from '../lab/eval/condition.js';
import { readPolicySteer } from '../lab/eval/policy.js';
import { markdownReport, roundedResult, sweepPoints, tableLines, type EvalReport } from '../lab/eval/report.js';
import { compareArms, runArm, type ArmResult, type EvalPlan } from '../lab/eval/steer.js';
import { bestSetting, sweepSchema, sweepSettings, type Setting, type SettingResult } from '../lab/eval/sweep.js';
import { loadModel } from '../model/load.js';
import { startModelServer, type ModelServer } from '../model/server.js';
import { readVectorFile } from '../steering/formats.js';
import { defaultModel } from './default-model.js';
import { StatusLine } from './status-line.js';

const SETS = 'Prompt sets and behaviour';
const STEERING = 'Steering';
const SAMPLING = 'Sampling';
const MODEL = 'Model';

const evalSteerOptions = {
  prompts: { type: text('FILE'), group: SETS, required: true, help: 'prompts where the behaviour should change: text (prompts separated by blank lines) or JSONL (docs/corpus.md)' },
  control: { type: text('FILE'), group: SETS, help: 'control texts: cross-entropy and greedy continuations with and without steering' },
  retain: { type: text('FILE'), group: SETS, help: 'prompts where the behaviour must stay (its rate must not fall)' },
  behaviour: { type: text('FILE'), group: SETS, defaultText: 'refusal phrases', help: 'phrases and /regular expressions/, one per line, that mark the behaviour in a completion' },
  vector: { type: text('FILE'), group: STEERING, help: 'steering vector file (.safetensors, .json or .gguf); this or --policies' },
  policies: { type: text('DIR'), group: STEERING, help: 'instead of --vector/--hook/--scale: a policy directory or file holding one policy with one steer of one hook, unconditional or with a projection condition (docs/policies.md)' },
  hook: { type: text('H'), group: STEERING, help: "the vector's hook point to apply (needed without --sweep; default: the vector's only hook)" },
  scale: { type: decimal({}, 'X'), group: STEERING, help: 'scale the vector is added at; a negative one steers away (write it --scale=-0.5); needed without --sweep' },
  sweep: { type: custom(sweepSchema, 'layers=L[,L…],scales=X[,X…]', 'layers=…,scales=…'), group: STEERING, help: 'every layer (blocks.L.hook_resid_post) at every scale, instead of --hook/--scale' },
  positions: { type: oneOf(['all', 'prompt', 'generated']), group: STEERING, default: 'all', help: 'token positions steered' },
  whenProjectionAbove: { type: decimal({}, 'X'), group: STEERING, help: "conditional: steer each completion and control text only from the position after the projection onto the setting's vector (⟨x, v⟩/‖v‖ at its hook) first exceeded X on the unsteered pass (in-process model only)" },
  forTokens: { type: integer(1, 10_000), group: STEERING, default: 1, help: 'with --when-projection-above: consecutive positions above X before it fires' },
  ceBudget: { type: decimal({ min: 0 }, 'NATS'), group: STEERING, default: 0.1, help: 'control ΔCE allowed when naming the best setting' },
  samples: { type: integer(1, 10_000), group: SAMPLING, default: 4, help: 'completions per prompt' },
  seed: { type: integer(0, 2 ** 31 - 1), group: SAMPLING, default: 0, help: 'completion j of prompt i samples with seed + i·samples + j, in both arms' },
  maxTokens: { type: integer(1), group: SAMPLING, default: 32, help: 'most tokens per completion' },
  temperature: { type: decimal({ min: 0, max: 2 }, 'T'), group: SAMPLING, default: 1, help: 'sampling temperature (0 = greedy)' },
  continuationTokens: { type: integer(1), group: SAMPLING, default: 16, help: "tokens of each control text's greedy continuation" },
  out: { type: text('DIR'), required: true, help: 'directory for report.json, report.md, samples.jsonl (and sweep.json)' },
  model: { type: text('FILE|DIR'), group: MODEL, defaultText: 'as for demo', help: 'model run in-process ($SAEGATE_DEMO_MODEL, else ../shared/models/stories260K, else a seeded synthetic model)' },
  tokenizer: { type: text('FILE'), group: MODEL, defaultText: 'beside the model', help: 'tokenizer file' },
  upstream: { type: custom(z.url(), 'a URL', 'URL'), group: MODEL, help: 'a running reference model server (or any server taking the steering field) instead' },
  concurrency: { type: integer(1, 1024), group: MODEL, default: 8, help: 'requests in flight at once' },
  threads: { type: integer(1), group: MODEL, defaultText: 'one per core', help: 'onnxruntime threads of the in-process model' },
} as const;

export const evalSteerCommand = {
  name: 'eval steer',
  synopsis: 'saegate eval steer --prompts FILE (--vector FILE (--hook H --scale X | --sweep layers=…,scales=…) [--when-projection-above X] | --policies DIR) --out DIR [options]',
  description:
    'Completes every prompt --samples times without and with the steering vector (sent in the\n' +
    "request's steering field), counts completions showing the behaviour (Wilson intervals), scores\n" +
    'the control texts (cross-entropy, greedy agreement) and the retain set, and writes JSON and\n' +
    'Markdown reports with the command, seeds and hashes. With --sweep: a trade-off table, sweep.json\n' +
    'and the best setting within --ce-budget. With --when-projection-above, each setting is evaluated\n' +
    'as a conditional policy: steering from the position after the trigger found on the unsteered\n' +
    'pass (exact for a causal model); --policies evaluates a policy file\'s steer the same way.\n' +
    'Deterministic under --seed.',
  options: evalSteerOptions,
  check: (f) => {
    if (f.model !== undefined && f.upstream !== undefined) return { option: 'upstream', message: 'give --model or --upstream, not both' };
    if (f.sweep !== undefined && (f.hook !== undefined || f.scale !== undefined)) return { option: 'sweep', message: 'give --sweep or --hook/--scale, not both' };
    if ((f.vector === undefined) === (f.policies === undefined)) return { option: 'vector', message: 'give --vector or --policies (one of them)' };
    if (f.policies !== undefined) {
      if (f.hook !== undefined || f.scale !== undefined || f.sweep !== undefined || f.whenProjectionAbove !== undefined || f.forTokens !== 1 || f.positions !== 'all') {
        return { option: 'policies', message: 'the policy gives the hook, scale, positions and condition: not with --hook, --scale, --sweep, --positions, --when-projection-above or --for-tokens' };
      }
      return undefined;
    }
    if (f.sweep === undefined && f.scale === undefined) return { option: 'scale', message: 'give --scale (or --sweep)' };
    if (f.whenProjectionAbove !== undefined && f.upstream !== undefined) return { option: 'whenProjectionAbove', message: "conditions read the in-process model's residual rows; not with --upstream" };
    if (f.whenProjectionAbove !== undefined && f.positions !== 'all') return { option: 'whenProjectionAbove', message: 'a condition decides the steered positions; leave --positions at all' };
    if (f.forTokens !== 1 && f.whenProjectionAbove === undefined) return { option: 'forTokens', message: 'only with --when-projection-above' };
    return undefined;
  },
} as const satisfies CommandSpec<typeof evalSteerOptions>;

function saegateVersion(): string {
  return (createRequire(import.meta.url)('../../package.json') as { version: string }).version;
}

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

async function readSet(file: string): Promise<CorpusDocument[]> {
  const documents = await readCorpus(file);
  if (documents.length === 0) throw err('SAEGATE_ERR_PROMPT_SET_EMPTY', file, 'read as text (prompts separated by blank lines) or JSONL with a text field (docs/corpus.md)');
  return documents;
}

/** What a run measured, for the command's callers (the benchmark reads the throughput). */
export interface EvalSteerResult {
  report: EvalReport;
  lines: string[];
  /** Completions generated over all arms, and the seconds they took. */
  generations: number;
  seconds: number;
}

/** Runs the command; returns the report and the lines to print on stdout. */
export async function evalSteer(argv: string[]): Promise<EvalSteerResult> {
  const flags = parseCommand(evalSteerCommand, argv);
  const behaviour = loadBehaviour(flags.behaviour);
  const [prompts, control, retain] = await Promise.all([readSet(flags.prompts), flags.control === undefined ? [] : readSet(flags.control), flags.retain === undefined ? [] : readSet(flags.retain)]);
  const steering = flags.policies === undefined ? vectorSteering(flags) : policySteering(flags.policies);
  if (steering.condition !== null && flags.upstream !== undefined) throw err('SAEGATE_ERR_CLI_USAGE', "--upstream: conditions read the in-process model's residual rows; a conditional policy needs the in-process model");
  const { settings } = steering;

  let server: ModelServer | null = null;
  let modelName: string;
  let modelSha: string | null = null;
  if (flags.upstream === undefined) {
    const source = flags.model ?? defaultModel();
    const loaded = await loadModel({ model: source, tokenizer: flags.tokenizer });
    modelName = loaded.name;
    if (fs.existsSync(source) && fs.statSync(source).isFile()) modelSha = sha256(fs.readFileSync(source));
    server = await startModelServer({ model: source, loaded, port: 0, maxBatch: flags.concurrency, threads: flags.threads });
  } else {
    modelName = await upstreamModelName(flags.upstream);
  }

  const status = new StatusLine(process.stderr);
  const client = new EvalClient({ upstream: server?.url ?? flags.upstream!, model: modelName, connections: flags.concurrency });
  const plan = (label: string): EvalPlan => ({
    client,
    behaviour,
    prompts,
    control,
    retain,
    samples: flags.samples,
    seed: flags.seed,
    maxTokens: flags.maxTokens,
    temperature: flags.temperature,
    continuationTokens: flags.continuationTokens,
    concurrency: flags.concurrency,
    onProgress: (done, total) => status.draw(`${label}: ${done}/${total} requests`),
  });
  const { condition } = steering;
  // The unsteered pass records every setting's projections at once (one trace over their hooks).
  const trace = condition === null || server === null ? undefined : new ProjectionTrace(server.engine, condition.directions);
  const results: SettingResult[] = [];
  const samples: string[] = [];
  let generations = 0;
  let elapsedMs = 0;
  const record = (setting: string, arm: ArmResult): void => {
    generations += arm.generations;
    elapsedMs += arm.elapsedMs;
    for (const c of arm.completions) samples.push(JSON.stringify({ setting, set: c.set, id: c.id, sample: c.sample, match: c.match, text: c.text }));
  };
  try {
    const unsteered = await runArm(plan('unsteered'), [], 'unsteered', { trace });
    trace?.close();
    record('unsteered', unsteered);
    for (const [index, s] of settings.entries()) {
      const label = `${s.hook} × ${s.scale}`;
      const entry: SteeringEntry = { hook: s.hook, scale: s.scale, vector: steering.directions.get(s.hook)!, positions: steering.positions };
      const conditional = condition === null ? undefined : { condition, hook: condition.hook ?? s.hook, steerTokens: condition.steerTokens, unsteered };
      const steered = await runArm(plan(`setting ${index + 1}/${settings.length} ${label}`), [entry], `steered ${label}`, { conditional });
      record(label, steered);
      results.push(roundedResult({ ...s, ...compareArms(unsteered, steered, flags.seed, retain.length > 0) }));
    }
  } finally {
    status.clear();
    await client.close();
    await server?.close();
  }

  const best = bestSetting(results, flags.ceBudget);
  const report: EvalReport = {
    version: 1,
    command: ['eval', 'steer', ...argv].join(' '),
    seed: flags.seed,
    model: { name: modelName, sha256: modelSha },
    vector: steering.vector,
    policy: steering.policy,
    behaviour: { source: behaviour.source, patterns: behaviour.patterns },
    prompts: { file: flags.prompts, count: prompts.length },
    control: flags.control === undefined ? null : { file: flags.control, count: control.length },
    retain: flags.retain === undefined ? null : { file: flags.retain, count: retain.length },
    sampling: { samples: flags.samples, temperature: flags.temperature, maxTokens: flags.maxTokens, continuationTokens: flags.continuationTokens, positions: typeof steering.positions === 'string' ? steering.positions : JSON.stringify(steering.positions) },
    condition: condition === null ? null : { projectionAbove: condition.above, forTokens: condition.forTokens, hook: condition.hook, steerTokens: condition.steerTokens },
    saegateVersion: saegateVersion(),
    ceBudget: flags.ceBudget,
    results,
    best: best === null ? null : { hook: best.hook, scale: best.scale },
  };
  fs.mkdirSync(flags.out, { recursive: true });
  writeTextAtomically(path.join(flags.out, 'report.json'), `${JSON.stringify(report, null, 2)}\n`, 'SAEGATE_ERR_CONFIG');
  writeTextAtomically(path.join(flags.out, 'report.md'), markdownReport(report), 'SAEGATE_ERR_CONFIG');
  writeTextAtomically(path.join(flags.out, 'samples.jsonl'), `${samples.join('\n')}\n`, 'SAEGATE_ERR_CONFIG');
  if (flags.sweep !== undefined) writeTextAtomically(path.join(flags.out, 'sweep.json'), `${JSON.stringify(sweepPoints(report), null, 2)}\n`, 'SAEGATE_ERR_CONFIG');
  const seconds = elapsedMs / 1000;
  return {
    report,
    generations,
    seconds,
    lines: [
      ...tableLines(report),
      report.best === null ? `no setting within --ce-budget ${flags.ceBudget} nats` : `best within --ce-budget ${flags.ceBudget} nats: ${report.best.hook} at scale ${report.best.scale}`,
      `${generations} completions in ${seconds.toFixed(1)} s (${(generations / Math.max(seconds, 1e-9)).toFixed(1)}/s); reports in ${flags.out}`,
    ],
  };
}

type EvalSteerFlags = ReturnType<typeof parseCommand<typeof evalSteerOptions>>;

/** What the steered arms send, from --vector (and the setting flags) or from --policies. */
interface SteeringSource {
  settings: Setting[];
  /** The direction of each setting's hook. */
  directions: ReadonlyMap<string, Float32Array>;
  positions: SteeringEntry['positions'];
  /**
   * The projection condition: `directions` are traced on the unsteered pass; `hook` null = each
   * setting's own hook (and vector). null = unconditional.
   */
  condition: (ProjectionCondition & { hook: string | null; directions: ReadonlyMap<string, Float32Array>; steerTokens: number | null }) | null;
  vector: EvalReport['vector'];
  policy: EvalReport['policy'];
}

function vectorSteering(flags: EvalSteerFlags): SteeringSource {
  const file = flags.vector!;
  const vector = readVectorFile(file);
  let settings: Setting[];
  if (flags.sweep !== undefined) {
    settings = sweepSettings(flags.sweep);
  } else {
    const hooks = [...vector.hooks.keys()];
    const hook = flags.hook ?? (hooks.length === 1 ? hooks[0] : undefined);
    if (hook === undefined) throw err('SAEGATE_ERR_VECTOR_FILE', file, `it has directions at ${hooks.join(', ')}; pick one with --hook`);
    settings = [{ hook, scale: flags.scale! }];
  }
  for (const s of settings) {
    if (!vector.hooks.has(s.hook)) throw err('SAEGATE_ERR_VECTOR_FILE', file, `it has no direction at ${s.hook}; it has ${[...vector.hooks.keys()].join(', ')}`);
  }
  const directions = new Map(settings.map((s) => [s.hook, vector.hooks.get(s.hook)!]));
  return {
    settings,
    directions,
    positions: flags.positions,
    condition: flags.whenProjectionAbove === undefined ? null : { above: flags.whenProjectionAbove, forTokens: flags.forTokens, hook: null, directions, steerTokens: null },
    vector: { file, id: vector.id, sha256: sha256(fs.readFileSync(file)) },
    policy: null,
  };
}

function policySteering(target: string): SteeringSource {
  const steer = readPolicySteer(target);
  const hash = createHash('sha256');
  for (const file of steer.files) hash.update(fs.readFileSync(file));
  return {
    settings: [{ hook: steer.hook, scale: steer.scale }],
    directions: new Map([[steer.hook, steer.direction]]),
    positions: steer.positions,
    condition: steer.condition === null ? null : { above: steer.condition.above, forTokens: steer.condition.forTokens, hook: steer.condition.hook, directions: new Map([[steer.condition.hook, steer.condition.direction]]), steerTokens: steer.steerTokens },
    vector: { file: target, id: steer.vectorId, sha256: hash.digest('hex') },
    policy: { name: steer.policy, files: steer.files.map((f) => path.relative(process.cwd(), f)) },
  };
}

/** The first model id an upstream lists at /v1/models. */
async function upstreamModelName(upstream: string): Promise<string> {
  const url = new URL(upstream);
  url.pathname = `${url.pathname.replace(/\/+$/, '').replace(/\/v1$/, '')}/v1/models`;
  let body: unknown;
  try {
    const response = await fetch(url);
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    body = await response.json();
  } catch (error) {
    throw err('SAEGATE_ERR_EVAL_UPSTREAM', upstream, 'the model list (/v1/models)', (error as Error).message);
  }
  const parsed = z.object({ data: z.array(z.object({ id: z.string() })).min(1) }).safeParse(body);
  if (!parsed.success) throw err('SAEGATE_ERR_EVAL_UPSTREAM', upstream, 'the model list (/v1/models)', 'no model listed');
  return parsed.data.data[0].id;
}
