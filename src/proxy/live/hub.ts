/**
 * The live view's server-side state (`/ui`, docs/live-view.md): the last `maxRequests` requests,
 * each with at most `maxTokens` tokens and, per token, its `maxFeatures` strongest SAE features
 * (index, value, label), the policies and steering applied to it and the conditional triggers that
 * fired; plus a ring of `maxSamples` chart samples (drift scores when a {@link LiveDriftSource} is
 * plugged in, else the token and SAE-row rates counted here).
 *
 * **Bounds.** Memory is O(maxRequests · maxTokens · maxFeatures + maxSamples) whatever the traffic:
 * the oldest request is evicted when a new one arrives (and announced to viewers), tokens past the
 * cap are counted in `truncatedTokens`, not kept. Results for a request that is not (or no longer)
 * tracked are ignored, so late rows of an evicted request cannot bring it back.
 *
 * **Delivery.** Changes are not sent per SAE batch: a changed request is marked dirty and the
 * listeners get every dirty request's whole view at the next `flush()` (the routes call it on a
 * short timer), so a viewer costs one JSON message per flush interval, however many rows arrived.
 * A view is a plain JSON value; generated text in it is untrusted (the page renders it as text).
 */
import { SaegateError } from '../../common/errors.js';
import type { RuntimeRecord } from '../../policies/runtime.js';
import type { RequestEnd, TokensMessage } from '../../tap/messages.js';

/** What a drift monitor can show on the live view's chart (the monitor service plugs in here). */
export interface LiveDriftSource {
  snapshot(): { atMs: number; series: { name: string; value: number; threshold: number | null }[]; alerts: string[] };
}

/**
 * The part of an SAE result batch the hub reads (structurally `SaeResultBatch` from src/sae, which
 * the proxy layer may not import): row r is request `requestIds[rowRequestIndexes[r]]` at
 * `positions[r]`, features in `indices`/`values` [rowCount · topK], −1 padding.
 */
export interface LiveFeatureBatch {
  hook: string;
  rowCount: number;
  topK: number;
  requestIds: readonly string[];
  rowRequestIndexes: ArrayLike<number>;
  positions: ArrayLike<number>;
  tokenTexts: readonly string[];
  indices: ArrayLike<number>;
  values: ArrayLike<number>;
}

/** One feature on one token. */
export interface LiveFeature {
  /** Hook point of the SAE. */
  hook: string;
  /** Feature index. */
  index: number;
  value: number;
  /** The feature's label from the SAE's labels file, when it has one. */
  label?: string;
}

export interface LiveToken {
  position: number;
  /** Token text piece ('' when unknown). Untrusted. */
  text: string;
  /** Strongest first, at most `maxFeatures`. */
  features: LiveFeature[];
}

export interface LiveTrigger {
  /** `name@version`. */
  policy: string;
  kind: 'steer' | 'flag' | 'abort';
  flag?: string;
  triggerPosition: number;
  outcome?: string;
  /** Steps from the trigger to the first steered position, once measured. */
  lagSteps?: number;
}

/** One request as viewers see it. */
export interface LiveRequestView {
  id: string;
  route: string;
  model: string | null;
  /** Epoch ms. */
  startedAtMs: number;
  endedAtMs: number | null;
  finishReason: string | null;
  /** Prompt length in tokens, once the model server says (positions below it are the prompt). */
  promptTokens: number | null;
  /** Policies that matched. */
  policies: string[];
  /** Steering terms in the request's plan (before any trigger). */
  steeringTerms: number;
  /** The `x-saegate-applied` value, as last asked for. */
  applied: string | null;
  triggers: LiveTrigger[];
  /** Ordered by position. */
  tokens: LiveToken[];
  /** Tokens not kept (past `maxTokens`). */
  truncatedTokens: number;
}

/** One point of the chart. */
export interface LiveSample {
  atMs: number;
  /** `drift` when the values are a drift source's scores, `rates` when they are our own counts per second. */
  source: 'drift' | 'rates';
  series: { name: string; value: number; threshold: number | null }[];
  alerts: string[];
}

/**
 * The model behind the proxy, when whoever composed saegate knows it (the demo does); the page
 * shows it in its header, with a badge when it is synthetic.
 */
export interface LiveServedModel {
  /** The model id clients send. Untrusted like every text on the page. */
  name: string;
  /** Seeded random weights, not trained (its text is gibberish): the page labels it SYNTHETIC. */
  synthetic: boolean;
  /** One line on where it came from, or why the synthetic fallback was used; shown on hover. */
  detail: string | null;
}

