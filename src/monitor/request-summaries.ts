/**
 * Per-request summaries: for each request seen in the encoded rows, its token count, mean L0 and
 * FVU, its top features (by activation summed over its tokens) and the maximum activation of each
 * watched feature. Bounded in every direction:
 *
 * - at most `maxOpenRequests` requests are tracked at once; a new request beyond that evicts the
 *   one least recently seen (its summary is lost; `evicted` counts them);
 * - each request accumulates at most `maxFeaturesPerRequest` distinct features in an
 *   open-addressing table of typed arrays (features first seen after it is ¾ full are not
 *   counted; `droppedFeatures` in the summary says how many entries were skipped);
 * - request states are pooled: `finish` returns one to the pool, so steady traffic allocates no
 *   typed arrays at all.
 *
 * Memory: `maxOpenRequests × (maxFeaturesPerRequest × 16 + watched × 4)` bytes plus a dense
 * `d_sae × 4`-byte map from feature to watched slot.
 */
import { err } from '../common/errors.js';
import { checkEncodedRows, type EncodedRows } from './rows.js';

export interface RequestSummariesOptions {
  readonly dSae: number;
  /** Features whose maximum activation is kept per request. Default none. */
  readonly watchedFeatures?: readonly number[];
  /** Top features reported per request. Default 8. */
  readonly topFeatures?: number;
  /** Distinct features accumulated per request; a power of two. Default 1024. */
  readonly maxFeaturesPerRequest?: number;
  /** Requests tracked at once. Default 256. */
  readonly maxOpenRequests?: number;
}

/** One of a request's top features. */
export interface RequestFeature {
  readonly feature: number;
  /** Sum of the feature's activations over the request's tokens. */
  readonly activationSum: number;
  readonly maxActivation: number;
  /** Tokens where it fired. */
  readonly firings: number;
}

export interface RequestSummary {
  readonly requestId: string;
  readonly tokens: number;
  readonly meanL0: number;
  readonly meanFvu: number;
  /** Highest `activationSum` first (ties: lower feature index first). */
  readonly topFeatures: readonly RequestFeature[];
  /** Per watched feature, in option order: its maximum activation (0 if it never fired). */
  readonly watched: readonly { readonly feature: number; readonly maxActivation: number }[];
  /** Active-latent entries not counted because the request's feature table was full. */
  readonly droppedFeatures: number;
}

const EMPTY = -1;

/** One request's accumulators; reused through the pool. */
class RequestState {
  requestId = '';
  lastSeen = 0;
  tokens = 0;
  l0Sum = 0;
  fvuSum = 0;
  size = 0;
  dropped = 0;
  readonly keys: Int32Array;
  readonly sums: Float32Array;
  readonly maxes: Float32Array;
  readonly firings: Uint32Array;
  readonly watchedMax: Float32Array;

  constructor(capacity: number, watched: number) {
    this.keys = new Int32Array(capacity).fill(EMPTY);
    this.sums = new Float32Array(capacity);
    this.maxes = new Float32Array(capacity);
    this.firings = new Uint32Array(capacity);
    this.watchedMax = new Float32Array(watched);
  }

  reset(requestId: string): void {
    this.requestId = requestId;
    this.tokens = 0;
    this.l0Sum = 0;
    this.fvuSum = 0;
    this.size = 0;
    this.dropped = 0;
    this.keys.fill(EMPTY);
    this.sums.fill(0);
    this.maxes.fill(0);
    this.firings.fill(0);
    this.watchedMax.fill(0);
  }

  memoryBytes(): number {
    return this.keys.byteLength + this.sums.byteLength + this.maxes.byteLength + this.firings.byteLength + this.watchedMax.byteLength;
  }
}

/** Bounded per-request feature summaries; see the file comment. */
export class RequestSummaries {
  readonly dSae: number;
  /** Requests evicted before `finish` because `maxOpenRequests` were open. */
  evicted = 0;
  private readonly watchedFeatures: readonly number[];
  private readonly watchSlot: Int32Array;
  private readonly topFeatures: number;
  private readonly capacity: number;
  private readonly loadLimit: number;
  private readonly maxOpenRequests: number;
  private readonly open = new Map<string, RequestState>();
  private readonly pool: RequestState[] = [];
  private allocated = 0;
  private tick = 0;

