/**
 * From parsed policy files to a `PolicySet`: every reference checked against what saegate knows
 * (vector files and their widths, the model's hook points and width, the SAEs and their `d_sae`),
 * problems collected with the file position of the offending value, and everything a request needs
 * resolved once per set so that matching a request does no file or hash work beyond its own.
 *
 * What is checked, each as a `PolicyProblem` pointing into the file:
 * - policy names are unique across the set;
 * - a steer's vector resolves (file present and valid, or `sae:NAME#FEATURE` of a loaded SAE);
 * - a steer's `hooks` are hooks of its vector; with a known model, hooks the model has and vectors of
 *   its width;
 * - a monitor's SAE is loaded (when the SAEs are known) and its features are below `d_sae`;
 * - a condition on a feature names a *watched* SAE (one that some `monitor` action of the set
 *   watches — only watched SAEs are encoded per request) and a feature below `d_sae`;
 * - a projection condition's vector resolves and has the condition's hook.
 */
import { SaegateError } from '../common/errors.js';
import { unitDirection } from '../monitor/projection.js';
import type { VectorStore } from '../steering/store.js';
import { isBodySteeringMode, termProblem, type UpstreamSteeringMode } from '../steering/upstream.js';
import type { SteeringVector } from '../steering/vector.js';
import { formatPath, type PolicyProblem, type PolicySource } from './load.js';
import type { Policy, PolicyCondition, PolicyMatch, PolicyPositions } from './schema.js';

/** What saegate knows about the model and SAEs a policy set runs against. Unknown parts are not checked. */
export interface PolicyContext {
  vectors: VectorStore;
  model?: { dModel: number; hookPoints: ReadonlySet<string> };
  /** SAEs by name (as loaded by `serve --sae`): their width, hook and feature labels. */
  saes?: ReadonlyMap<string, { dSae: number; hook: string; labels?: ReadonlyMap<number, { label: string }> }>;
  /**
   * How steering reaches the model server (`serve --upstream-steering`). Default `tap`. With a
   * body-field mode (a server without the tap) conditions are refused — nothing streams the
   * activations they are evaluated on — and so is a steer the server's field cannot express.
   */
  upstreamSteering?: UpstreamSteeringMode;
}

export interface CompiledSteer {
  vector: SteeringVector;
  /** Hooks steered (a subset of the vector's). */
  hooks: readonly string[];
  scale: number;
  positions: PolicyPositions;
  when: PolicyCondition | undefined;
  forTokens: number | undefined;
}

export interface CompiledWatch {
  sae: string;
  index: number;
  label: string;
  alertFiringRateAbove?: number;
  alertMeanActivationAbove?: number;
}

export interface CompiledPolicy {
  name: string;
  /** `name@version`, as it appears in `x-saegate-applied`. */
  qualifiedName: string;
  priority: number;
  failClosed: boolean;
  match: PolicyMatch;
  steers: CompiledSteer[];
  watches: CompiledWatch[];
  /** `inResponse`: false for a conditional flag that need not be in the response (schema.ts); absent means true. */
  flags: { name: string; when: PolicyCondition | undefined; inResponse?: boolean }[];
  aborts: { when: PolicyCondition; reason: string | undefined }[];
  /**
   * The unit directions projection conditions read, keyed by `projectionKey(vector, hook)`
   * (absent when the policy has none).
   */
  projections?: Map<string, Float32Array>;
  file: string;
}

/** Key of a projection condition's direction in `CompiledPolicy.projections`. */
export function projectionKey(vector: string, hook: string): string {
  return `${vector}\u0000${hook}`;
}

export interface PolicySet {
  /** Increases by one with every successfully loaded set. */
  version: number;
  /** In application order: priority, then name. */
  policies: readonly CompiledPolicy[];
  files: readonly string[];
  loadedAt: Date;
}

function problemAt(source: PolicySource, at: (string | number)[], message: string): PolicyProblem {
  return { file: source.file, ...source.locate(at), path: formatPath(at), message };
}

function resolveVector(context: PolicyContext, source: PolicySource, at: (string | number)[], reference: string, problems: PolicyProblem[]): SteeringVector | undefined {
  try {
    return context.vectors.resolve(reference);
  } catch (error) {
    if (error instanceof SaegateError) {
      problems.push(problemAt(source, at, error.message));
      return undefined;
    }
    throw error;
  }
}

/**
 * Checks a vector's width and `hooks` against the model. A width problem points at `at` (the
 * vector reference); a missing hook at `hookAt(i)` when the policy named the hook, else at `at`.
 */
