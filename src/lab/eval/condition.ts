/**
 * Conditional steering in `eval steer`, emulated exactly in two passes (docs/steering.md,
 * "Conditional evaluation"):
 *
 * 1. The unsteered pass runs with the in-process model server's taps on: `ProjectionTrace` keeps,
 *    per request and watched hook, the projection ⟨x, v⟩/‖v‖ of every position's residual row
 *    (prompt and generated) onto the setting's vector.
 * 2. `firstTrigger` finds the first position p where the projection is above the threshold for
 *    `forTokens` consecutive positions; the steered pass runs the same request (same seed) with
 *    steering from p + 1. Positions up to p are untouched, so everything the model computed up to
 *    and including the token sampled from p is the unsteered pass's: this is what live conditional
 *    steering with zero lag does, and it is exact for a causal model. A request whose condition
 *    never holds is its unsteered result.
 *
 * Only projections are kept (one number per row and hook), never the rows: a study of thousands of
 * completions holds a few megabytes.
 */
import type { RuntimeStep, TapSubscription } from '../../model/runtime-protocol.js';

/** `when: {projection: {above, forTokens}}` onto the setting's own vector at its hook. */
export interface ProjectionCondition {
  above: number;
  /** Consecutive positions above the threshold before it fires. */
  forTokens: number;
}

/** The part of the model engine a trace needs (LocalEngine has it). */
export interface TappableEngine {
  setTapSubscription(subscription: TapSubscription | null): void;
  onStep(listener: (step: RuntimeStep) => void): () => void;
}

/** Per hook: the projection of each position's row, NaN where no row came. */
export type Projections = ReadonlyMap<string, Float32Array>;

/**
 * Records projections of the watched hooks' rows for the request ids it is told to watch. Rows of
 * a request arrive (step listener, synchronously in the engine's event) before its HTTP response
 * is written, so once the response is in, its projections are complete.
 */
export class ProjectionTrace {
  /** Unit vectors by hook. */
  private readonly units = new Map<string, Float32Array>();
  private readonly watched = new Map<string, Map<string, number[]>>();
  private readonly unsubscribe: () => void;

  constructor(
    private readonly engine: TappableEngine,
    vectors: ReadonlyMap<string, Float32Array>,
  ) {
    for (const [hook, v] of vectors) {
      let norm = 0;
      for (const x of v) norm += x * x;
      norm = Math.sqrt(norm);
      const unit = new Float32Array(v.length);
      for (let i = 0; i < v.length; i++) unit[i] = norm === 0 ? 0 : v[i] / norm;
      this.units.set(hook, unit);
    }
    this.unsubscribe = engine.onStep((step) => this.onStep(step));
    engine.setTapSubscription({ hooks: [...this.units.keys()], dtype: 'f32', includePrompt: true });
  }

  /** Starts recording `requestId` (before its request is sent). */
  watch(requestId: string): void {
    this.watched.set(requestId, new Map([...this.units.keys()].map((hook) => [hook, []])));
  }

  /** Stops recording `requestId` and returns its projections by position. */
  take(requestId: string): Projections {
    const byHook = this.watched.get(requestId);
    this.watched.delete(requestId);
    const out = new Map<string, Float32Array>();
    for (const [hook, values] of byHook ?? []) {
      const dense = new Float32Array(values.length).fill(Number.NaN);
      values.forEach((x, p) => (dense[p] = x));
      out.set(hook, dense);
    }
    return out;
  }

  private onStep(step: RuntimeStep): void {
    for (const batch of step.activations) {
      const unit = this.units.get(batch.hook);
      if (unit === undefined || !(batch.data instanceof Float32Array)) continue;
      const d = batch.dModel;
      for (let row = 0; row < batch.requestIds.length; row++) {
        const values = this.watched.get(batch.requestIds[row])?.get(batch.hook);
        if (values === undefined) continue;
        let dot = 0;
        for (let k = 0, o = row * d; k < d; k++, o++) dot += batch.data[o] * unit[k];
        values[batch.positions[row]] = dot;
      }
    }
  }

  /** Switches the taps off again. */
  close(): void {
    this.unsubscribe();
    this.engine.setTapSubscription(null);
  }
}

/**
 * The first position p at which `projections` has been above `condition.above` for
 * `condition.forTokens` consecutive positions (p is the last of them); null when it never is.
 */
export function firstTrigger(projections: ArrayLike<number>, condition: ProjectionCondition): number | null {
  let run = 0;
  for (let p = 0; p < projections.length; p++) {
    // NaN (no row) compares false: a gap ends a run.
    run = projections[p] > condition.above ? run + 1 : 0;
    if (run >= condition.forTokens) return p;
  }
  return null;
}
