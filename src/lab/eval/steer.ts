/**
 * `eval steer`: the effect of a steering setting on a target behaviour, on a retain set and on
 * control text, each measured against the same model unsteered (docs/steering.md, "Evaluating
 * steering").
 *
 * - **Target.** Every prompt is completed `samples` times without and with steering; a
 *   completion shows the behaviour when the behaviour's patterns match it. The rate is over
 *   completions, with a Wilson interval.
 * - **Retain.** The same on prompts where the behaviour must stay; the setting fails the retain
 *   check when the steered rate's interval lies wholly below the unsteered rate.
 * - **Control.** Each control text's next-token cross-entropy (mean −log p per token, from the
 *   server's prompt log-probabilities) without and with steering; ΔCE is the mean of the per-text
 *   differences with a paired bootstrap interval. The control texts are steered at every position,
 *   whatever `positions` the setting uses. And the greedy continuation of each control text
 *   with and without steering: the fraction that are identical.
 *
 * - **Conditional** (`ArmOptions.conditional`, condition.ts): each request is steered only from the
 *   position after the setting's projection condition first held on the unsteered pass, the
 *   control CE included; requests where it never held keep their unsteered result.
 *
 * Completion j of prompt i samples with seed `seed + i·samples + j` in both arms, so the two arms
 * share their random numbers and differ only by the steering (common random numbers: the
 * difference is far less noisy than two independent draws). The unsteered arm is measured once
 * and shared by every setting of a sweep.
 */
import type { CorpusDocument } from '../corpus/read.js';
import type { Behaviour } from './behaviour.js';
import type { EvalClient, SteeringEntry } from './client.js';
import { firstTrigger, type ProjectionCondition, type ProjectionTrace, type Projections } from './condition.js';
import { pairedBootstrapMean, wilson, type Interval, type Rate } from './stats.js';

/** What `eval steer` measures with, shared by both arms. */
export interface EvalPlan {
  client: EvalClient;
  behaviour: Behaviour;
  prompts: readonly CorpusDocument[];
  control: readonly CorpusDocument[];
  /** Prompts where the behaviour must stay; empty = no retain check. */
  retain: readonly CorpusDocument[];
  /** Completions per prompt. */
  samples: number;
  seed: number;
  /** Most tokens per completion. */
  maxTokens: number;
  /** 0 = greedy (then `samples` > 1 repeats the same completion). */
  temperature: number;
  /** Tokens of each control text's greedy continuation. */
  continuationTokens: number;
  /** Requests in flight at once. */
  concurrency: number;
  /** Called after every request with the number done so far in this arm and the arm's total. */
  onProgress?: (done: number, total: number) => void;
}

/** One completion, as written to the samples file. */
export interface Completion {
  set: 'prompts' | 'retain';
  id: string;
  sample: number;
  text: string;
  match: boolean;
}

/** Everything one arm (steered or not) produced. */
export interface ArmResult {
  completions: Completion[];
  /** Per control text: mean −log p per predicted token (nats). */
  controlCe: number[];
  /** Per control text: its greedy continuation. */
  continuations: string[];
  /** Completions generated (target and retain), for throughput. */
  generations: number;
  elapsedMs: number;
  /** Per request key, the projections recorded by a trace (empty without one). */
  projections: Map<string, Projections>;
  /**
   * A conditional arm: requests whose condition held (so they were sent steered), per group, and
   * the groups' request counts (control: log-probability and continuation requests). null otherwise.
   */
  triggered: { prompts: number; retain: number; control: number; totals: { prompts: number; retain: number; control: number } } | null;
}

async function pool<T>(tasks: ReadonlyArray<() => Promise<T>>, concurrency: number, onDone: () => void): Promise<T[]> {
  const results = new Array<T>(tasks.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < tasks.length) {
      const index = next++;
      results[index] = await tasks[index]();
      onDone();
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, tasks.length) }, worker));
  return results;
}

function meanNll(logprobs: readonly number[]): number {
  if (logprobs.length === 0) return 0;
  let sum = 0;
  for (const x of logprobs) sum -= x;
  return sum / logprobs.length;
}

