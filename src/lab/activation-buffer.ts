/**
 * Shuffling activation rows for SAE training. Rows collected from a model come in document order,
 * and consecutive positions of one document are strongly correlated; a training batch should be
 * a sample from many documents. Two ways to get there:
 *
 * - `ActivationBuffer`, the mixing buffer SAELens uses (`mixing_buffer`): rows are added until the
 *   buffer holds `capacityRows`; then it is shuffled and its first half handed out as batches while
 *   the second half stays to be mixed with the next rows. A row therefore leaves at a random time
 *   after it came in, and every batch mixes rows from about `capacityRows` of input. Memory is
 *   fixed at `capacityRows × dIn × 4` bytes (plus one row), allocated once; nothing spills to disk.
 * - `InMemoryRows`, when the whole dataset fits in memory: a seeded permutation per epoch, rows
 *   gathered into one preallocated batch buffer.
 *
 * Both are deterministic: the same seed and the same input give the same batches, bit for bit.
 * Batches are views into the object's own memory, valid until the next call that changes it
 * (documented per method): use or copy them before asking for more.
 */
import { err } from '../common/errors.js';
import { SeededRandom } from '../common/random.js';

function positiveInteger(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1) throw err('SAEGATE_ERR_CONFIG', name, `a positive integer, got ${value}`);
  return value;
}

/** Uniform integer in [0, n) from `random`. */
function below(random: SeededRandom, n: number): number {
  return Math.floor(random.next() * n);
}

/** Options of {@link ActivationBuffer}. */
export interface ActivationBufferOptions {
  /** Width of a row (the SAE's d_in, the model's d_model). */
  dIn: number;
  /**
   * Rows held before any batch is handed out; the buffer's memory is `capacityRows × dIn × 4`
   * bytes. At least `2 × batchRows`, so that half a buffer holds a batch. SAELens' default
   * is 64 batches' worth of rows; larger mixes better.
   */
  capacityRows: number;
  /** Rows per batch. */
  batchRows: number;
  /** Seed of the shuffles. */
  seed: number;
}

/**
 * The mixing buffer. Drive it with `add` and `nextBatch`:
 *
 * ```ts
 * for (const doc of documents) {
 *   for (let done = 0; done < doc.rowCount; ) {
 *     done += buffer.add(doc.rows.subarray(done * dIn), doc.rowCount - done);
 *     for (let batch = buffer.nextBatch(); batch !== null; batch = buffer.nextBatch()) train(batch);
 *   }
 * }
 * buffer.finish();
 * for (let batch = buffer.nextBatch(); batch !== null; batch = buffer.nextBatch()) train(batch);
 * ```
 */
export class ActivationBuffer {
  readonly dIn: number;
  readonly capacityRows: number;
  readonly batchRows: number;
  private readonly storage: Float32Array;
  /** One row, for swaps. */
  private readonly swapRow: Float32Array;
  private readonly random: SeededRandom;
  /** Rows in `storage`, the handed-out ones at the front included. */
  private size = 0;
  /** First row not handed out yet. */
  private head = 0;
  /** Rows [head, readyEnd) are shuffled and waiting to be handed out as batches. */
  private readyEnd = 0;
  private finished = false;

  constructor(options: ActivationBufferOptions) {
    this.dIn = positiveInteger('ActivationBuffer.dIn', options.dIn);
    this.batchRows = positiveInteger('ActivationBuffer.batchRows', options.batchRows);
    this.capacityRows = positiveInteger('ActivationBuffer.capacityRows', options.capacityRows);
    if (this.capacityRows < 2 * this.batchRows) {
      throw err('SAEGATE_ERR_CONFIG', 'ActivationBuffer.capacityRows', `at least 2 × batchRows (${2 * this.batchRows}), got ${this.capacityRows}`);
    }
    if (!Number.isFinite(options.seed)) throw err('SAEGATE_ERR_CONFIG', 'ActivationBuffer.seed', `a number, got ${options.seed}`);
    this.storage = new Float32Array(this.capacityRows * this.dIn);
    this.swapRow = new Float32Array(this.dIn);
    this.random = new SeededRandom(options.seed);
  }

  /** Bytes of row storage: `capacityRows × dIn × 4`. */
  get byteLength(): number {
    return this.storage.byteLength;
  }

  /** Rows held and not handed out yet. */
  get rowCount(): number {
    return this.size - this.head;
  }

  /**
   * Copies up to `count` rows (the first `count × dIn` values of `rows`; default all of them) in
   * and returns how many it took: fewer when the buffer fills up, and 0 while batches from the
   * last shuffle are still waiting (take them with `nextBatch` first). Invalidates batches handed
   * out before. Throws SAEGATE_ERR_ARGUMENT (a caller bug) after `finish()` or when `rows` is shorter than
   * `count` rows.
   */
  add(rows: Float32Array, count: number = Math.floor(rows.length / this.dIn)): number {
    if (this.finished) throw err('SAEGATE_ERR_ARGUMENT', 'ActivationBuffer.add: the buffer is finished');
    if (!Number.isSafeInteger(count) || count < 0 || count * this.dIn > rows.length) {
      throw err('SAEGATE_ERR_ARGUMENT', `ActivationBuffer.add: ${count} rows of ${this.dIn} need ${count * this.dIn} values, got ${rows.length}`);
    }
    if (this.head < this.readyEnd) return 0;
    this.compact();
    const taken = Math.min(count, this.capacityRows - this.size);
    this.storage.set(rows.subarray(0, taken * this.dIn), this.size * this.dIn);
    this.size += taken;
    return taken;
  }

