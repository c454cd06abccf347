/**
 * The generation engine's main-thread half: validates requests, hands them to the runtime worker,
 * and fans the worker's per-step results out to token callbacks and step listeners (the tap).
 * onnxruntime never runs here; the worker owns the session and the KV cache. The thread is a
 * `WorkerHost` with restart policy `'never'`: the KV cache and every running sequence die with it,
 * so after a loss every request fails with SAEGATE_ERR_WORKER_EXITED until the server restarts.
 */
import { SaegateError } from '../common/errors.js';
import type { Device } from '../common/ort.js';
import { siblingModule } from '../common/worker.js';
import { WorkerHost } from '../common/worker-host.js';
import type { Engine, EngineStats, GenerateRequest, GenerateResult, PromptLogprobs, TokenCallback } from './engine-types.js';
import { buildDecoderGraph } from './graph.js';
import { absoluteSteering, type PlanSteeringEntry, type RuntimeNotice, type RuntimeStep, type RuntimeWorkerProtocol, type TapSubscription, type WorkerSteeringEntry } from './runtime-protocol.js';
import { allHookPoints, type ModelConfig, type ModelWeights } from './types.js';

export interface LocalEngineOptions {
  weights: ModelWeights;
  /** Largest decode batch (KV-cache slots). Default 8. */
  maxBatch?: number;
  /** Default 'cpu'. */
  device?: Device;
  /** onnxruntime intra-op threads; default onnxruntime's choice. */
  intraOpThreads?: number;
  /** Most padded prompt tokens prefilled in one step when several requests arrive at once. Default 2048. */
  prefillTokenBudget?: number;
  /**
   * Ids at or above this are never sampled: a Hugging Face tokenizer may be smaller than the
   * model's (padded) embedding, and ids it cannot decode must not be generated. Default: the
   * model's vocabulary size.
   */
  samplableVocab?: number;
  /**
   * Resolves the steering plan that saegate announced for a request (`planId`), waiting for it
   * to arrive. Without it, a request that names a plan is refused.
   */
  resolvePlan?: (requestId: string, planId: string, signal: AbortSignal | undefined) => Promise<PlanSteeringEntry[]>;
}

/** One decode or prefill step, as seen by the tap. */
export type StepListener = (step: RuntimeStep) => void;
export type EndListener = (requestId: string, result: GenerateResult) => void;

interface Pending {
  /** Prompt tokens: where a plan's `prompt` span ends and its `generated` span starts. */
  promptLength: number;
  onToken: TokenCallback;
  onPromptLogprobs: ((result: PromptLogprobs) => void) | null;
  reject: (error: Error) => void;
  cleanup: () => void;
}

export class LocalEngine implements Engine {
  readonly config: ModelConfig;
  readonly hookPoints: readonly string[];
  readonly stats: EngineStats = { prefillSteps: 0, decodeSteps: 0, generatedTokens: 0, runMs: 0 };
  private readonly pending = new Map<string, Pending>();
  private readonly stepListeners = new Set<StepListener>();
  private readonly endListeners = new Set<EndListener>();
  private closed = false;
  /** Set once `create` has the host; worker events arrive only after that. */
  private host!: WorkerHost<RuntimeWorkerProtocol>;

  private constructor(
    config: ModelConfig,
    private readonly resolvePlan: LocalEngineOptions['resolvePlan'],
  ) {
    this.config = config;
    this.hookPoints = allHookPoints(config);
  }

  /** Builds the graph (on this thread, once), starts the worker and waits until its session is ready. */
  static async create(options: LocalEngineOptions): Promise<LocalEngine> {
    const maxSlots = options.maxBatch ?? 8;
    if (!Number.isInteger(maxSlots) || maxSlots < 1) throw new SaegateError('SAEGATE_ERR_CONFIG', ['maxBatch', `a positive integer, got ${maxSlots}`]);
    const model = buildDecoderGraph(options.weights, { maxSlots });
    const engine = new LocalEngine(options.weights.config, options.resolvePlan);
    engine.host = await WorkerHost.start<RuntimeWorkerProtocol>({
      entry: siblingModule(import.meta.url, 'runtime-worker'),
      name: 'model runtime worker',
      // Called once (restart 'never'), so the graph bytes can be transferred rather than copied.
      init: () => ({
        init: {
          model,
          config: options.weights.config,
          maxSlots,
          device: options.device ?? 'cpu',
          intraOpThreads: options.intraOpThreads,
          prefillTokenBudget: options.prefillTokenBudget ?? 2048,
          samplableVocab: options.samplableVocab ?? options.weights.config.vocabSize,
        },
        transfer: [model.buffer as ArrayBuffer],
      }),
      onEvent: (step) => engine.onStepEvent(step),
      restart: 'never',
    });
    return engine;
  }

