import { describe, expect, it } from 'vitest';
import { vectorId } from '../../../src/tap/codec.js';
import { VectorStore } from '../../../src/tap/vector-store.js';

describe('VectorStore', () => {
  it('keeps a vector whose id is the hash of its values, as its own copy', () => {
    const store = new VectorStore(3);
    const values = new Float32Array([1, 2, 3]);
    const stored = store.accept(vectorId(values), values);
    expect(stored).toEqual(new Float32Array([1, 2, 3]));
    values[0] = 99;
    expect(store.get(vectorId(new Float32Array([1, 2, 3])))).toEqual(new Float32Array([1, 2, 3]));
    expect(store.rejected).toBe(0);
    expect(store.size).toBe(1);
  });

  it('rejects and counts a vector whose id does not match its content or whose length is not dModel', () => {
    const store = new VectorStore(3);
    const values = new Float32Array([1, 2, 3]);
    expect(store.accept(vectorId(new Float32Array([1, 2, 4])), values)).toBeNull();
    const short = new Float32Array([1, 2]);
    expect(store.accept(vectorId(short), short)).toBeNull();
    expect(store.rejected).toBe(2);
    expect(store.size).toBe(0);
    expect(store.get(vectorId(short))).toBeUndefined();
  });

  it('starts from no vectors after clear (a new connection)', () => {
    const store = new VectorStore(2);
    const values = new Float32Array([0.5, -0.5]);
    store.accept(vectorId(values), values);
    store.clear();
    expect(store.get(vectorId(values))).toBeUndefined();
    expect(store.size).toBe(0);
  });
});
