/**
 * A projection monitor's baseline recorded from live traffic (`serve --record-baseline`), each
 * request one document, like live-recording.ts for SAEs. The histogram edges come from the rows
 * (projection.ts: quantiles), so rows are kept as they are (4 bytes a row: a 30-minute recording
 * at 5,000 rows/s holds about 36 MB) and binned when the recording finishes.
 *
 * Bounded like the SAE recording: at most `maxOpenDocuments` requests are open at once; a new one
 * beyond that closes the least recently seen early.
 */
import { parseBaseline, type Baseline } from './baseline.js';
import type { BaselineIdentity } from './baseline-recorder.js';
import { ProjectionBaselineRecorder } from './projection.js';
import type { EncodedRows } from './rows.js';

export interface LiveProjectionRecordingOptions {
  /** Model id, or a function read when the recording finishes. */
  readonly model: string | (() => string);
  /** `sae.id` is the projection's name, `sae.hash` its `vector:` hash. */
  readonly sae: { readonly id: string; readonly hash: string };
  readonly hook: string;
  readonly saegateVersion: string;
  /** Requests accumulated at once. Default 1024. */
  readonly maxOpenDocuments?: number;
}

export class LiveProjectionRecording {
  private readonly open = new Map<string, Float32Array[]>();
  private readonly recorder = new ProjectionBaselineRecorder();
  private readonly maxOpen: number;
  /** Documents closed early because too many requests were open. */
  closedEarly = 0;

  constructor(private readonly options: LiveProjectionRecordingOptions) {
    this.maxOpen = options.maxOpenDocuments ?? 1024;
  }

  get documentCount(): number {
    return this.recorder.documentCount;
  }

  get tokens(): number {
    return this.recorder.tokens;
  }

  /** Adds a checked batch's projections to their requests' documents (a batch without them adds nothing). */
  add(batch: EncodedRows): void {
    const projection = batch.projection;
    if (projection === undefined) return;
    const { rows, requestIndex } = batch;
    // Rows of one request are usually contiguous in a frame: copy runs, not single values.
    let start = 0;
    for (let r = 1; r <= rows; r++) {
      if (r < rows && requestIndex[r] === requestIndex[start]) continue;
      this.documentFor(batch.requestIds[requestIndex[start]]).push(projection.slice(start, r));
      start = r;
    }
  }

  /** The request ended: its document is closed. */
  ended(requestId: string): void {
    const chunks = this.open.get(requestId);
    if (chunks !== undefined) this.close(requestId, chunks);
  }

  /**
   * Closes every open document and returns the baseline (validated). SAEGATE_ERR_MONITOR_ARGUMENT
   * when no rows, or only equal projections, were recorded (no edges).
   */
  finish(): Baseline {
    for (const [id, chunks] of this.open) this.close(id, chunks);
    const model = typeof this.options.model === 'function' ? this.options.model() : this.options.model;
    const identity: BaselineIdentity = { model, sae: { id: this.options.sae.id, hash: this.options.sae.hash }, hook: this.options.hook, saegateVersion: this.options.saegateVersion };
    return parseBaseline(this.recorder.toBaseline(identity), 'live recording');
  }

  private documentFor(id: string): Float32Array[] {
    let chunks = this.open.get(id);
    if (chunks !== undefined) {
      this.open.delete(id);
      this.open.set(id, chunks);
      return chunks;
    }
    if (this.open.size >= this.maxOpen) {
      const [oldestId, oldest] = this.open.entries().next().value as [string, Float32Array[]];
      this.close(oldestId, oldest);
      this.closedEarly++;
    }
    chunks = [];
    this.open.set(id, chunks);
    return chunks;
  }

  private close(id: string, chunks: Float32Array[]): void {
    this.open.delete(id);
    for (const chunk of chunks) this.recorder.addRows(chunk);
    this.recorder.endDocument();
  }
}
