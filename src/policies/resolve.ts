/**
 * Matching a request against the current policy set and compiling its plan: the proxy's
 * `PlanResolver`. Runs once per request on the event loop, so it does no I/O and hashes at most
 * twice (the API key, only when some policy matches on keys; the request id, only for rollouts).
 *
 * **Order and combination.** Policies apply in the set's order: `priority` ascending, then name.
 * Every matching policy is listed in `x-saegate-applied` (`policy=NAME@VERSION`). Steering terms of
 * all matching policies are concatenated in that order, and terms *add up* in the model server
 * (several terms at one hook and position sum their `scale × vector`), so two policies that both
 * steer one hook combine additively; nothing is overridden. `failClosed` holds for the request when
 * any matching policy that asks for steering sets it.
 *
 * A request keeps the set it was resolved against: the plan is computed from one snapshot, and a
 * reload swaps the snapshot for later requests only.
 */
import { createHash } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { CompiledPolicy, PolicySet } from './compile.js';
import type { PolicyMatch } from './schema.js';

/** A steering term as the proxy sends it (structurally the proxy's `SteeringTerm`). */
export interface PlannedTerm {
  hook: string;
  vector: Float32Array;
  scale: number;
  fromPosition: number;
  untilPosition: number | null;
  /** Positions counted within the prompt or the generation (the model server knows where they meet). */
  span?: 'prompt' | 'generated';
}

/** What a request looks like to matching (structurally the proxy's `PlanRequest`). */
export interface MatchRequest {
  requestId: string;
  route: 'chat_completions' | 'completions';
  model: string | null;
  headers: IncomingHttpHeaders;
}

/** A request's resolution: structurally the proxy's `RequestPlan`, plus what conditional rules need. */
export interface ResolvedRequestPlan {
  policies: readonly string[];
  steering: readonly PlannedTerm[];
  failClosed: boolean;
  /** The matched policies themselves (conditional steers, flags, aborts, watches). */
  matched: readonly CompiledPolicy[];
  /** The set version the request was resolved against. */
  setVersion: number;
}

/** Share of [0, 100) a request id falls on: the first 32 bits of sha256(id), scaled. */
export function rolloutPoint(requestId: string): number {
  const digest = createHash('sha256').update(requestId).digest();
  return (digest.readUInt32BE(0) / 0x1_0000_0000) * 100;
}

function globToRegExp(glob: string): RegExp {
  const escaped = glob.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*');
  return new RegExp(`^${escaped}$`);
}

function headerValues(headers: IncomingHttpHeaders, name: string): string[] {
  const value = headers[name.toLowerCase()];
  if (value === undefined) return [];
  return Array.isArray(value) ? value : [value];
}

/** sha256 hex of the request's bearer token, or null without one. */
export function apiKeyHash(headers: IncomingHttpHeaders): string | null {
  const auth = headers.authorization;
  if (typeof auth !== 'string') return null;
  const match = /^Bearer\s+(.+)$/i.exec(auth.trim());
  return match ? createHash('sha256').update(match[1]).digest('hex') : null;
}

/** Compiled matchers, so a request pays no regex compilation. */
interface Matcher {
  policy: CompiledPolicy;
  routes: ReadonlySet<string> | null;
  models: RegExp[] | null;
  headers: [string, ReadonlySet<string>][];
  keys: ReadonlySet<string> | null;
  percent: number | null;
}

function compileMatcher(policy: CompiledPolicy): Matcher {
  const m: PolicyMatch = policy.match;
  return {
    policy,
    routes: m.routes ? new Set(m.routes) : null,
    models: m.models ? m.models.map(globToRegExp) : null,
    headers: Object.entries(m.headers ?? {}).map(([name, values]) => [name.toLowerCase(), new Set(values)]),
    keys: m.apiKeySha256 ? new Set(m.apiKeySha256) : null,
    percent: m.percent ?? null,
  };
}

export class PolicyResolver {
  private readonly matchers: Matcher[];

  constructor(readonly set: PolicySet) {
    this.matchers = set.policies.map(compileMatcher);
  }

  /** The policies that match a request, in application order. */
  matching(request: MatchRequest): CompiledPolicy[] {
    const out: CompiledPolicy[] = [];
    let keyHash: string | null | undefined;
    let point: number | undefined;
    for (const m of this.matchers) {
      if (m.routes && !m.routes.has(request.route)) continue;
      if (m.models && (request.model === null || !m.models.some((re) => re.test(request.model as string)))) continue;
      if (!m.headers.every(([name, accepted]) => headerValues(request.headers, name).some((v) => accepted.has(v)))) continue;
      if (m.keys) {
        if (keyHash === undefined) keyHash = apiKeyHash(request.headers);
        if (keyHash === null || !m.keys.has(keyHash)) continue;
      }
      if (m.percent !== null) {
        if (point === undefined) point = rolloutPoint(request.requestId);
        if (point >= m.percent) continue;
      }
      out.push(m.policy);
    }
    return out;
  }

  /** The request's plan: matched policies, unconditional steering terms, fail-closed. */
  resolve(request: MatchRequest): ResolvedRequestPlan {
    const matched = this.matching(request);
    const steering: PlannedTerm[] = [];
    let failClosed = false;
    for (const policy of matched) {
      let steers = false;
      for (const steer of policy.steers) {
        steers = true;
        if (steer.when) continue; // conditional: sent as a plan_update once it fires
        const { from, until, span } = planPositions(steer.positions);
        for (const hook of steer.hooks) {
          const vector = steer.vector.hooks.get(hook);
          if (vector) steering.push({ hook, vector, scale: steer.scale, fromPosition: from, untilPosition: until, ...(span !== undefined && { span }) });
        }
      }
      if (steers && policy.failClosed) failClosed = true;
    }
    return { policies: matched.map((p) => p.qualifiedName), steering, failClosed, matched, setVersion: this.set.version };
  }
}

/** A steer's position range: absolute `{from, until}`, everything, or a whole span the model server resolves. */
function planPositions(positions: CompiledPolicy['steers'][number]['positions']): { from: number; until: number | null; span?: 'prompt' | 'generated' } {
  if (typeof positions === 'object') return { from: positions.from, until: positions.until ?? null };
  return positions === 'all' ? { from: 0, until: null } : { from: 0, until: null, span: positions };
}
