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
 * Completion j of prompt i samples with seed `seed + i·samples + j` in both arms, so the two arms
 * share their random numbers and differ only by the steering (common random numbers: the
 * difference is far less noisy than two independent draws). The unsteered arm is measured once
 * and shared by every setting of a sweep.
 */
import type { CorpusDocument } from '../corpus/read.js';
import type { Behaviour } from './behaviour.js';
import type { EvalClient, SteeringEntry } from './client.js';
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

/** Runs one arm: `steering` empty = unsteered. */
export async function runArm(plan: EvalPlan, steering: readonly SteeringEntry[], armLabel: string): Promise<ArmResult> {
  const started = performance.now();
  const tasks: Array<() => Promise<void>> = [];
  const completions: Completion[] = [];
  const addSet = (set: Completion['set'], documents: readonly CorpusDocument[]): void => {
    documents.forEach((doc, i) => {
      for (let j = 0; j < plan.samples; j++) {
        const slot = completions.length;
        completions.push({ set, id: doc.id, sample: j, text: '', match: false });
        tasks.push(async () => {
          const text = await plan.client.generate(
            { prompt: doc.text, maxTokens: plan.maxTokens, temperature: plan.temperature, seed: plan.seed + i * plan.samples + j, steering },
            `${set} prompt ${doc.id} sample ${j} (${armLabel})`,
          );
          completions[slot] = { set, id: doc.id, sample: j, text, match: plan.behaviour.matches(text) };
        });
      }
    });
  };
  addSet('prompts', plan.prompts);
  addSet('retain', plan.retain);
  const generations = tasks.length;
  const controlCe = new Array<number>(plan.control.length).fill(0);
  const continuations = new Array<string>(plan.control.length).fill('');
  plan.control.forEach((doc, i) => {
    tasks.push(async () => {
      // Every position steered, whatever the setting's `positions`: the control CE stands for
      // text read and written under steering, and a generated-only setting would otherwise score
      // an untouched prompt and show no cost at all.
      const everywhere = steering.map((entry) => ({ ...entry, positions: 'all' as const }));
      controlCe[i] = meanNll(await plan.client.promptLogprobs(doc.text, everywhere, `control text ${doc.id} log-probabilities (${armLabel})`));
    });
    tasks.push(async () => {
      continuations[i] = await plan.client.generate(
        { prompt: doc.text, maxTokens: plan.continuationTokens, temperature: 0, seed: plan.seed, steering },
        `control text ${doc.id} continuation (${armLabel})`,
      );
    });
  });
  let done = 0;
  await pool(tasks, plan.concurrency, () => plan.onProgress?.(++done, tasks.length));
  return { completions, controlCe, continuations, generations, elapsedMs: performance.now() - started };
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
  };
}