/** How an arm is run beyond its steering (see condition.ts). */
export interface ArmOptions {
  /** Records each request's projections (the unsteered arm of a conditional evaluation). */
  trace?: ProjectionTrace;
  /**
   * Steers each request only from the position after its condition first held on the unsteered
   * arm's pass (which must have been traced); a request where it never held is the unsteered
   * arm's result.
   */
  conditional?: {
    condition: ProjectionCondition;
    /** The hook whose traced projections the condition reads. */
    hook: string;
    /** Tokens steered after the trigger (a policy's `steer.forTokens`); null = to the end. */
    steerTokens: number | null;
    unsteered: ArmResult;
  };
}

/** One request of an arm: its key (shared by every arm), and how to send it with given steering. */
interface ArmTask {
  key: string;
  group: 'prompts' | 'retain' | 'control';
  /** The positions of the setting for this request when unconditional. */
  unconditional: (entry: SteeringEntry) => SteeringEntry;
  run: (steering: readonly SteeringEntry[], requestId: string | undefined) => Promise<void>;
  /** Writes the unsteered arm's result for this request into this arm. */
  copy: (from: ArmResult) => void;
}

/** Runs one arm: `steering` empty = unsteered. */
export async function runArm(plan: EvalPlan, steering: readonly SteeringEntry[], armLabel: string, options: ArmOptions = {}): Promise<ArmResult> {
  const started = performance.now();
  const armTasks: ArmTask[] = [];
  const completions: Completion[] = [];
  const same = (entry: SteeringEntry): SteeringEntry => entry;
  const addSet = (set: Completion['set'], documents: readonly CorpusDocument[]): void => {
    documents.forEach((doc, i) => {
      for (let j = 0; j < plan.samples; j++) {
        const slot = completions.length;
        completions.push({ set, id: doc.id, sample: j, text: '', match: false });
        armTasks.push({
          key: `${set}/${i}/${j}`,
          group: set,
          unconditional: same,
          run: async (entries, requestId) => {
            const text = await plan.client.generate(
              { prompt: doc.text, maxTokens: plan.maxTokens, temperature: plan.temperature, seed: plan.seed + i * plan.samples + j, steering: entries, requestId },
              `${set} prompt ${doc.id} sample ${j} (${armLabel})`,
            );
            completions[slot] = { set, id: doc.id, sample: j, text, match: plan.behaviour.matches(text) };
          },
          copy: (from) => (completions[slot] = from.completions[slot]),
        });
      }
    });
  };
  addSet('prompts', plan.prompts);
  addSet('retain', plan.retain);
  const generations = armTasks.length;
  const controlCe = new Array<number>(plan.control.length).fill(0);
  const continuations = new Array<string>(plan.control.length).fill('');
  plan.control.forEach((doc, i) => {
    armTasks.push({
      key: `control-ce/${i}`,
      group: 'control',
      // Every position steered, whatever the setting's `positions`: the control CE stands for
      // text read and written under steering, and a generated-only setting would otherwise score
      // an untouched prompt and show no cost at all.
      unconditional: (entry) => ({ ...entry, positions: 'all' }),
      run: async (entries, requestId) => {
        controlCe[i] = meanNll(await plan.client.promptLogprobs(doc.text, entries, `control text ${doc.id} log-probabilities (${armLabel})`, requestId));
      },
      copy: (from) => (controlCe[i] = from.controlCe[i]),
    });
    armTasks.push({
      key: `control-continuation/${i}`,
      group: 'control',
      unconditional: same,
      run: async (entries, requestId) => {
        continuations[i] = await plan.client.generate(
          { prompt: doc.text, maxTokens: plan.continuationTokens, temperature: 0, seed: plan.seed, steering: entries, requestId },
          `control text ${doc.id} continuation (${armLabel})`,
        );
      },
      copy: (from) => (continuations[i] = from.continuations[i]),
    });
  });

  const projections = new Map<string, Projections>();
  const triggered = { prompts: 0, retain: 0, control: 0 };
  const { trace, conditional } = options;
  const tasks = armTasks.map((task, index) => async (): Promise<void> => {
    if (conditional === undefined) {
      // Request ids only matter to the trace; elsewhere the server picks its own.
      const requestId = trace === undefined ? undefined : `eval-${index}-${task.key.replaceAll('/', '-')}`;
      if (requestId !== undefined) trace!.watch(requestId);
      await task.run(steering.map(task.unconditional), requestId);
      if (requestId !== undefined) projections.set(task.key, trace!.take(requestId));
      return;
    }
    // Steering from the position after the condition first held on the unsteered pass.
    const values = conditional.unsteered.projections.get(task.key)?.get(conditional.hook);
    const p = values === undefined ? null : firstTrigger(values, conditional.condition);
    if (p === null) {
      task.copy(conditional.unsteered);
      return;
    }
    triggered[task.group]++;
    const positions = conditional.steerTokens === null ? { from: p + 1 } : { from: p + 1, until: p + 1 + conditional.steerTokens };
    await task.run(steering.map((entry) => ({ ...entry, positions })), undefined);
  });
  let done = 0;
  await pool(tasks, plan.concurrency, () => plan.onProgress?.(++done, tasks.length));
  return {
    completions,
    controlCe,
    continuations,
    generations,
    elapsedMs: performance.now() - started,
    projections,
    triggered: conditional === undefined ? null : { ...triggered, totals: { prompts: plan.prompts.length * plan.samples, retain: plan.retain.length * plan.samples, control: 2 * plan.control.length } },
  };
}

