/**
 * The generation engine's main-thread half: validates requests, hands them to the runtime worker,
 * and fans the worker's per-step results out to token callbacks and step listeners (the tap).
 * onnxruntime never runs here; the worker owns the session and the KV cache.
 */
import type { Worker } from 'node:worker_threads';
import { SaegateError } from '../common/errors.js';
import type { Device } from '../common/ort.js';
import { siblingModule, spawnWorker } from '../common/worker.js';
import type { Engine, GenerateRequest, GenerateResult, TokenCallback } from './engine-types.js';
import { buildDecoderGraph } from './graph.js';
import type { FromWorker, TapSubscription, ToWorker, WorkerSteeringEntry } from './runtime-protocol.js';
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
  resolvePlan?: (requestId: string, planId: string, signal: AbortSignal | undefined) => Promise<WorkerSteeringEntry[]>;
}

/** One decode or prefill step, as seen by the tap. */
export type StepListener = (step: Extract<FromWorker, { type: 'step' }>) => void;
export type EndListener = (requestId: string, result: GenerateResult) => void;

interface Pending {
  onToken: TokenCallback;
  resolve: (result: GenerateResult) => void;
  reject: (error: Error) => void;
  cleanup: () => void;
}

export interface EngineStats {
  prefillSteps: number;
  decodeSteps: number;
  generatedTokens: number;
  /** Time inside onnxruntime, milliseconds. */
  runMs: number;
}

export class LocalEngine implements Engine {
  readonly config: ModelConfig;
  readonly hookPoints: readonly string[];
  readonly stats: EngineStats = { prefillSteps: 0, decodeSteps: 0, generatedTokens: 0, runMs: 0 };
  private readonly pending = new Map<string, Pending>();
  private readonly stepListeners = new Set<StepListener>();
  private readonly endListeners = new Set<EndListener>();
  private closed = false;
  private workerError: SaegateError | null = null;

  private constructor(
    private readonly worker: Worker,
    config: ModelConfig,
    private readonly resolvePlan: LocalEngineOptions['resolvePlan'],
  ) {
    this.config = config;
    this.hookPoints = allHookPoints(config);
    worker.on('message', (msg: FromWorker) => this.onMessage(msg));
    worker.on('error', (error) => this.failWorker(error.message));
    worker.on('exit', (code) => {
      if (!this.closed) this.failWorker(`exit code ${code}`);
    });
  }

  /** Builds the graph (on this thread, once), starts the worker and waits until its session is ready. */
  static async create(options: LocalEngineOptions): Promise<LocalEngine> {
    const maxSlots = options.maxBatch ?? 8;
    if (!Number.isInteger(maxSlots) || maxSlots < 1) throw new SaegateError('SAEGATE_ERR_CONFIG', ['maxBatch', `a positive integer, got ${maxSlots}`]);
    const model = buildDecoderGraph(options.weights, { maxSlots });
    const worker = spawnWorker(siblingModule(import.meta.url, 'runtime-worker'));
    const ready = new Promise<void>((resolve, reject) => {
      const onMessage = (msg: FromWorker): void => {
        if (msg.type === 'ready') resolve();
        else if (msg.type === 'init_error') reject(SaegateError.fromWire(msg));
        else return;
        worker.off('message', onMessage);
      };
      worker.on('message', onMessage);
      worker.once('error', reject);
    });
    const init: ToWorker = {
      type: 'init',
      model,
      config: options.weights.config,
      maxSlots,
      device: options.device ?? 'cpu',
      intraOpThreads: options.intraOpThreads,
      prefillTokenBudget: options.prefillTokenBudget ?? 2048,
      samplableVocab: options.samplableVocab ?? options.weights.config.vocabSize,
    };
    worker.postMessage(init, [model.buffer as ArrayBuffer]);
    try {
      await ready;
    } catch (error) {
      await worker.terminate();
      throw error;
    }
    return new LocalEngine(worker, options.weights.config, options.resolvePlan);
  }

