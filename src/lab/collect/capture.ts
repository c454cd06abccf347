/**
 * Assembling one request's rows: RequestCapture keeps the rows and prompt tokens of one collection
 * request as they arrive from the tap, indexed by position, and says when they cover the prompt.
 * The collector's sink (sink.ts) feeds it; the scheduler (scheduler.ts) waits on its outcome.
 */
import { f16ToF32 } from '../../common/f16.js';
import type { RequestEnd } from '../../tap/messages.js';

/** Positions at or above this are refused rather than allocated for (no real prompt is this long). */
const MAX_POSITIONS = 1 << 22;
const INITIAL_POSITIONS = 64;

/** How one attempt at a request ended: complete, or what was missing (and whether its `end` never came). */
export type AttemptResult = { ok: true } | { ok: false; problem: string; noEnd: boolean };

const EMPTY_F32 = new Float32Array(0);
const EMPTY_U8 = new Uint8Array(0);
const EMPTY_I32 = new Int32Array(0);

/**
 * One request's rows and tokens as they arrive from the tap, indexed by position. Positions are
 * only known to be prompt positions once the `end` gives the prompt length, so everything is kept
 * until then (with a one-token completion that is the prompt plus at most one position).
 */
export class RequestCapture {
  private capacity = 0;
  private rowData = EMPTY_F32;
  private rowSeen = EMPTY_U8;
  private ids = EMPTY_I32;
  private idSeen = EMPTY_U8;
  private texts: string[] = [];
  private end: RequestEnd | null = null;
  /** Prompt positions without a row / a token; counted when the end arrives, then kept up to date. */
  private missingRows = 0;
  private tokensHeld = 0;
  private outOfRange: number | null = null;
  /** Called after anything arrived, while someone waits for the outcome. */
  private onChange: (() => void) | null = null;

  constructor(
    readonly requestId: string,
    private readonly dModel: number,
  ) {}

  /** Copies `count` rows at positions `position…` from `data` (row `firstRow` on), f16 converted. */
  putRows(position: number, count: number, data: Float32Array | Uint16Array, firstRow: number): void {
    if (!this.reserve(position + count)) return;
    const d = this.dModel;
    const source = data.subarray(firstRow * d, (firstRow + count) * d);
    const target = this.rowData.subarray(position * d, (position + count) * d);
    if (source instanceof Float32Array) target.set(source);
    else f16ToF32(source, target);
    const promptLength = this.end?.promptTokens ?? -1;
    for (let p = position; p < position + count; p++) {
      if (this.rowSeen[p] === 0 && p < promptLength) this.missingRows--;
      this.rowSeen[p] = 1;
    }
    this.onChange?.();
  }

  putToken(position: number, tokenId: number, text: string): void {
    if (!this.reserve(position + 1)) return;
    if (this.idSeen[position] === 0 && this.end !== null && position < this.end.promptTokens) this.tokensHeld++;
    this.idSeen[position] = 1;
    this.ids[position] = tokenId;
    this.texts[position] = text;
    this.onChange?.();
  }

  ended(end: RequestEnd): void {
    if (this.end !== null) return;
    this.end = end;
    const p = Math.min(end.promptTokens, this.capacity);
    let rows = 0;
    let tokens = 0;
    for (let i = 0; i < p; i++) {
      rows += this.rowSeen[i];
      tokens += this.idSeen[i];
    }
    this.missingRows = end.promptTokens - rows;
    this.tokensHeld = tokens;
    this.onChange?.();
  }

  /** Null while waiting for the end; then 'complete' or what is missing. */
  private status(): 'complete' | string | null {
    const end = this.end;
    if (end === null) return null;
    if (this.outOfRange !== null) return `position ${this.outOfRange} is beyond any prompt (${MAX_POSITIONS} positions)`;
    if (end.finishReason === 'error' || end.finishReason === 'abort') return `the model server ended the request with finishReason '${end.finishReason}'`;
    if (end.promptTokens < 1) return 'the model server reported an empty prompt';
    // Prompt tokens are all or nothing: a server need not send them, but half of them is a loss.
    const tokensOk = this.tokensHeld === 0 || this.tokensHeld === end.promptTokens;
    if (this.missingRows === 0 && tokensOk) return 'complete';
    const parts: string[] = [];
    if (this.missingRows > 0) parts.push(`${this.missingRows} of ${end.promptTokens} prompt rows missing (first at position ${this.firstMissing(this.rowSeen, end.promptTokens)})`);
    if (!tokensOk) parts.push(`${end.promptTokens - this.tokensHeld} of ${end.promptTokens} prompt tokens missing`);
    return parts.join(', ');
  }