  private post(msg: RuntimeNotice): void {
    this.host.notify(msg);
  }

  private onStepEvent(step: RuntimeStep): void {
    if (step.phase === 'prefill') this.stats.prefillSteps++;
    else this.stats.decodeSteps++;
    this.stats.runMs += step.runMs;
    this.stats.generatedTokens += step.tokens.tokenIds.length;
    // Before the step's tokens: a response echoing the prompt writes its log-probabilities first.
    for (const result of step.promptLogprobs ?? []) this.deliver(result.requestId, (p) => p.onPromptLogprobs?.(result));
    const { requestIds, tokenIds, positions } = step.tokens;
    for (let i = 0; i < requestIds.length; i++) this.deliverToken(requestIds[i], tokenIds[i], positions[i]);
    for (const listener of this.stepListeners) listener(step);
  }

  /**
   * Hands a token to its request's callback. A callback that throws fails that request alone (it
   * is cancelled and its promise rejects); it must not take the process down from a worker event.
   */
  private deliverToken(requestId: string, tokenId: number, position: number): void {
    this.deliver(requestId, (p) => p.onToken(tokenId, position));
  }

  /** Runs one of a request's callbacks; one that throws fails that request (see deliverToken). */
  private deliver(requestId: string, call: (p: Pending) => void): void {
    const p = this.pending.get(requestId);
    if (!p) return;
    try {
      call(p);
    } catch (error) {
      this.pending.delete(requestId);
      this.post({ type: 'cancel', requestId });
      p.cleanup();
      p.reject(error instanceof Error ? error : new SaegateError('SAEGATE_ERR_RUNTIME', [String(error)]));
    }
  }

  /** Checks a request against the model before it reaches the worker. */
  private validate(request: GenerateRequest): void {
    const cfg = this.config;
    if (this.pending.has(request.requestId)) throw new SaegateError('SAEGATE_ERR_BAD_REQUEST', [`request id '${request.requestId}' is already in flight`]);
    if (request.promptTokens.length === 0) throw new SaegateError('SAEGATE_ERR_BAD_REQUEST', ['the prompt is empty'], { param: 'prompt' });
    for (const t of request.promptTokens) {
      if (!Number.isInteger(t) || t < 0 || t >= cfg.vocabSize) {
        throw new SaegateError('SAEGATE_ERR_BAD_REQUEST', [`prompt token ${t} is outside the vocabulary [0, ${cfg.vocabSize})`], { param: 'prompt' });
      }
    }
    // 0 only scores the prompt, which makes sense only when its log-probabilities are wanted.
    const minTokens = request.promptLogprobs ? 0 : 1;
    if (!Number.isInteger(request.maxTokens) || request.maxTokens < minTokens) {
      const expected = minTokens === 0 ? 'a non-negative integer' : 'a positive integer (0 only with prompt log-probabilities)';
      throw new SaegateError('SAEGATE_ERR_BAD_REQUEST', [`max_tokens must be ${expected}, got ${request.maxTokens}`], { param: 'max_tokens' });
    }
    const top = request.promptLogprobs?.top;
    if (top !== undefined && (!Number.isInteger(top) || top < 0 || top > this.config.vocabSize)) {
      throw new SaegateError('SAEGATE_ERR_BAD_REQUEST', [`logprobs must be an integer in [0, ${this.config.vocabSize}], got ${top}`], { param: 'logprobs' });
    }
    const total = request.promptTokens.length + request.maxTokens;
    if (total > cfg.maxSeqLen) {
      throw new SaegateError('SAEGATE_ERR_CONTEXT_LENGTH', [cfg.maxSeqLen, total, request.promptTokens.length, request.maxTokens], { param: 'max_tokens' });
    }
    this.validateSteering(request.steering);
  }

