/**
 * The steering vectors saegate sent on the current connection, by content-hash id
 * (docs/tap-protocol.md §4). saegate tracks which vectors a connection holds, so the store is
 * emptied when the connection ends and a new one starts from none.
 */
import { isVectorIdValid } from './codec.js';

export class VectorStore {
  private readonly dModel: number;
  private readonly vectors = new Map<string, Float32Array>();
  private rejectedCount = 0;

  /** @param dModel the width every vector must have (the hello's `dModel`). */
  constructor(dModel: number) {
    this.dModel = dModel;
  }

  /** Vectors discarded because their id did not match their content or their length was not dModel. */
  get rejected(): number {
    return this.rejectedCount;
  }

  /** Vectors held. */
  get size(): number {
    return this.vectors.size;
  }

  /**
   * Keeps a received vector if its id is the hash of its values and its length is dModel, and
   * returns the stored copy; otherwise counts it as rejected and returns null. Not fatal to the
   * connection: a plan naming a rejected id is refused as "unknown vector", which tells saegate
   * precisely what went wrong without a reconnect loop.
   */
  accept(id: string, values: Float32Array): Float32Array | null {
    if (values.length !== this.dModel || !isVectorIdValid({ id, values })) {
      this.rejectedCount++;
      return null;
    }
    // Own the values: the decoded array may be a view of a socket buffer.
    const owned = new Float32Array(values);
    this.vectors.set(id, owned);
    return owned;
  }

  get(id: string): Float32Array | undefined {
    return this.vectors.get(id);
  }

  /** The connection ended. */
  clear(): void {
    this.vectors.clear();
  }
}