  private post(msg: ToWorker, transfer: ArrayBuffer[] = []): void {
    this.worker.postMessage(msg, transfer);
  }

  private onMessage(msg: FromWorker): void {
    switch (msg.type) {
      case 'step': {
        if (msg.phase === 'prefill') this.stats.prefillSteps++;
        else this.stats.decodeSteps++;
        this.stats.runMs += msg.runMs;
        this.stats.generatedTokens += msg.tokens.tokenIds.length;
        const { requestIds, tokenIds, positions } = msg.tokens;
        for (let i = 0; i < requestIds.length; i++) this.deliverToken(requestIds[i], tokenIds[i], positions[i]);
        for (const listener of this.stepListeners) listener(msg);
        break;
      }
      case 'done': {
        const result: GenerateResult = { finishReason: msg.finishReason, promptTokens: msg.promptTokens, completionTokens: msg.completionTokens };
        const p = this.pending.get(msg.requestId);
        this.pending.delete(msg.requestId);
        for (const listener of this.endListeners) listener(msg.requestId, result);
        p?.cleanup();
        p?.resolve(result);
        break;
      }
      case 'request_error': {
        const p = this.pending.get(msg.requestId);
        this.pending.delete(msg.requestId);
        p?.cleanup();
        p?.reject(SaegateError.fromWire(msg));
        break;
      }
      default:
        break;
    }
  }

  /**
   * Hands a token to its request's callback. A callback that throws fails that request alone (it
   * is cancelled and its promise rejects); it must not take the process down from a worker event.
   */
  private deliverToken(requestId: string, tokenId: number, position: number): void {
    const p = this.pending.get(requestId);
    if (!p) return;
    try {
      p.onToken(tokenId, position);
    } catch (error) {
      this.pending.delete(requestId);
      this.post({ type: 'cancel', requestId });
      p.cleanup();
      p.reject(error instanceof Error ? error : new SaegateError('SAEGATE_ERR_RUNTIME', [String(error)]));
    }
  }

  private failWorker(reason: string): void {
    this.workerError = new SaegateError('SAEGATE_ERR_WORKER_EXITED', [reason]);
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      p.cleanup();
      p.reject(this.workerError);
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
    if (!Number.isInteger(request.maxTokens) || request.maxTokens < 1) {
      throw new SaegateError('SAEGATE_ERR_BAD_REQUEST', [`max_tokens must be a positive integer, got ${request.maxTokens}`], { param: 'max_tokens' });
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
    if (this.workerError) throw this.workerError;
    this.validate(request);
    if (request.signal?.aborted) return { finishReason: 'abort', promptTokens: request.promptTokens.length, completionTokens: 0 };

    let planEntries: WorkerSteeringEntry[] = [];
    if (request.planId) {
      if (!this.resolvePlan) throw new SaegateError('SAEGATE_ERR_PLAN_TIMEOUT', [request.planId, request.requestId, 0]);
      planEntries = await this.resolvePlan(request.requestId, request.planId, request.signal);
      this.validateSteering(planEntries);
    }

    return new Promise<GenerateResult>((resolve, reject) => {
      const onAbort = (): void => this.post({ type: 'cancel', requestId: request.requestId });
      request.signal?.addEventListener('abort', onAbort, { once: true });
      this.pending.set(request.requestId, {
        onToken,
        resolve,
        reject,
        cleanup: () => request.signal?.removeEventListener('abort', onAbort),
      });
      this.post({
        type: 'submit',
        requestId: request.requestId,
        promptTokens: request.promptTokens,
        maxTokens: request.maxTokens,
        sampling: request.sampling,
        stopTokenIds: [...request.stopTokenIds],
        steering: request.steering,
        planSteering: planEntries,
      });
    });
  }

  /** Replaces the plan-derived steering of a running request from its next step on. */
  updatePlan(requestId: string, entries: WorkerSteeringEntry[]): void {
    this.validateSteering(entries);
    this.post({ type: 'plan', requestId, entries });
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
    this.post({ type: 'close' });
    await this.worker.terminate();
  }
}