  /** Throws SAEGATE_ERR_STEERING for hooks this model lacks or vectors of the wrong width. */
  validateSteering(entries: readonly WorkerSteeringEntry[]): void {
    for (const e of entries) {
      if (!this.hookPoints.includes(e.hook)) {
        throw new SaegateError('SAEGATE_ERR_STEERING', [`unknown hook '${e.hook}'; this model has blocks.0..${this.config.nLayers - 1}.hook_resid_pre|hook_resid_post`]);
      }
      if (e.vector.length !== this.config.dim) {
        throw new SaegateError('SAEGATE_ERR_STEERING', [`vector for '${e.hook}' has ${e.vector.length} values, the model's d_model is ${this.config.dim}`]);
      }
      if (!Number.isFinite(e.scale)) throw new SaegateError('SAEGATE_ERR_STEERING', [`scale for '${e.hook}' is not finite`]);
    }
  }

  async generate(request: GenerateRequest, onToken: TokenCallback): Promise<GenerateResult> {
    if (this.closed) throw new SaegateError('SAEGATE_ERR_SHUTTING_DOWN');
    const lost = this.host.exitError;
    if (lost) throw lost;
    this.validate(request);
    if (request.signal?.aborted) return { finishReason: 'abort', promptTokens: request.promptTokens.length, completionTokens: 0 };

    let planEntries: WorkerSteeringEntry[] = [];
    if (request.planId) {
      if (!this.resolvePlan) throw new SaegateError('SAEGATE_ERR_PLAN_TIMEOUT', [request.planId, request.requestId, 0]);
      planEntries = absoluteSteering(await this.resolvePlan(request.requestId, request.planId, request.signal), request.promptTokens.length);
      this.validateSteering(planEntries);
    }

    return new Promise<GenerateResult>((resolve, reject) => {
      const onAbort = (): void => this.post({ type: 'cancel', requestId: request.requestId });
      request.signal?.addEventListener('abort', onAbort, { once: true });
      const cleanup = (): void => request.signal?.removeEventListener('abort', onAbort);
      this.pending.set(request.requestId, { promptLength: request.promptTokens.length, onToken, onPromptLogprobs: request.promptLogprobs?.onResult ?? null, reject, cleanup });
      // Settles after every step event of this request (the worker answers after its last step).
      // A request already failed here (its token callback threw, or close()) stays failed: the
      // pending entry is gone and settling the promise again does nothing.
      this.host
        .request({
          requestId: request.requestId,
          promptTokens: request.promptTokens,
          maxTokens: request.maxTokens,
          sampling: request.sampling,
          stopTokenIds: [...request.stopTokenIds],
          steering: request.steering,
          planSteering: planEntries,
          promptLogprobs: request.promptLogprobs?.top ?? null,
        })
        .then(
          (done) => {
            const result: GenerateResult = { finishReason: done.finishReason, promptTokens: done.promptTokens, completionTokens: done.completionTokens };
            if (this.pending.get(request.requestId)?.reject === reject) this.pending.delete(request.requestId);
            for (const listener of this.endListeners) listener(request.requestId, result);
            cleanup();
            resolve(result);
          },
          (error: Error) => {
            if (this.pending.get(request.requestId)?.reject === reject) this.pending.delete(request.requestId);
            cleanup();
            reject(error);
          },
        );
    });
  }

  /** Replaces the plan-derived steering of a running request from its next step on. */
  updatePlan(requestId: string, entries: PlanSteeringEntry[]): void {
    const pending = this.pending.get(requestId);
    const absolute = absoluteSteering(entries, pending?.promptLength ?? 0);
    this.validateSteering(absolute);
    this.post({ type: 'plan', requestId, entries: absolute });
  }

  /** Whether a request is queued or running. */
  isActive(requestId: string): boolean {
    return this.pending.has(requestId);
  }

  /** Streams the given hook points from the next step on; null stops streaming. */
  setTapSubscription(subscription: TapSubscription | null): void {
    if (subscription) {
      for (const h of subscription.hooks) {
        if (!this.hookPoints.includes(h)) throw new SaegateError('SAEGATE_ERR_STEERING', [`cannot tap unknown hook '${h}'`]);
      }
    }
    this.post({ type: 'tap', subscription });
  }

  onStep(listener: StepListener): () => void {
    this.stepListeners.add(listener);
    return () => this.stepListeners.delete(listener);
  }

  onEnd(listener: EndListener): () => void {
    this.endListeners.add(listener);
    return () => this.endListeners.delete(listener);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      p.cleanup();
      p.reject(new SaegateError('SAEGATE_ERR_SHUTTING_DOWN'));
    }
    await this.host.close();
  }
}