  private firstMissing(seen: Uint8Array, length: number): number {
    for (let i = 0; i < length; i++) if (i >= seen.length || seen[i] === 0) return i;
    return -1;
  }

  /**
   * Resolves once the request is complete, or with what is missing: rows still missing `graceMs`
   * after the end, no end `endTimeoutMs` after this call (made when the HTTP response is in).
   * Rejects with the signal's reason on abort.
   */
  outcome(timing: { endTimeoutMs: number; graceMs: number }, signal: AbortSignal): Promise<AttemptResult> {
    return new Promise<AttemptResult>((resolve, reject) => {
      let grace: NodeJS.Timeout | null = null;
      const settle = (): void => {
        clearTimeout(endTimer);
        if (grace !== null) clearTimeout(grace);
        signal.removeEventListener('abort', onAbort);
        this.onChange = null;
      };
      const onAbort = (): void => {
        settle();
        reject(signal.reason);
      };
      const check = (): void => {
        const status = this.status();
        if (status === null) return;
        if (status === 'complete') {
          settle();
          resolve({ ok: true });
          return;
        }
        // Rows may trail the end on servers that do not flush first: wait a little for them.
        grace ??= setTimeout(() => {
          settle();
          resolve({ ok: false, problem: this.status() ?? 'no end', noEnd: false });
        }, timing.graceMs);
      };
      const endTimer = setTimeout(() => {
        settle();
        resolve({ ok: false, problem: `no end message on the tap within ${timing.endTimeoutMs} ms of the HTTP response`, noEnd: true });
      }, timing.endTimeoutMs);
      if (signal.aborted) {
        onAbort();
        return;
      }
      signal.addEventListener('abort', onAbort, { once: true });
      this.onChange = check;
      check();
    });
  }

  /** The first `keep` prompt positions, trimmed to size. Call after a complete outcome. */
  take(keep: number): { rows: Float32Array; tokenIds: Int32Array; tokenTexts: string[]; promptTokens: number; tokenCount: number } {
    const promptTokens = this.end!.promptTokens;
    const n = Math.min(promptTokens, keep);
    const values = n * this.dModel;
    const rows = this.rowData.length === values ? this.rowData : this.rowData.slice(0, values);
    const hasTokens = this.tokensHeld > 0;
    return {
      rows,
      tokenIds: hasTokens ? this.ids.slice(0, n) : new Int32Array(0),
      tokenTexts: hasTokens ? this.texts.slice(0, n) : [],
      promptTokens,
      tokenCount: n,
    };
  }

  /** Grows the position arrays to hold `positions`; false (and remembered) past MAX_POSITIONS. */
  private reserve(positions: number): boolean {
    if (positions <= this.capacity) return true;
    if (positions > MAX_POSITIONS) {
      this.outOfRange ??= positions - 1;
      this.onChange?.();
      return false;
    }
    const capacity = Math.min(MAX_POSITIONS, Math.max(positions, INITIAL_POSITIONS, this.capacity * 2));
    const rowData = new Float32Array(capacity * this.dModel);
    rowData.set(this.rowData);
    const rowSeen = new Uint8Array(capacity);
    rowSeen.set(this.rowSeen);
    const ids = new Int32Array(capacity);
    ids.set(this.ids);
    const idSeen = new Uint8Array(capacity);
    idSeen.set(this.idSeen);
    this.rowData = rowData;
    this.rowSeen = rowSeen;
    this.ids = ids;
    this.idSeen = idSeen;
    this.capacity = capacity;
    return true;
  }
}

