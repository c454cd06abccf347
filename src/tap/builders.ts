/**
 * Frame builders for the model-server side, which holds rows as "request id per row" rather than
 * as the wire's request table. `ActivationFrameBuilder` turns per-row ids into the table with a
 * reused Map and index array, so building a frame allocates the frame and nothing per row.
 *
 * Building is split in `measure` and `build` so a sender can learn the exact frame size, compare
 * it against its queue budget, and drop the rows before paying for the copy and f16 conversion.
 */
import { argumentError, requestTableByteLength } from './layout.js';
import { activationsFrameByteLength, writeActivationsFrame, writeTokensFrame, type ActivationData } from './codec.js';
import type { StreamDtype } from './messages.js';

/** Rows of one hook point, in the model server's shape. */
export interface ActivationRows {
  /** Index of the hook point in the hello's `hookPoints` (u16). */
  hookIndex: number;
  /** Element type written into the frame. */
  dtype: StreamDtype;
  /** Values per row. */
  dModel: number;
  /** Request id of each row; the row count is `requestIds.length`. Ids take 1..255 UTF-8 bytes. */
  requestIds: readonly string[];
  /** Token position of each row (0 = first prompt token), one per row. */
  positions: ArrayLike<number>;
  /**
   * rows × dModel values, row-major. A Float32Array holds f32 values, a Uint16Array holds f16 bit
   * patterns; either is converted to `dtype` while it is copied into the frame. Several arrays are
   * consecutive parts of the rows (several decode steps), copied straight into the frame.
   */
  data: ActivationData;
}

/**
 * Turns per-row request ids into a frame's request table (distinct ids, in order of first row) and
 * an index column into it, with a reused map and index buffer: a steady stream of frames stops
 * allocating after the first few.
 */
class RequestTableIndex {
  private readonly indexById = new Map<string, number>();
  /** The distinct ids of the last `index` call. */
  readonly table: string[] = [];
  /** Row i's index into `table`, for the rows of the last `index` call (the array may be longer). */
  rowIndexes = new Uint16Array(1024);

  index(requestIds: readonly string[]): void {
    const count = requestIds.length;
    // Grow geometrically.
    if (this.rowIndexes.length < count) this.rowIndexes = new Uint16Array(Math.max(count, this.rowIndexes.length * 2));
    const { indexById, table, rowIndexes } = this;
    indexById.clear();
    table.length = 0;
    for (let i = 0; i < count; i++) {
      const id = requestIds[i];
      let index = indexById.get(id);
      if (index === undefined) {
        index = table.length;
        if (index === 0xffff) throw argumentError('more than 65535 distinct request ids in one frame');
        indexById.set(id, index);
        table.push(id);
      }
      rowIndexes[i] = index;
    }
  }
}

/**
 * Builds activations frames from per-row request ids. Keep one per sender: its id map and index
 * buffer are reused from frame to frame. Not safe to interleave `measure`/`build` of different rows.
 */
export class ActivationFrameBuilder {
  private readonly requests = new RequestTableIndex();
  private tableBytes = 0;
  private measured: ActivationRows | null = null;

  /** Lays out `rows` and returns the exact byte length of their frame. */
  measure(rows: ActivationRows): number {
    const rowCount = rows.requestIds.length;
    if (rows.positions.length !== rowCount) throw argumentError(`${rows.positions.length} positions for ${rowCount} rows`);
    this.requests.index(rows.requestIds);
    // Checks every id takes 1..MAX_ID_BYTES UTF-8 bytes.
    this.tableBytes = requestTableByteLength(this.requests.table);
    this.measured = rows;
    return activationsFrameByteLength(this.tableBytes, rowCount, rows.dModel, rows.dtype);
  }

  /**
   * Writes the frame for `rows` (one allocation). Reuses the layout from the last `measure` when it
   * was given the same, unmodified object. `droppedRowsSinceLastFrame` defaults to 0.
   */
  build(rows: ActivationRows, droppedRowsSinceLastFrame = 0): Uint8Array {
    if (this.measured !== rows) this.measure(rows);
    this.measured = null;
    return writeActivationsFrame({
      hookIndex: rows.hookIndex,
      dtype: rows.dtype,
      dModel: rows.dModel,
      droppedRows: droppedRowsSinceLastFrame,
      requestIds: this.requests.table,
      requestTableBytes: this.tableBytes,
      rowCount: rows.requestIds.length,
      rowRequestIndexes: this.requests.rowIndexes,
      positions: rows.positions,
      data: rows.data,
    });
  }
}

const sharedBuilder = new ActivationFrameBuilder();

/** One-shot form of ActivationFrameBuilder: builds the activations frame for `rows`. */
export function encodeActivationFrame(rows: ActivationRows, droppedRowsSinceLastFrame = 0): Uint8Array {
  return sharedBuilder.build(rows, droppedRowsSinceLastFrame);
}

/** Tokens of one step, one entry per (request, token). */
export interface TokenEntries {
  /** Request id of each entry. */
  requestIds: readonly string[];
  /** Token position of each entry (0 = first prompt token). */
  positions: ArrayLike<number>;
  /** Token id of each entry. */
  tokenIds: ArrayLike<number>;
  /**
   * Text piece of each entry. A character split across tokens goes with the token that completes
   * it (docs/tap-protocol.md), so every piece is valid UTF-8 on its own.
   */
  texts: readonly string[];
}

/**
 * Builds tokens frames from per-entry request ids, with a reused id map and index buffer (like
 * ActivationFrameBuilder): building a frame allocates the frame and nothing per entry.
 */
export class TokensFrameBuilder {
  private readonly requests = new RequestTableIndex();

  build(entries: TokenEntries): Uint8Array {
    const count = entries.requestIds.length;
    if (entries.positions.length !== count || entries.tokenIds.length !== count || entries.texts.length !== count) {
      throw argumentError('tokens: requestIds, positions, tokenIds and texts must have the same length');
    }
    this.requests.index(entries.requestIds);
    // writeTokensFrame validates id lengths (requestTableByteLength), positions and texts.
    return writeTokensFrame({ requestIds: this.requests.table, count, rowRequestIndexes: this.requests.rowIndexes, positions: entries.positions, tokenIds: entries.tokenIds, texts: entries.texts });
  }
}

const sharedTokensBuilder = new TokensFrameBuilder();

/** Builds a tokens frame from per-entry request ids. */
export function encodeTokensFrame(entries: TokenEntries): Uint8Array {
  return sharedTokensBuilder.build(entries);
}
