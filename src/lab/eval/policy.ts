/**
 * `eval steer --policies DIR`: the one `steer` policy a directory (or file) holds, read and compiled
 * the way `serve --policies` does (src/policies/load.ts, compile.ts), turned into what `eval steer`
 * evaluates: a hook, a scale, the direction, and the projection condition when the steer has one.
 * What the evaluation cannot emulate is refused by name rather than evaluated as something else.
 */
import path from 'node:path';
import { err } from '../../common/errors.js';
import { compilePolicySet, type PolicyContext } from '../../policies/compile.js';
import { formatProblem, readPolicyFiles } from '../../policies/load.js';
import { VectorStore } from '../../steering/store.js';
import type { SteeringEntry } from './client.js';

/** The steer of the one policy, as `eval steer` runs it. */
export interface PolicySteer {
  /** `name@1`. */
  policy: string;
  files: readonly string[];
  hook: string;
  scale: number;
  direction: Float32Array;
  /** The steer vector's content id. */
  vectorId: string;
  positions: SteeringEntry['positions'];
  /** `when: {projection}`: the hook and direction projected on, threshold and run length. */
  condition: { hook: string; direction: Float32Array; above: number; forTokens: number } | null;
  /** `steer.forTokens`: tokens steered after the trigger; null = the rest of the request. */
  steerTokens: number | null;
}

const refuse = (message: string): never => {
  throw err('SAEGATE_ERR_CONFIG', 'policies', message);
};

/** Reads and compiles `target`; `model` checks hooks and widths as `serve` would. */
export function readPolicySteer(target: string, model?: PolicyContext['model']): PolicySteer {
  const resolved = path.resolve(target);
  const baseDir = /\.(ya?ml|json)$/.test(resolved) ? path.dirname(resolved) : resolved;
  const vectors = new VectorStore({ baseDir });
  const read = readPolicyFiles(resolved);
  const compiled = read.problems.length > 0 ? { set: null, problems: read.problems } : compilePolicySet(read.sources, { vectors, model }, 1, read.files);
  if (compiled.set === null || compiled.problems.length > 0) refuse(`invalid policy files:\n${compiled.problems.map(formatProblem).join('\n')}`);
  const policies = compiled.set!.policies;
  if (policies.length !== 1) refuse(`${target} holds ${policies.length} policies; eval steer evaluates exactly one`);
  const [policy] = policies;
  const where = `policy '${policy.name}' (${policy.file})`;
  if (policy.steers.length !== 1) refuse(`${where} has ${policy.steers.length} steer actions; eval steer evaluates exactly one`);
  const [steer] = policy.steers;
  if (steer.hooks.length !== 1) refuse(`${where} steers ${steer.hooks.length} hooks (${steer.hooks.join(', ')}); eval steer evaluates one (give steer.hooks)`);
  const [hook] = steer.hooks;
  let condition: PolicySteer['condition'] = null;
  if (steer.when !== undefined) {
    if ('feature' in steer.when) refuse(`${where}: feature conditions are not evaluated yet (projection conditions are)`);
    else {
      const { vector, hook: conditionHook, above, forTokens } = steer.when.projection;
      // compile.ts checked that the vector resolves and has the hook.
      condition = { hook: conditionHook, direction: vectors.resolve(vector).hooks.get(conditionHook)!, above, forTokens };
    }
    if (steer.positions !== 'all') refuse(`${where}: a conditional steer with positions other than all is not evaluated (the condition decides the positions)`);
  }
  return {
    policy: policy.qualifiedName,
    files: read.files,
    hook,
    scale: steer.scale,
    direction: steer.vector.hooks.get(hook)!,
    vectorId: steer.vector.id,
    positions: steer.positions,
    condition,
    steerTokens: steer.forTokens ?? null,
  };
}