function checkVectorAgainstModel(
  context: PolicyContext,
  source: PolicySource,
  at: (string | number)[],
  vector: SteeringVector,
  hooks: readonly string[],
  problems: PolicyProblem[],
  hookAt: ((index: number) => (string | number)[]) | null = null,
): void {
  const model = context.model;
  if (!model) return;
  if (vector.dModel !== model.dModel) {
    problems.push(problemAt(source, at, `the vector has ${vector.dModel} values per hook but the model's d_model is ${model.dModel}`));
  }
  hooks.forEach((hook, i) => {
    if (!model.hookPoints.has(hook)) problems.push(problemAt(source, hookAt ? hookAt(i) : at, `the model has no hook point '${hook}'`));
  });
}

function checkCondition(
  context: PolicyContext,
  source: PolicySource,
  at: (string | number)[],
  condition: PolicyCondition,
  watched: ReadonlySet<string>,
  problems: PolicyProblem[],
  projections?: Map<string, Float32Array>,
): void {
  if ('feature' in condition) {
    const { sae, index } = condition.feature;
    if (!watched.has(sae)) {
      problems.push(problemAt(source, [...at, 'feature', 'sae'], `SAE '${sae}' is not watched by any monitor action of the policy set, so its features are not evaluated per request; add a monitor action for it`));
    }
    const known = context.saes?.get(sae);
    if (context.saes && !known) problems.push(problemAt(source, [...at, 'feature', 'sae'], `no SAE named '${sae}' is loaded (loaded: ${[...context.saes.keys()].join(', ') || 'none'})`));
    if (known && index >= known.dSae) problems.push(problemAt(source, [...at, 'feature', 'index'], `feature ${index} is past the SAE's d_sae ${known.dSae}`));
  } else {
    const { vector: reference, hook } = condition.projection;
    const vector = resolveVector(context, source, [...at, 'projection', 'vector'], reference, problems);
    if (vector && !vector.hooks.has(hook)) {
      problems.push(problemAt(source, [...at, 'projection', 'hook'], `the vector has no direction for '${hook}' (it has ${[...vector.hooks.keys()].join(', ')})`));
    }
    if (vector) checkVectorAgainstModel(context, source, [...at, 'projection', 'vector'], vector, [hook], problems, () => [...at, 'projection', 'hook']);
    const direction = vector?.hooks.get(hook);
    if (direction !== undefined && projections !== undefined) {
      try {
        projections.set(projectionKey(reference, hook), unitDirection(direction, reference));
      } catch (error) {
        if (!(error instanceof SaegateError)) throw error;
        problems.push(problemAt(source, [...at, 'projection', 'vector'], `the vector's direction at '${hook}' cannot be projected on: ${error.message}`));
      }
    }
  }
}

/** A condition under a body-field `upstreamSteering` mode: refused, nothing streams activations. */
function checkNoTapCondition(context: PolicyContext, source: PolicySource, at: (string | number)[], problems: PolicyProblem[]): void {
  const mode = context.upstreamSteering ?? 'tap';
  if (!isBodySteeringMode(mode)) return;
  problems.push(
    problemAt(source, at, `policy '${source.policy.metadata.name}': conditions need activations from the tap, but --upstream-steering ${mode} sends steering in the request body and receives no activations; remove 'when' or use --upstream-steering tap`),
  );
}

/** A steer under a body-field mode: no condition, and every hook and position range expressible. */
function checkUpstreamSteer(context: PolicyContext, source: PolicySource, at: (string | number)[], steer: { when?: PolicyCondition; positions: PolicyPositions }, hooks: readonly string[], problems: PolicyProblem[]): void {
  const mode = context.upstreamSteering ?? 'tap';
  if (!isBodySteeringMode(mode)) return;
  if (steer.when) checkNoTapCondition(context, source, [...at, 'steer', 'when'], problems);
  const range = typeof steer.positions === 'object'
    ? { fromPosition: steer.positions.from, untilPosition: steer.positions.until ?? null }
    : { fromPosition: 0, untilPosition: null, ...(steer.positions !== 'all' && { span: steer.positions }) };
  for (const hook of hooks) {
    const problem = termProblem(mode, { hook, ...range });
    if (problem !== null) problems.push(problemAt(source, [...at, 'steer'], `policy '${source.policy.metadata.name}': ${problem}`));
  }
}

