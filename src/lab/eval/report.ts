/**
 * The reports `eval steer` writes: `report.json` (everything, deterministic: no times, so the same
 * inputs and seed give the same bytes), `report.md` (the same for people) and, for a sweep,
 * `sweep.json` (one point per layer and scale: target rate against control ΔCE, ready to plot).
 */
import type { Interval, Rate } from './stats.js';
import type { SettingResult } from './sweep.js';

/** Where the numbers came from: enough to run them again. */
export interface Provenance {
  /** The command line, as typed after `saegate`. */
  command: string;
  seed: number;
  model: { name: string; sha256: string | null };
  vector: { file: string; id: string; sha256: string };
  behaviour: { source: string; patterns: readonly string[] };
  prompts: { file: string; count: number };
  control: { file: string; count: number } | null;
  retain: { file: string; count: number } | null;
  sampling: { samples: number; temperature: number; maxTokens: number; continuationTokens: number; positions: string };
  /**
   * Conditional steering: each setting steers only from the position after the projection of the
   * residual row onto its own vector (⟨x, v⟩/‖v‖ at its hook) was above `projectionAbove` for
   * `forTokens` consecutive positions on the unsteered pass. null = unconditional.
   */
  condition: {
    projectionAbove: number;
    forTokens: number;
    /** The hook (and, with --policies, the policy's vector) projected on; null = each setting's own. */
    hook: string | null;
    /** Tokens steered after the trigger (a policy's `steer.forTokens`); null = to the end. */
    steerTokens: number | null;
  } | null;
  /** With --policies: the policy evaluated and its files (then `vector.sha256` hashes the files). */
  policy: { name: string; files: readonly string[] } | null;
  saegateVersion: string;
}

export interface EvalReport extends Provenance {
  version: 1;
  ceBudget: number;
  results: SettingResult[];
  /** The best setting within the budget (see bestSetting); null when none qualifies. */
  best: { hook: string; scale: number } | null;
}

const round = (x: number): number => Math.round(x * 1e6) / 1e6;

function roundInterval<T extends Interval>(i: T): T {
  return { ...i, value: round(i.value), low: round(i.low), high: round(i.high) };
}

/** Numbers rounded to 6 places, so the JSON is stable and readable. */
export function roundedResult(r: SettingResult): SettingResult {
  return {
    ...r,
    target: { before: roundInterval(r.target.before), after: roundInterval(r.target.after), relativeReduction: r.target.relativeReduction === null ? null : round(r.target.relativeReduction) },
    retain: r.retain && { ...r.retain, before: roundInterval(r.retain.before), after: roundInterval(r.retain.after), relativeReduction: r.retain.relativeReduction === null ? null : round(r.retain.relativeReduction) },
    control: r.control && { ceBefore: round(r.control.ceBefore), ceAfter: round(r.control.ceAfter), deltaCe: roundInterval(r.control.deltaCe), agreement: roundInterval(r.control.agreement) },
    ...(r.triggered && { triggered: { prompts: roundInterval(r.triggered.prompts), control: roundInterval(r.triggered.control) } }),
  };
}

/** The plot-ready sweep points. */
export function sweepPoints(report: EvalReport): object {
  return {
    version: 1,
    x: 'control ΔCE (nats/token)',
    y: 'target rate',
    baseline: report.results[0] ? report.results[0].target.before : null,
    ceBudget: report.ceBudget,
    best: report.best,
    points: report.results.map((r) => ({
      hook: r.hook,
      layer: Number(/^blocks\.(\d+)\./.exec(r.hook)?.[1] ?? NaN),
      scale: r.scale,
      targetRate: r.target.after.value,
      targetLow: r.target.after.low,
      targetHigh: r.target.after.high,
      deltaCe: r.control?.deltaCe.value ?? null,
      deltaCeLow: r.control?.deltaCe.low ?? null,
      deltaCeHigh: r.control?.deltaCe.high ?? null,
      retainHeld: r.retain?.held ?? null,
    })),
  };
}

