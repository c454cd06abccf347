/**
 * The live policy set behind `saegate serve --policies DIR`: loads the directory, watches it, and
 * swaps in a new set atomically when a change validates as a whole.
 *
 * - **Debounced.** Editors and `kubectl` write several events per change (a ConfigMap update swaps
 *   the `..data` symlink, then removes the old timestamped directory); changes within
 *   `debounceMs` of each other cause one reload.
 * - **Atomic.** The new files are read, parsed and compiled completely before anything changes;
 *   the resolver is replaced in one assignment. A request resolved before the swap keeps the plan
 *   (and set version) it got.
 * - **Last good set wins.** An invalid change keeps the previous set, logs every problem as
 *   `file:line:column: path: message`, counts the failure and sets
 *   `saegate_policy_reload_ok` to 0 until a later change loads.
 * - **Versioned.** Every successfully loaded set gets the next version number, which appears in
 *   `x-saegate-applied` as `policy=NAME@VERSION`.
 */
import fs from 'node:fs';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { CompiledPolicy, PolicyContext, PolicySet } from './compile.js';
import { compilePolicySet } from './compile.js';
import { formatProblem, readPolicyFiles, type PolicyProblem } from './load.js';
import { PolicyResolver, type MatchRequest, type ResolvedRequestPlan } from './resolve.js';

/** Logger shape (pino's, as fastify passes it). */
export interface PolicyLogger {
  info(object: object, message?: string): void;
  error(object: object, message?: string): void;
}

export interface PolicyManagerOptions {
  /** Directory (or single file) of policy files. */
  path: string;
  /** Builds the context for each load (so vector files are re-read on reload). */
  context: () => PolicyContext;
  /** Quiet period before a reload, ms. Default 200. */
  debounceMs?: number;
  registry?: Registry;
  logger?: PolicyLogger;
  /** Watch the directory for changes. Default true. */
  watch?: boolean;
}

/** Result of one load attempt. */
export interface PolicyLoadResult {
  ok: boolean;
  version: number;
  problems: PolicyProblem[];
}

export class PolicyManager {
  private resolver: PolicyResolver | null = null;
  private lastVersion = 0;
  private watcher: fs.FSWatcher | null = null;
  private timer: NodeJS.Timeout | null = null;
  private readonly listeners = new Set<(result: PolicyLoadResult) => void>();
  private readonly metrics: { version: Gauge; ok: Gauge; reloads: Counter<'result'>; policies: Gauge } | null;
  /** Problems of the last failed load (empty after a good one). */
  lastProblems: PolicyProblem[] = [];

  constructor(private readonly options: PolicyManagerOptions) {
    const registry = options.registry;
    this.metrics = registry
      ? {
          version: new Gauge({ name: 'saegate_policy_set_version', help: 'Version of the policy set in use (increases with every successful load).', registers: [registry] }),
          ok: new Gauge({ name: 'saegate_policy_reload_ok', help: '1 when the last policy load succeeded, 0 when it failed and the previous set is still in use.', registers: [registry] }),
          reloads: new Counter({ name: 'saegate_policy_reloads_total', help: 'Policy loads by result (ok, invalid).', labelNames: ['result'], registers: [registry] }),
          policies: new Gauge({ name: 'saegate_policies', help: 'Policies in the set in use.', registers: [registry] }),
        }
      : null;
  }

  /** The set in use, or null before the first successful load. */
  get current(): PolicySet | null {
    return this.resolver?.set ?? null;
  }

  /** Loads the policies once; throws nothing — check `ok`. Starts watching when asked. */
  start(): PolicyLoadResult {
    const result = this.loadNow();
    if (this.options.watch !== false) this.watch();
    return result;
  }

  /** Resolves a request against the set in use (an empty plan before any set loaded). */
  resolve(request: MatchRequest): ResolvedRequestPlan {
    if (!this.resolver) return { policies: [], steering: [], failClosed: false, matched: [], setVersion: 0 };
    return this.resolver.resolve(request);
  }

  /** Every policy of the set in use. */
  policies(): readonly CompiledPolicy[] {
    return this.resolver?.set.policies ?? [];
  }

  /** Called after every load attempt (tests and the admin API wait on it). */
  onLoad(listener: (result: PolicyLoadResult) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Reads, validates and swaps in the policies now. */
  loadNow(): PolicyLoadResult {
    const { sources, problems, files } = readPolicyFiles(this.options.path);
    let result: PolicyLoadResult;
    if (problems.length > 0) {
      result = { ok: false, version: this.lastVersion, problems };
    } else {
      const compiled = compilePolicySet(sources, this.options.context(), this.lastVersion + 1, files);
      if (compiled.set) {
        this.lastVersion = compiled.set.version;
        this.resolver = new PolicyResolver(compiled.set); // the swap: one assignment
        result = { ok: true, version: compiled.set.version, problems: [] };
      } else {
        result = { ok: false, version: this.lastVersion, problems: compiled.problems };
      }
    }
    this.lastProblems = result.problems;
    this.record(result);
    return result;
  }

  private record(result: PolicyLoadResult): void {
    const logger = this.options.logger;
    if (result.ok) {
      logger?.info({ policySetVersion: result.version, policies: this.policies().map((p) => p.name) }, 'policy set loaded');
    } else {
      logger?.error(
        { policySetVersion: result.version, problems: result.problems.map(formatProblem) },
        this.resolver ? `policy change refused; keeping set version ${result.version}` : 'policy files are invalid; no policy set loaded',
      );
    }
    if (this.metrics) {
      this.metrics.reloads.inc({ result: result.ok ? 'ok' : 'invalid' });
      this.metrics.ok.set(result.ok ? 1 : 0);
      this.metrics.version.set(this.lastVersion);
      this.metrics.policies.set(this.policies().length);
    }
    for (const listener of this.listeners) listener(result);
  }

  private watch(): void {
    if (this.watcher) return;
    try {
      // A directory watch sees files written in place, renames (editors' atomic saves) and the
      // ConfigMap `..data` symlink swap alike; any of them schedules one debounced reload.
      this.watcher = fs.watch(this.options.path, { persistent: false }, () => this.schedule());
      this.watcher.on('error', (error) => this.options.logger?.error({ err: error }, 'policy directory watch failed'));
    } catch (error) {
      this.options.logger?.error({ err: error }, 'cannot watch the policy directory; reload through the admin API');
    }
  }

  /** Schedules a debounced reload (also what the watcher calls). */
  schedule(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.loadNow();
    }, this.options.debounceMs ?? 200);
    this.timer.unref();
  }

  close(): void {
    this.watcher?.close();
    this.watcher = null;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.listeners.clear();
  }
}