/** One set's rate before and after. */
export interface RateChange {
  before: Rate;
  after: Rate;
  /** (before − after) / before; null when before is 0. */
  relativeReduction: number | null;
}

/** How a steered arm compares with the unsteered one. */
export interface SettingComparison {
  target: RateChange;
  /** null without a retain set. */
  retain: (RateChange & { held: boolean }) | null;
  /** null without control texts. */
  control: {
    /** Mean per-text CE (nats/token). */
    ceBefore: number;
    ceAfter: number;
    /** Mean of the per-text differences (after − before), paired bootstrap 95% interval. */
    deltaCe: Interval;
    /** Control texts whose greedy continuation is identical with and without steering. */
    agreement: Rate;
  } | null;
  /**
   * A conditional setting: the fraction of target completions, and of control requests (CE and
   * continuation), where the condition held and steering started. Absent when unconditional.
   */
  triggered?: { prompts: Rate; control: Rate };
}

function rateOf(arm: ArmResult, set: Completion['set']): Rate {
  const of = arm.completions.filter((c) => c.set === set);
  return wilson(of.filter((c) => c.match).length, of.length);
}

function change(before: Rate, after: Rate): RateChange {
  return { before, after, relativeReduction: before.value === 0 ? null : (before.value - after.value) / before.value };
}

const mean = (xs: readonly number[]): number => (xs.length === 0 ? 0 : xs.reduce((a, b) => a + b, 0) / xs.length);

/** Compares a steered arm with the unsteered one; `seed` draws the bootstrap. */
export function compareArms(unsteered: ArmResult, steered: ArmResult, seed: number, hasRetain: boolean): SettingComparison {
  const retainBefore = rateOf(unsteered, 'retain');
  const retainAfter = rateOf(steered, 'retain');
  const differences = steered.controlCe.map((ce, i) => ce - unsteered.controlCe[i]);
  const same = steered.continuations.filter((text, i) => text === unsteered.continuations[i]).length;
  return {
    target: change(rateOf(unsteered, 'prompts'), rateOf(steered, 'prompts')),
    // "Must not fall": a fall is a steered interval wholly below the unsteered rate.
    retain: hasRetain ? { ...change(retainBefore, retainAfter), held: retainAfter.high >= retainBefore.value } : null,
    control: steered.controlCe.length === 0 ? null : {
      ceBefore: mean(unsteered.controlCe),
      ceAfter: mean(steered.controlCe),
      deltaCe: pairedBootstrapMean(differences, seed),
      agreement: wilson(same, steered.continuations.length),
    },
    ...(steered.triggered !== null && {
      triggered: { prompts: wilson(steered.triggered.prompts, steered.triggered.totals.prompts), control: wilson(steered.triggered.control, steered.triggered.totals.control) },
    }),
  };
}