const pct = (r: Rate): string => `${(100 * r.value).toFixed(1)}% [${(100 * r.low).toFixed(1)}, ${(100 * r.high).toFixed(1)}] (${r.hits}/${r.n})`;
const nats = (i: Interval): string => `${i.value >= 0 ? '+' : ''}${i.value.toFixed(4)} [${i.low.toFixed(4)}, ${i.high.toFixed(4)}]`;

/** One line per setting: hook, scale, target before/after, reduction, ΔCE, agreement, retain. */
export function tableLines(report: EvalReport): string[] {
  const lines = [
    `| hook | scale | target unsteered | target steered | reduction | control ΔCE (nats) | greedy agreement | retain |${report.condition === null ? '' : ' fired: completions / control |'}`,
    `|---|---|---|---|---|---|---|---|${report.condition === null ? '' : '---|'}`,
  ];
  for (const r of report.results) {
    const best = report.best !== null && report.best.hook === r.hook && report.best.scale === r.scale ? ' **best**' : '';
    lines.push(
      `| ${r.hook}${best} | ${r.scale} | ${pct(r.target.before)} | ${pct(r.target.after)} | ${r.target.relativeReduction === null ? 'n/a' : `${(100 * r.target.relativeReduction).toFixed(0)}%`} | ` +
        `${r.control ? nats(r.control.deltaCe) : 'n/a'} | ${r.control ? pct(r.control.agreement) : 'n/a'} | ${r.retain ? `${pct(r.retain.before)} → ${pct(r.retain.after)} ${r.retain.held ? 'held' : '**fell**'}` : 'n/a'} |` +
        (r.triggered ? ` ${pct(r.triggered.prompts)} / ${pct(r.triggered.control)} |` : ''),
    );
  }
  return lines;
}

/** The Markdown report. */
export function markdownReport(report: EvalReport): string {
  const r0 = report.results[0];
  return [
    '# saegate eval steer',
    '',
    '```sh',
    `saegate ${report.command}`,
    '```',
    '',
    `- model: ${report.model.name}${report.model.sha256 === null ? '' : ` (sha256 ${report.model.sha256})`}`,
    `- vector: ${report.vector.file} (id ${report.vector.id}, file sha256 ${report.vector.sha256})`,
    `- behaviour: ${report.behaviour.source} (${report.behaviour.patterns.length} patterns)`,
    `- prompts: ${report.prompts.file} (${report.prompts.count}), ${report.sampling.samples} completion(s) each, temperature ${report.sampling.temperature}, at most ${report.sampling.maxTokens} tokens, seed ${report.seed}, steered positions: ${report.sampling.positions}`,
    `- control: ${report.control === null ? 'none' : `${report.control.file} (${report.control.count} texts; greedy continuations of ${report.sampling.continuationTokens} tokens)`}`,
    report.policy === null ? '' : `- policy: ${report.policy.name} (${report.policy.files.join(', ')})`,
    `- condition: ${report.condition === null ? 'none (steered wherever the positions say)' : `projection onto ${report.condition.hook === null ? "the setting's vector" : `the condition's vector at ${report.condition.hook}`} above ${report.condition.projectionAbove} for ${report.condition.forTokens} token(s) on the unsteered pass; steered from the next position${report.condition.steerTokens === null ? '' : ` for ${report.condition.steerTokens} token(s)`} (control CE too)`}`,
    `- retain: ${report.retain === null ? 'none' : `${report.retain.file} (${report.retain.count})`}`,
    r0?.control ? `- control CE unsteered: ${r0.control.ceBefore.toFixed(4)} nats/token` : '',
    '',
    'Rates with 95% Wilson intervals; ΔCE is the mean per-text difference (steered − unsteered) with a 95% paired bootstrap interval.',
    '',
    ...tableLines(report),
    '',
    report.best === null
      ? `No setting stays within the control budget of ${report.ceBudget} nats with its retain check held.`
      : `Best within a control ΔCE budget of ${report.ceBudget} nats: ${report.best.hook} at scale ${report.best.scale}.`,
    '',
  ].join('\n');
}
