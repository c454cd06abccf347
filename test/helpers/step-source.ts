/**
 * A stand-in for LocalEngine on the tap bridge's side: tests and benches hand it steps and ends,
 * and it calls the bridge's listeners the way the engine does (onStep per forward pass, onEnd per
 * finished request), with no model or worker behind it. It records the tap subscription the
 * bridge sets, so a caller can build activations only when saegate asked for them.
 */
import type { EndListener, StepListener } from '../../src/model/engine.js';
import type { GenerateResult } from '../../src/model/engine-types.js';
import type { RuntimeStep, TapSubscription } from '../../src/model/runtime-protocol.js';
import type { TapEngine } from '../../src/model/tap-bridge.js';
import { allHookPoints } from '../../src/model/types.js';

export class StepSource implements TapEngine {
  readonly config: TapEngine['config'];
  readonly hookPoints: readonly string[];
  private readonly steps = new Set<StepListener>();
  private readonly ends = new Set<EndListener>();
  /** The subscription the bridge last set (null: untapped). */
  tap: TapSubscription | null = null;

  constructor(config: TapEngine['config']) {
    this.config = config;
    this.hookPoints = allHookPoints(config);
  }

  onStep(listener: StepListener): () => void {
    this.steps.add(listener);
    return () => this.steps.delete(listener);
  }

  onEnd(listener: EndListener): () => void {
    this.ends.add(listener);
    return () => this.ends.delete(listener);
  }

  setTapSubscription(subscription: TapSubscription | null): void {
    this.tap = subscription;
  }

  isActive(): boolean {
    return true;
  }

  updatePlan(): void {}

  /** Hands `step` to every step listener, as the engine does after a forward pass. */
  step(step: RuntimeStep): void {
    for (const listener of this.steps) listener(step);
  }

  /** Tells every end listener that `requestId` finished. */
  end(requestId: string, result: GenerateResult): void {
    for (const listener of this.ends) listener(requestId, result);
  }
}