  /**
   * The next batch (`batchRows × dIn` values), or null when none is ready: the buffer is not full
   * yet (add more) or, after `finish()`, empty. When the buffer is full this shuffles it and
   * makes the first half (whole batches of it) ready. After `finish()` the rest is shuffled and
   * handed out too, the last batch possibly shorter. A batch is a view into the buffer, valid
   * until the next `add`.
   */
  nextBatch(): Float32Array | null {
    if (this.head === this.readyEnd && !this.prepare()) return null;
    const rows = Math.min(this.batchRows, this.readyEnd - this.head);
    const batch = this.storage.subarray(this.head * this.dIn, (this.head + rows) * this.dIn);
    this.head += rows;
    return batch;
  }

  /** No more rows will come: `nextBatch` hands out everything still held. */
  finish(): void {
    this.finished = true;
  }

  /** Shuffles and marks rows ready; false when there is nothing to hand out yet. */
  private prepare(): boolean {
    const held = this.size - this.head;
    if (held === this.capacityRows) {
      // Full: a uniformly random half, in random order, goes out; the rest waits for new rows.
      this.compact();
      const ready = Math.floor(this.capacityRows / 2 / this.batchRows) * this.batchRows;
      this.shuffleFront(ready);
      this.readyEnd = ready;
      return true;
    }
    if (this.finished && held > 0) {
      this.compact();
      this.shuffleFront(this.size);
      this.readyEnd = this.size;
      return true;
    }
    return false;
  }

  /** Partial Fisher–Yates: rows [0, k) become a uniform random sample of rows [0, size), in random order. */
  private shuffleFront(k: number): void {
    const n = this.size;
    for (let i = 0; i < k && i < n - 1; i++) this.swap(i, i + below(this.random, n - i));
  }

  private swap(a: number, b: number): void {
    if (a === b) return;
    const d = this.dIn;
    const storage = this.storage;
    this.swapRow.set(storage.subarray(a * d, a * d + d));
    storage.copyWithin(a * d, b * d, b * d + d);
    storage.set(this.swapRow, b * d);
  }

  /** Drops the handed-out rows at the front. */
  private compact(): void {
    if (this.head === 0) return;
    this.storage.copyWithin(0, this.head * this.dIn, this.size * this.dIn);
    this.size -= this.head;
    this.readyEnd = Math.max(0, this.readyEnd - this.head);
    this.head = 0;
  }
}

/**
 * A dataset that fits in memory (`rowCount × dIn` values), handed out in a fresh seeded order each
 * epoch. The rows are not copied or reordered; each batch is gathered into one batch buffer that
 * is allocated once and reused for every batch of every epoch.
 */
export class InMemoryRows {
  readonly dIn: number;
  readonly rowCount: number;
  private readonly rows: Float32Array;
  private readonly order: Uint32Array;
  private batch: Float32Array = new Float32Array(0);

  /** `rows`: `rowCount × dIn` values, row-major. Throws SAEGATE_ERR_CONFIG when its length is not a multiple of `dIn`. */
  constructor(rows: Float32Array, dIn: number) {
    this.dIn = positiveInteger('InMemoryRows.dIn', dIn);
    if (rows.length % dIn !== 0) throw err('SAEGATE_ERR_CONFIG', 'InMemoryRows.rows', `a multiple of dIn (${dIn}) values, got ${rows.length}`);
    this.rows = rows;
    this.rowCount = rows.length / dIn;
    this.order = new Uint32Array(this.rowCount);
  }

  /** Bytes held: the rows, the permutation and the batch buffer. */
  get byteLength(): number {
    return this.rows.byteLength + this.order.byteLength + this.batch.byteLength;
  }

  /**
   * One epoch: every row once, in the order a Fisher–Yates shuffle seeded with `seed` gives (pass a
   * different seed per epoch, e.g. base seed + epoch). Yields `batchRows × dIn` values per batch;
   * the last batch is shorter when `batchRows` does not divide the row count, and skipped with
   * `dropLast`. Every batch is the same reused buffer (or a prefix of it): it is overwritten by the
   * next one.
   */
  *epochBatches(batchRows: number, seed: number, options: { dropLast?: boolean } = {}): Generator<Float32Array, void, undefined> {
    positiveInteger('InMemoryRows.batchRows', batchRows);
    if (!Number.isFinite(seed)) throw err('SAEGATE_ERR_CONFIG', 'InMemoryRows.seed', `a number, got ${seed}`);
    const d = this.dIn;
    if (this.batch.length < batchRows * d) this.batch = new Float32Array(batchRows * d);
    const batch = this.batch;
    const order = this.order;
    const n = this.rowCount;
    // Every epoch starts from the identity, so its order depends on its seed alone.
    for (let i = 0; i < n; i++) order[i] = i;
    const random = new SeededRandom(seed);
    for (let i = n - 1; i > 0; i--) {
      const j = below(random, i + 1);
      const t = order[i];
      order[i] = order[j];
      order[j] = t;
    }
    for (let start = 0; start < n; start += batchRows) {
      const count = Math.min(batchRows, n - start);
      if (count < batchRows && options.dropLast === true) return;
      for (let r = 0; r < count; r++) {
        const source = order[start + r] * d;
        batch.set(this.rows.subarray(source, source + d), r * d);
      }
      yield count === batchRows ? batch.subarray(0, batchRows * d) : batch.subarray(0, count * d);
    }
  }
}