  constructor(options: RequestSummariesOptions) {
    const { dSae } = options;
    if (!Number.isInteger(dSae) || dSae <= 0) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `dSae must be a positive integer, got ${dSae}`);
    this.dSae = dSae;
    this.watchedFeatures = options.watchedFeatures ?? [];
    this.watchSlot = new Int32Array(dSae).fill(-1);
    this.watchedFeatures.forEach((feature, slot) => {
      if (!Number.isInteger(feature) || feature < 0 || feature >= dSae) {
        throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `watched feature ${feature} is outside d_sae = ${dSae}`);
      }
      if (this.watchSlot[feature] !== -1) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `watched feature ${feature} is listed twice`);
      this.watchSlot[feature] = slot;
    });
    this.topFeatures = options.topFeatures ?? 8;
    if (!Number.isInteger(this.topFeatures) || this.topFeatures < 1) {
      throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `topFeatures must be a positive integer, got ${this.topFeatures}`);
    }
    this.capacity = options.maxFeaturesPerRequest ?? 1024;
    if (!Number.isInteger(this.capacity) || this.capacity < 2 || (this.capacity & (this.capacity - 1)) !== 0) {
      throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `maxFeaturesPerRequest must be a power of two ≥ 2, got ${this.capacity}`);
    }
    // Linear probing stays short below ¾ load; past it new features are dropped, not probed for.
    this.loadLimit = (this.capacity * 3) >>> 2;
    this.maxOpenRequests = options.maxOpenRequests ?? 256;
    if (!Number.isInteger(this.maxOpenRequests) || this.maxOpenRequests < 1) {
      throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `maxOpenRequests must be a positive integer, got ${this.maxOpenRequests}`);
    }
  }

  /** Checks `batch` and adds its rows to their requests' summaries. */
  ingest(batch: EncodedRows): void {
    checkEncodedRows(batch, this.dSae);
    this.add(batch);
  }

  /** `ingest` without the check. */
  add(batch: EncodedRows): void {
    // Resolve request ids to states once per batch, not per row.
    const states = batch.requestIds.map((id) => this.stateFor(id));
    const { rows, offsets, indices, values, l0, fvu, requestIndex } = batch;
    const mask = this.capacity - 1;
    for (let r = 0; r < rows; r++) {
      const state = states[requestIndex[r]];
      state.tokens++;
      state.l0Sum += l0[r];
      state.fvuSum += fvu[r];
      const { keys, sums, maxes, firings, watchedMax } = state;
      for (let i = offsets[r]; i < offsets[r + 1]; i++) {
        const feature = indices[i];
        const value = values[i];
        const watch = this.watchSlot[feature];
        if (watch >= 0 && value > watchedMax[watch]) watchedMax[watch] = value;
        // Multiplicative hash, then linear probing.
        let at = Math.imul(feature, 0x9e3779b1) >>> 0 & mask;
        while (keys[at] !== EMPTY && keys[at] !== feature) at = (at + 1) & mask;
        if (keys[at] === EMPTY) {
          if (state.size >= this.loadLimit) {
            state.dropped++;
            continue;
          }
          keys[at] = feature;
          state.size++;
        }
        sums[at] += value;
        if (value > maxes[at]) maxes[at] = value;
        firings[at]++;
      }
    }
  }

  /** The summary of an open request so far, or undefined if it is not tracked. */
  summary(requestId: string): RequestSummary | undefined {
    const state = this.open.get(requestId);
    return state === undefined ? undefined : this.summarise(state);
  }

  /** The request's final summary (undefined if not tracked); stops tracking it and frees its state. */
  finish(requestId: string): RequestSummary | undefined {
    const state = this.open.get(requestId);
    if (state === undefined) return undefined;
    const summary = this.summarise(state);
    this.open.delete(requestId);
    this.pool.push(state);
    return summary;
  }

  /** Requests tracked now. */
  get openRequests(): number {
    return this.open.size;
  }

  /** Bytes of typed arrays held (open and pooled states, the watch map). Bounded by the options. */
  memoryBytes(): number {
    const perState = new RequestState(0, 0).memoryBytes() + this.capacity * 16 + this.watchedFeatures.length * 4;
    return this.watchSlot.byteLength + this.allocated * perState;
  }

  private stateFor(requestId: string): RequestState {
    this.tick++;
    const known = this.open.get(requestId);
    if (known !== undefined) {
      known.lastSeen = this.tick;
      return known;
    }
    if (this.open.size >= this.maxOpenRequests) this.evictOldest();
    let state = this.pool.pop();
    if (state === undefined) {
      state = new RequestState(this.capacity, this.watchedFeatures.length);
      this.allocated++;
    }
    state.reset(requestId);
    state.lastSeen = this.tick;
    this.open.set(requestId, state);
    return state;
  }

  /** Linear in open requests, and only when a new request arrives with the table full. */
  private evictOldest(): void {
    let oldest: RequestState | undefined;
    for (const state of this.open.values()) if (oldest === undefined || state.lastSeen < oldest.lastSeen) oldest = state;
    if (oldest === undefined) return;
    this.open.delete(oldest.requestId);
    this.pool.push(oldest);
    this.evicted++;
  }

  private summarise(state: RequestState): RequestSummary {
    // Keep the best `topFeatures` entries by insertion into a small sorted list.
    const top: RequestFeature[] = [];
    const better = (a: RequestFeature, b: RequestFeature): boolean => a.activationSum > b.activationSum || (a.activationSum === b.activationSum && a.feature < b.feature);
    for (let at = 0; at < this.capacity; at++) {
      const feature = state.keys[at];
      if (feature === EMPTY) continue;
      const entry = { feature, activationSum: state.sums[at], maxActivation: state.maxes[at], firings: state.firings[at] };
      if (top.length === this.topFeatures && !better(entry, top[top.length - 1])) continue;
      let i = top.length;
      while (i > 0 && better(entry, top[i - 1])) i--;
      top.splice(i, 0, entry);
      if (top.length > this.topFeatures) top.pop();
    }
    return {
      requestId: state.requestId,
      tokens: state.tokens,
      meanL0: state.tokens === 0 ? 0 : state.l0Sum / state.tokens,
      meanFvu: state.tokens === 0 ? 0 : state.fvuSum / state.tokens,
      topFeatures: top,
      watched: this.watchedFeatures.map((feature, slot) => ({ feature, maxActivation: state.watchedMax[slot] })),
      droppedFeatures: state.dropped,
    };
  }
}