/** Messages to viewers (the WebSocket's JSON text frames). */
export type LiveMessage =
  | {
      type: 'snapshot';
      maxRequests: number;
      maxSamples: number;
      featurePages: Record<string, string>;
      /** Null when the served model was not given. */
      servedModel: LiveServedModel | null;
      requests: LiveRequestView[];
      samples: LiveSample[];
    }
  | { type: 'model'; servedModel: LiveServedModel | null }
  | { type: 'requests'; requests: LiveRequestView[] }
  | { type: 'evict'; ids: string[] }
  | { type: 'sample'; sample: LiveSample };

export interface LiveHubOptions {
  /** Requests kept. Default 50. */
  maxRequests?: number;
  /** Tokens kept per request. Default 512. */
  maxTokens?: number;
  /** Features kept per token. Default 3. */
  maxFeatures?: number;
  /** Chart samples kept. Default 120. */
  maxSamples?: number;
  /** A feature's label, when its SAE has one. */
  label?: (hook: string, index: number) => string | undefined;
  /** Hook → URL of the SAE's feature page (served under /ui/features/). */
  featurePages?: Record<string, string>;
  /** Drift scores for the chart; without one the chart shows tokens/s and SAE rows/s. */
  drift?: LiveDriftSource;
  /** The model behind the proxy, for the page's header (also settable later: setServedModel). */
  servedModel?: LiveServedModel;
  /** Epoch ms. Default Date.now. */
  now?: () => number;
}

/** What the proxy knows when a request starts. */
export interface LiveRequestStart {
  requestId: string;
  route: string;
  model: string | null;
  policies: readonly string[];
  steeringTerms: number;
}

interface TrackedRequest {
  view: LiveRequestView;
  /** Position → token, for the kept ones. */
  byPosition: Map<number, LiveToken>;
  sorted: boolean;
}

export class LiveHub {
  readonly maxRequests: number;
  readonly maxTokens: number;
  readonly maxFeatures: number;
  readonly maxSamples: number;
  private readonly label: (hook: string, index: number) => string | undefined;
  private readonly featurePages: Record<string, string>;
  private readonly drift: LiveDriftSource | undefined;
  private servedModel: LiveServedModel | null;
  private readonly now: () => number;
  /** Insertion order = arrival order, so the first key is the oldest. */
  private readonly requests = new Map<string, TrackedRequest>();
  private readonly dirty = new Set<string>();
  private readonly evicted: string[] = [];
  private readonly samples: LiveSample[] = [];
  private readonly listeners = new Set<(message: LiveMessage) => void>();
  private tokensSinceSample = 0;
  private rowsSinceSample = 0;
  private lastSampleAt: number;
  /** A row's strongest features while it is scanned (features()). */
  private readonly scratchIndex: Int32Array;
  private readonly scratchValue: Float64Array;

  constructor(options: LiveHubOptions = {}) {
    this.maxRequests = positive(options.maxRequests ?? 50, 'maxRequests');
    this.maxTokens = positive(options.maxTokens ?? 512, 'maxTokens');
    this.maxFeatures = positive(options.maxFeatures ?? 3, 'maxFeatures');
    this.maxSamples = positive(options.maxSamples ?? 120, 'maxSamples');
    this.label = options.label ?? (() => undefined);
    this.featurePages = { ...options.featurePages };
    this.drift = options.drift;
    this.servedModel = options.servedModel === undefined ? null : { ...options.servedModel };
    this.now = options.now ?? Date.now;
    this.lastSampleAt = this.now();
    this.scratchIndex = new Int32Array(this.maxFeatures);
    this.scratchValue = new Float64Array(this.maxFeatures);
  }

  /** Requests tracked now, oldest first. */
  get size(): number {
    return this.requests.size;
  }

  /** A request's view, or undefined when it is not tracked. */
  request(requestId: string): LiveRequestView | undefined {
    const tracked = this.requests.get(requestId);
    if (tracked === undefined) return undefined;
    this.sortTokens(tracked);
    return tracked.view;
  }

