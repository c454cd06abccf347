/**
 * One bounded min-heap per feature, keeping each feature's top `capacity` items by a numeric key
 * (the activation), ties going to the item seen first (the smaller sequence number).
 *
 * Struct-of-arrays: keys and sequence numbers live in typed arrays, feature f's heap in slots
 * [f·capacity, (f+1)·capacity), so sifting compares numbers in one or two cache lines instead of
 * chasing item objects (which, profiled on a 16k-latent SAE, made the heap the slowest part of
 * the accumulator). Items are only moved, never read, by the heap.
 */
export class TopHeaps<T> {
  readonly capacity: number;
  /**
   * Per feature, the root's key once the heap is full, −Infinity before: an item seen after every
   * held one gets in only with a key above it. Exposed so hot loops can skip most candidates with
   * one typed-array read before calling `admits`; read-only to callers.
   */
  readonly floor: Float64Array;
  private readonly keys: Float64Array;
  private readonly sequence: Float64Array;
  private readonly items: (T | undefined)[];
  private readonly sizes: Int32Array;

  constructor(options: { features: number; capacity: number }) {
    const { features, capacity } = options;
    this.capacity = capacity;
    this.floor = new Float64Array(features).fill(-Infinity);
    this.keys = new Float64Array(features * capacity);
    this.sequence = new Float64Array(features * capacity);
    this.items = new Array<T | undefined>(features * capacity);
    this.sizes = new Int32Array(features);
  }

  /** Items held for feature f. */
  size(f: number): number {
    return this.sizes[f];
  }

  /** The item `push` would evict: f's lowest item when the heap is full, else undefined. */
  evictee(f: number): T | undefined {
    return this.capacity > 0 && this.sizes[f] === this.capacity ? this.items[f * this.capacity] : undefined;
  }

  /** Whether an item with this key and sequence number would enter f's heap. */
  admits(f: number, key: number, seq: number): boolean {
    if (this.capacity === 0) return false;
    if (this.sizes[f] < this.capacity) return true;
    const root = f * this.capacity;
    return key > this.keys[root] || (key === this.keys[root] && seq < this.sequence[root]);
  }

  /** Adds an item that `admits` accepted, evicting the lowest when full. */
  push(f: number, key: number, seq: number, item: T): void {
    const base = f * this.capacity;
    const size = this.sizes[f];
    if (size < this.capacity) {
      this.place(base + size, key, seq, item);
      this.sizes[f] = size + 1;
      this.siftUp(base, size);
    } else {
      this.place(base, key, seq, item);
      this.siftDown(base, size, 0);
    }
    if (this.sizes[f] === this.capacity) this.floor[f] = this.keys[base];
  }

  /** f's items, highest key first (ties: lowest sequence number first). */
  sorted(f: number): T[] {
    const base = f * this.capacity;
    const order = Array.from({ length: this.sizes[f] }, (_, i) => base + i);
    order.sort((a, b) => this.keys[b] - this.keys[a] || this.sequence[a] - this.sequence[b]);
    return order.map((slot) => this.items[slot] as T);
  }

  private place(slot: number, key: number, seq: number, item: T): void {
    this.keys[slot] = key;
    this.sequence[slot] = seq;
    this.items[slot] = item;
  }

  /** True when slot a ranks below slot b: lower key, or equal key and seen later. */
  private below(a: number, b: number): boolean {
    const ka = this.keys[a];
    const kb = this.keys[b];
    return ka < kb || (ka === kb && this.sequence[a] > this.sequence[b]);
  }

  private swap(a: number, b: number): void {
    const key = this.keys[a];
    this.keys[a] = this.keys[b];
    this.keys[b] = key;
    const seq = this.sequence[a];
    this.sequence[a] = this.sequence[b];
    this.sequence[b] = seq;
    const item = this.items[a];
    this.items[a] = this.items[b];
    this.items[b] = item;
  }

  private siftUp(base: number, at: number): void {
    let i = at;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.below(base + i, base + parent)) return;
      this.swap(base + i, base + parent);
      i = parent;
    }
  }

  private siftDown(base: number, size: number, at: number): void {
    let i = at;
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let lowest = i;
      if (left < size && this.below(base + left, base + lowest)) lowest = left;
      if (right < size && this.below(base + right, base + lowest)) lowest = right;
      if (lowest === i) return;
      this.swap(base + i, base + lowest);
      i = lowest;
    }
  }
}