function compileOne(context: PolicyContext, source: PolicySource, watched: ReadonlySet<string>, version: number, problems: PolicyProblem[]): CompiledPolicy {
  const policy: Policy = source.policy;
  const compiled: CompiledPolicy = {
    name: policy.metadata.name,
    qualifiedName: `${policy.metadata.name}@${version}`,
    priority: policy.spec.priority,
    failClosed: policy.spec.failClosed,
    match: policy.spec.match,
    steers: [],
    watches: [],
    flags: [],
    aborts: [],
    file: source.file,
  };
  policy.spec.actions.forEach((action, i) => {
    const at: (string | number)[] = ['spec', 'actions', i];
    if ('steer' in action) {
      const steer = action.steer;
      const vector = resolveVector(context, source, [...at, 'steer', 'vector'], steer.vector, problems);
      if (!vector) return;
      const hooks = steer.hooks ?? [...vector.hooks.keys()];
      steer.hooks?.forEach((hook, h) => {
        if (!vector.hooks.has(hook)) problems.push(problemAt(source, [...at, 'steer', 'hooks', h], `the vector has no direction for '${hook}' (it has ${[...vector.hooks.keys()].join(', ')})`));
      });
      checkVectorAgainstModel(context, source, [...at, 'steer', 'vector'], vector, hooks, problems, steer.hooks ? (h) => [...at, 'steer', 'hooks', h] : null);
      if (steer.when) checkCondition(context, source, [...at, 'steer', 'when'], steer.when, watched, problems, (compiled.projections ??= new Map()));
      checkUpstreamSteer(context, source, at, steer, hooks, problems);
      if (steer.forTokens !== undefined && !steer.when) problems.push(problemAt(source, [...at, 'steer', 'forTokens'], 'forTokens applies to conditional steering only (give `when`, or use positions {from, until})'));
      if (typeof steer.positions === 'object' && steer.positions.until !== undefined && steer.positions.until <= steer.positions.from) {
        problems.push(problemAt(source, [...at, 'steer', 'positions', 'until'], `until (${steer.positions.until}) must be greater than from (${steer.positions.from})`));
      }
      compiled.steers.push({ vector, hooks, scale: steer.scale, positions: steer.positions, when: steer.when, forTokens: steer.forTokens });
    } else if ('monitor' in action) {
      const { sae, features } = action.monitor;
      const known = context.saes?.get(sae);
      if (context.saes && !known) problems.push(problemAt(source, [...at, 'monitor', 'sae'], `no SAE named '${sae}' is loaded (loaded: ${[...context.saes.keys()].join(', ') || 'none'})`));
      features.forEach((feature, f) => {
        if (known && feature.index >= known.dSae) problems.push(problemAt(source, [...at, 'monitor', 'features', f, 'index'], `feature ${feature.index} is past the SAE's d_sae ${known.dSae}`));
        compiled.watches.push({
          sae,
          index: feature.index,
          label: feature.label ?? known?.labels?.get(feature.index)?.label ?? `feature ${feature.index}`,
          alertFiringRateAbove: feature.alertFiringRateAbove,
          alertMeanActivationAbove: feature.alertMeanActivationAbove,
        });
      });
    } else if ('flag' in action) {
      if (action.flag.when) checkCondition(context, source, [...at, 'flag', 'when'], action.flag.when, watched, problems, (compiled.projections ??= new Map()));
      if (action.flag.when) checkNoTapCondition(context, source, [...at, 'flag', 'when'], problems);
      if (action.flag.inResponse !== undefined && action.flag.when === undefined) {
        problems.push(problemAt(source, [...at, 'flag', 'inResponse'], 'inResponse applies to a conditional flag (one with when); an unconditional flag is always in the response'));
      }
      compiled.flags.push({ name: action.flag.name, when: action.flag.when, ...(action.flag.inResponse === false && { inResponse: false }) });
    } else {
      checkCondition(context, source, [...at, 'abort', 'when'], action.abort.when, watched, problems, (compiled.projections ??= new Map()));
      checkNoTapCondition(context, source, [...at, 'abort', 'when'], problems);
      compiled.aborts.push({ when: action.abort.when, reason: action.abort.reason });
    }
  });
  return compiled;
}

/** Compiles parsed policies into a set with the given version, or returns its problems. */
export function compilePolicySet(sources: readonly PolicySource[], context: PolicyContext, version: number, files: readonly string[]): { set: PolicySet | null; problems: PolicyProblem[] } {
  const problems: PolicyProblem[] = [];
  const seen = new Map<string, PolicySource>();
  for (const source of sources) {
    const name = source.policy.metadata.name;
    const earlier = seen.get(name);
    if (earlier) {
      const { line } = earlier.locate(['metadata', 'name']);
      problems.push(problemAt(source, ['metadata', 'name'], `policy '${name}' is already defined in ${earlier.file}:${line}`));
    } else {
      seen.set(name, source);
    }
  }
  const watched = new Set<string>();
  for (const source of sources) for (const action of source.policy.spec.actions) if ('monitor' in action) watched.add(action.monitor.sae);
  const policies = sources.map((source) => compileOne(context, source, watched, version, problems));
  if (problems.length > 0) return { set: null, problems };
  policies.sort((a, b) => a.priority - b.priority || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { set: { version, policies, files, loadedAt: new Date() }, problems };
}