  /** Receives every message from the next flush on; returns the unsubscribe function. */
  subscribe(listener: (message: LiveMessage) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** What a new viewer gets first. */
  snapshot(): LiveMessage {
    const requests = [...this.requests.values()].map((tracked) => {
      this.sortTokens(tracked);
      return tracked.view;
    });
    return {
      type: 'snapshot',
      maxRequests: this.maxRequests,
      maxSamples: this.maxSamples,
      featurePages: this.featurePages,
      servedModel: this.servedModel,
      requests,
      samples: [...this.samples],
    };
  }

  /** Says which model is behind the proxy (null: unknown); viewers are told at once, not at the next flush. */
  setServedModel(model: LiveServedModel | null): void {
    this.servedModel = model === null ? null : { ...model };
    this.emit({ type: 'model', servedModel: this.servedModel });
  }

  /** A generation request was resolved (called by the plan resolver wrapper). */
  started(start: LiveRequestStart): void {
    if (this.requests.has(start.requestId)) return;
    while (this.requests.size >= this.maxRequests) {
      const oldest = this.requests.keys().next().value as string;
      this.requests.delete(oldest);
      this.dirty.delete(oldest);
      this.evicted.push(oldest);
    }
    const view: LiveRequestView = {
      id: start.requestId,
      route: start.route,
      model: start.model,
      startedAtMs: this.now(),
      endedAtMs: null,
      finishReason: null,
      promptTokens: null,
      policies: [...start.policies],
      steeringTerms: start.steeringTerms,
      applied: null,
      triggers: [],
      tokens: [],
      truncatedTokens: 0,
    };
    this.requests.set(start.requestId, { view, byPosition: new Map(), sorted: true });
    this.dirty.add(start.requestId);
  }

  /** The request's `x-saegate-applied` value (asked for when its head and its final SSE comment are written). */
  applied(requestId: string, value: string): void {
    const tracked = this.requests.get(requestId);
    if (tracked === undefined || tracked.view.applied === value) return;
    tracked.view.applied = value;
    this.dirty.add(requestId);
  }

  /** The exchange is over on the proxy's side. */
  done(requestId: string): void {
    const tracked = this.requests.get(requestId);
    if (tracked === undefined || tracked.view.endedAtMs !== null) return;
    tracked.view.endedAtMs = this.now();
    this.dirty.add(requestId);
  }

  /** The model server's `end` for a request: its prompt length and finish reason. */
  end(end: RequestEnd): void {
    const tracked = this.requests.get(end.requestId);
    if (tracked === undefined) return;
    tracked.view.promptTokens = end.promptTokens;
    tracked.view.finishReason = end.finishReason;
    this.dirty.add(end.requestId);
  }

  /** Token texts from the tap (generated tokens, and prompt ones when subscribed), with or without SAE results. */
  tokens(message: TokensMessage): void {
    const n = message.positions.length;
    this.tokensSinceSample += n;
    const tracked = this.trackedOf(message.requestIds);
    if (tracked === null) return;
    for (let i = 0; i < n; i++) {
      const request = tracked[message.rowRequestIndexes[i]];
      if (request === undefined) continue;
      const token = this.token(request, message.positions[i]);
      if (token !== undefined && token.text === '') token.text = message.texts[i];
    }
  }

  /** One SAE result batch: each row's strongest features join its token's list (across SAEs). */
  features(batch: LiveFeatureBatch): void {
    this.rowsSinceSample += batch.rowCount;
    const { topK, indices, values } = batch;
    const tracked = this.trackedOf(batch.requestIds);
    if (tracked === null) return;
    for (let r = 0; r < batch.rowCount; r++) {
      const request = tracked[batch.rowRequestIndexes[r]];
      if (request === undefined) continue;
      const token = this.token(request, batch.positions[r]);
      if (token === undefined) continue;
      if (token.text === '') token.text = batch.tokenTexts[r];
      // Pick the row's strongest few in preallocated scratch first, so a row costs at most
      // `maxFeatures` feature objects however many slots it has (the engine lists every active one).
      const base = r * topK;
      const topIndex = this.scratchIndex;
      const topValue = this.scratchValue;
      let count = 0;
      for (let k = 0; k < topK; k++) {
        const index = indices[base + k];
        if (index < 0) break;
        const value = values[base + k];
        if (count === this.maxFeatures && value <= topValue[count - 1]) continue;
        let at = count < this.maxFeatures ? count++ : count - 1;
        while (at > 0 && topValue[at - 1] < value) {
          topIndex[at] = topIndex[at - 1];
          topValue[at] = topValue[at - 1];
          at--;
        }
        topIndex[at] = index;
        topValue[at] = value;
      }
      for (let k = 0; k < count; k++) this.offer(token.features, batch.hook, topIndex[k], topValue[k]);
    }
  }

  /** A conditional policy's trigger or a plan update's measured lag (ConditionRuntime.onRecord). */
  record(record: RuntimeRecord): void {
    const tracked = this.requests.get(record.requestId);
    if (tracked === undefined) return;
    const triggers = tracked.view.triggers;
    if (record.type === 'trigger') {
      // Bounded like tokens: a request has at most a few rules; a runaway flag cannot grow this.
      if (triggers.length >= this.maxTokens) return;
      triggers.push({
        policy: record.policy,
        kind: record.kind,
        triggerPosition: record.triggerPosition,
        ...(record.flag !== undefined && { flag: record.flag }),
        ...(record.outcome !== undefined && { outcome: record.outcome }),
      });
    } else {
      // A lag is reported again once its seconds are known; the steps do not change.
      const trigger = triggers.find((t) => t.kind === 'steer' && t.triggerPosition === record.triggerPosition && t.lagSteps === undefined);
      if (trigger === undefined) return;
      trigger.lagSteps = record.steps;
    }
    this.dirty.add(record.requestId);
  }

  /**
   * Takes one chart sample: the drift source's scores, or (without a source, or while it has no
   * series) the rates counted since the last sample.
   */
  sample(): LiveSample {
    const at = this.now();
    let sample: LiveSample;
    const snap = this.drift?.snapshot();
    if (snap !== undefined && snap.series.length > 0) {
      sample = { atMs: snap.atMs, source: 'drift', series: snap.series.map((s) => ({ ...s })), alerts: [...snap.alerts] };
    } else {
      // No drift source, or one with nothing to show yet (no baseline loaded): our own rates, so
      // the chart always draws; the source's alerts still show.
      const seconds = Math.max(at - this.lastSampleAt, 1) / 1000;
      sample = {
        atMs: at,
        source: 'rates',
        series: [
          { name: 'tokens/s', value: this.tokensSinceSample / seconds, threshold: null },
          { name: 'SAE rows/s', value: this.rowsSinceSample / seconds, threshold: null },
        ],
        alerts: snap === undefined ? [] : [...snap.alerts],
      };
    }
    this.tokensSinceSample = 0;
    this.rowsSinceSample = 0;
    this.lastSampleAt = at;
    this.samples.push(sample);
    if (this.samples.length > this.maxSamples) this.samples.splice(0, this.samples.length - this.maxSamples);
    this.emit({ type: 'sample', sample });
    return sample;
  }

  /** Sends evictions and every changed request's view to the listeners; a no-op when nothing changed. */
  flush(): void {
    if (this.evicted.length > 0) this.emit({ type: 'evict', ids: this.evicted.splice(0) });
    if (this.dirty.size === 0) return;
    const requests: LiveRequestView[] = [];
    for (const id of this.dirty) {
      const tracked = this.requests.get(id);
      if (tracked === undefined) continue;
      this.sortTokens(tracked);
      requests.push(tracked.view);
    }
    this.dirty.clear();
    if (requests.length > 0) this.emit({ type: 'requests', requests });
  }

  private emit(message: LiveMessage): void {
    for (const listener of this.listeners) listener(message);
  }

  /**
   * The tracked request of each entry of a request table (a tap message's or a result batch's),
   * each marked dirty: rows are then matched by index, not by id. null when none is tracked.
   */
  private trackedOf(requestIds: readonly string[]): (TrackedRequest | undefined)[] | null {
    let tracked: (TrackedRequest | undefined)[] | null = null;
    for (let k = 0; k < requestIds.length; k++) {
      const request = this.requests.get(requestIds[k]);
      if (request === undefined) continue;
      (tracked ??= new Array<TrackedRequest | undefined>(requestIds.length))[k] = request;
      this.dirty.add(request.view.id);
    }
    return tracked;
  }

  /** The token at `position` of a request `trackedOf` marked dirty, created if there is room; undefined past the cap. */
  private token(tracked: TrackedRequest, position: number): LiveToken | undefined {
    let token = tracked.byPosition.get(position);
    if (token === undefined) {
      if (tracked.byPosition.size >= this.maxTokens) {
        tracked.view.truncatedTokens++;
        return undefined;
      }
      token = { position, text: '', features: [] };
      tracked.byPosition.set(position, token);
      const tokens = tracked.view.tokens;
      if (tokens.length > 0 && tokens[tokens.length - 1].position > position) tracked.sorted = false;
      tokens.push(token);
    }
    return token;
  }

  /** Keeps the `maxFeatures` strongest features of a token, strongest first (insertion into a short sorted list). */
  private offer(features: LiveFeature[], hook: string, index: number, value: number): void {
    if (features.length >= this.maxFeatures && value <= features[features.length - 1].value) return;
    let at = features.length;
    while (at > 0 && features[at - 1].value < value) at--;
    const label = this.label(hook, index);
    features.splice(at, 0, label === undefined ? { hook, index, value } : { hook, index, value, label });
    if (features.length > this.maxFeatures) features.pop();
  }

  private sortTokens(tracked: TrackedRequest): void {
    if (tracked.sorted) return;
    tracked.view.tokens.sort((a, b) => a.position - b.position);
    tracked.sorted = true;
  }
}

function positive(value: number, name: string): number {
  if (!Number.isInteger(value) || value < 1) throw new SaegateError('SAEGATE_ERR_CONFIG', [`live view ${name}`, `must be a positive integer, got ${value}`]);
  return value;
}
