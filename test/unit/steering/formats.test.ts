import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { SaegateError } from '../../../src/common/errors.js';
import { writeSafetensors } from '../../../src/common/safetensors.js';
import { parseVectorBytes, readVectorFile, toControlVectorGguf, writeVectorFile, type VectorFileFormat } from '../../../src/steering/formats.js';
import { parseSaeReference, VectorStore } from '../../../src/steering/store.js';
import { makeSteeringVector } from '../../../src/steering/vector.js';
import { vectorId } from '../../../src/tap/codec.js';
import { expectSaegateError } from '../../helpers/errors.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'saegate-vectors-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function seeded(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    out[i] = (x / 2 ** 32 - 0.5) * 4;
  }
  return out;
}

const d = 64;
const sample = makeSteeringVector('<memory>', new Map([
  ['blocks.3.hook_resid_post', seeded(d, 1)],
  ['blocks.1.hook_resid_post', seeded(d, 2)],
]), { model: 'stories260K', method: 'mean-diff', position: 'last', counts: { positive: 12, negative: 10 }, seed: 7 });

/**
 * A llama.cpp control vector written byte by byte from GGUF's documented layout (v3), independent
 * of src/steering/gguf.ts: header, three metadata entries, two `direction.N` tensor infos, padding
 * to 32, F32 data each at a 32-aligned offset.
 */
function handWrittenControlVector(directions: [number, Float32Array][], modelHint: string): Buffer {
  const parts: Buffer[] = [];
  const u32 = (v: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(v); parts.push(b); };
  const u64 = (v: number) => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); parts.push(b); };
  const str = (s: string) => { u64(Buffer.byteLength(s)); parts.push(Buffer.from(s, 'utf8')); };
  parts.push(Buffer.from('GGUF', 'ascii'));
  u32(3); // version
  u64(directions.length); // tensor count
  u64(3); // metadata kv count
  str('general.architecture'); u32(8); str('controlvector');
  str('controlvector.model_hint'); u32(8); str(modelHint);
  str('controlvector.layer_count'); u32(4); u32(directions.length);
  let offset = 0;
  for (const [layer, values] of directions) {
    str(`direction.${layer}`);
    u32(1); // n_dims
    u64(values.length);
    u32(0); // GGML_TYPE_F32
    u64(offset);
    offset += Math.ceil((values.length * 4) / 32) * 32;
  }
  let length = parts.reduce((a, b) => a + b.length, 0);
  parts.push(Buffer.alloc((32 - (length % 32)) % 32));
  for (const [, values] of directions) {
    const b = Buffer.alloc(Math.ceil((values.length * 4) / 32) * 32);
    values.forEach((v, i) => b.writeFloatLE(v, i * 4));
    parts.push(b);
  }
  length = parts.reduce((a, b) => a + b.length, 0);
  return Buffer.concat(parts, length);
}

describe('steering vector files', () => {
  it.each<VectorFileFormat>(['safetensors', 'json', 'gguf'])('round-trips a vector through %s with the same content id and exact values', (format) => {
    const file = path.join(dir, `sample.${format}`);
    writeVectorFile(file, sample);
    const back = readVectorFile(file);
    expect(back.id).toBe(sample.id);
    expect([...back.hooks.keys()]).toEqual(['blocks.1.hook_resid_post', 'blocks.3.hook_resid_post']);
    for (const [hook, values] of sample.hooks) expect(back.hooks.get(hook)).toEqual(values);
    expect(back.tapIds.get('blocks.3.hook_resid_post')).toBe(vectorId(sample.hooks.get('blocks.3.hook_resid_post')!));
    if (format === 'gguf') {
      expect(back.metadata).toMatchObject({ model: 'stories260K', method: 'import' });
    } else {
      expect(back.metadata).toMatchObject({ model: 'stories260K', method: 'mean-diff', position: 'last', counts: { positive: 12, negative: 10 }, seed: 7 });
    }
    expect(back.metadata.norms['blocks.1.hook_resid_post']).toBeCloseTo(Math.hypot(...sample.hooks.get('blocks.1.hook_resid_post')!), 4);
  });

  it('imports a control vector written byte by byte from llama.cpp\'s layout, direction.N as blocks.N.hook_resid_post', () => {
    const five = seeded(d, 5);
    const two = seeded(d, 9);
    const bytes = handWrittenControlVector([[5, five], [2, two]], 'llama-3.1-8b');
    const vector = parseVectorBytes(path.join(dir, 'hand.gguf'), bytes);
    expect([...vector.hooks.keys()]).toEqual(['blocks.2.hook_resid_post', 'blocks.5.hook_resid_post']);
    expect(vector.hooks.get('blocks.5.hook_resid_post')).toEqual(five);
    expect(vector.hooks.get('blocks.2.hook_resid_post')).toEqual(two);
    expect(vector.metadata.model).toBe('llama-3.1-8b');
  });

  it('exports exactly the bytes of llama.cpp\'s layout', () => {
    const vector = makeSteeringVector('<memory>', new Map([
      ['blocks.2.hook_resid_post', seeded(d, 9)],
      ['blocks.5.hook_resid_post', seeded(d, 5)],
    ]), { model: 'llama-3.1-8b' });
    const expected = handWrittenControlVector([[2, seeded(d, 9)], [5, seeded(d, 5)]], 'llama-3.1-8b');
    expect(Buffer.from(toControlVectorGguf('out.gguf', vector)).equals(expected)).toBe(true);
  });

  it('refuses to export hooks that have no control-vector counterpart', () => {
    const pre = makeSteeringVector('<memory>', new Map([['blocks.2.hook_resid_pre', seeded(d, 1)]]));
    expectSaegateError(() => toControlVectorGguf('x.gguf', pre), 'SAEGATE_ERR_VECTOR_FILE', 'blocks.2.hook_resid_pre', 'no llama.cpp control-vector counterpart');
    const zero = makeSteeringVector('<memory>', new Map([['blocks.0.hook_resid_post', seeded(d, 1)]]));
    expectSaegateError(() => toControlVectorGguf('x.gguf', zero), 'SAEGATE_ERR_VECTOR_FILE', 'N ≥ 1');
  });

  it('refuses GGUF files that are not control vectors, or have a layer-0 or 2-D direction', () => {
    const hand = handWrittenControlVector([[0, seeded(8, 1)]], '');
    expectSaegateError(() => parseVectorBytes('zero.gguf', hand), 'SAEGATE_ERR_VECTOR_FILE', 'zero.gguf', 'layer 1');
    const notCv = Buffer.from(hand);
    // Overwrite "controlvector" (the architecture value) with another 13-byte name.
    const at = notCv.indexOf('controlvector');
    notCv.write('llamallamalla', at, 'ascii');
    expectSaegateError(() => parseVectorBytes('llama.gguf', notCv), 'SAEGATE_ERR_VECTOR_FILE', 'general.architecture', '"llamallamalla"');
  });

  it('gives a typed error for every truncation of a valid GGUF file, never a crash', () => {
    const bytes = handWrittenControlVector([[1, seeded(16, 1)], [3, seeded(16, 2)]], 'm');
    for (let cut = 0; cut < bytes.length - 32; cut++) {
      const error = (() => {
        try {
          parseVectorBytes('cut.gguf', bytes.subarray(0, cut));
          return null;
        } catch (e) {
          return e;
        }
      })();
      expect(error, `cut at ${cut}`).toBeInstanceOf(SaegateError);
      expect((error as SaegateError).code).toBe('SAEGATE_ERR_VECTOR_FILE');
    }
  });

  it('decodes any byte string as a vector or fails with SAEGATE_ERR_VECTOR_FILE', () => {
    const valid = handWrittenControlVector([[1, seeded(8, 1)]], 'm');
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), fc.nat(valid.length), (noise, at) => {
        for (const [name, bytes] of [
          ['x.gguf', noise],
          ['x.gguf', Buffer.concat([valid.subarray(0, at), Buffer.from(noise)])],
          ['x.safetensors', noise],
          ['x.json', noise],
        ] as const) {
          try {
            parseVectorBytes(name, bytes);
          } catch (error) {
            expect(error).toBeInstanceOf(SaegateError);
            expect((error as SaegateError).code).toBe('SAEGATE_ERR_VECTOR_FILE');
          }
        }
      }),
      { numRuns: 300 },
    );
  });

  it('names the file and what was wrong for bad vectors', () => {
    expectSaegateError(() => readVectorFile(path.join(dir, 'absent.safetensors')), 'SAEGATE_ERR_VECTOR_FILE', 'absent.safetensors', 'no such file');
    const widths = path.join(dir, 'widths.safetensors');
    writeSafetensors(widths, {
      'blocks.1.hook_resid_post': { dtype: 'F32', shape: [4], data: new Float32Array(4) },
      'blocks.2.hook_resid_post': { dtype: 'F32', shape: [5], data: new Float32Array(5) },
    });
    expectSaegateError(() => readVectorFile(widths), 'SAEGATE_ERR_VECTOR_FILE', 'widths.safetensors', 'blocks.2.hook_resid_post: 5 values', "model's width");
    const hookName = path.join(dir, 'hook.safetensors');
    writeSafetensors(hookName, { 'layers.1.mlp': { dtype: 'F32', shape: [4], data: new Float32Array(4) } });
    expectSaegateError(() => readVectorFile(hookName), 'SAEGATE_ERR_VECTOR_FILE', "'layers.1.mlp' is not a TransformerLens hook name");
    const nan = path.join(dir, 'nan.json');
    fs.writeFileSync(nan, JSON.stringify({ apiVersion: 'saegate/v1', kind: 'SteeringVector', directions: { 'blocks.1.hook_resid_post': [1, 2, 1e39] } }));
    expectSaegateError(() => readVectorFile(nan), 'SAEGATE_ERR_VECTOR_FILE', 'blocks.1.hook_resid_post[2]', 'not a finite number');
    const unknown = path.join(dir, 'unknown.json');
    fs.writeFileSync(unknown, JSON.stringify({ apiVersion: 'saegate/v1', kind: 'SteeringVector', directions: { 'blocks.1.hook_resid_post': [1] }, scale: 2 }));
    expectSaegateError(() => readVectorFile(unknown), 'SAEGATE_ERR_VECTOR_FILE', 'unknown.json', 'scale');
    const matrix = path.join(dir, 'matrix.safetensors');
    writeSafetensors(matrix, { 'blocks.1.hook_resid_post': { dtype: 'F32', shape: [2, 4], data: new Float32Array(8) } });
    expectSaegateError(() => readVectorFile(matrix), 'SAEGATE_ERR_VECTOR_FILE', 'shape [2, 4]');
  });
});

describe('the vector store', () => {
  const dIn = 8;
  const dSae = 32;
  const W_dec = seeded(dSae * dIn, 3);
  const saes = new Map([['demo', { hook: 'blocks.2.hook_resid_post', weights: { W_dec, config: { dIn, dSae } as never } }]]);

  it('resolves sae:NAME#FEATURE to that latent\'s decoder row at the SAE\'s hook', () => {
    expect(parseSaeReference('sae:demo#17')).toEqual({ sae: 'demo', feature: 17 });
    expect(parseSaeReference('vectors/sad.safetensors')).toBeUndefined();
    const store = new VectorStore({ saes });
    const vector = store.resolve('sae:demo#17');
    expect([...vector.hooks.keys()]).toEqual(['blocks.2.hook_resid_post']);
    expect(vector.hooks.get('blocks.2.hook_resid_post')).toEqual(W_dec.subarray(17 * dIn, 18 * dIn));
    expect(vector.metadata.method).toBe('sae-decoder');
  });

  it('refuses a feature past d_sae and an SAE that is not loaded', () => {
    const store = new VectorStore({ saes });
    expectSaegateError(() => store.resolve('sae:demo#32'), 'SAEGATE_ERR_VECTOR_REFERENCE', 'feature 32 is past', 'd_sae 32');
    expectSaegateError(() => store.resolve('sae:other#1'), 'SAEGATE_ERR_VECTOR_REFERENCE', "no SAE named 'other'", 'loaded: demo');
  });

  it('keeps one copy per content id across formats and resolves relative paths against its base directory', () => {
    writeVectorFile(path.join(dir, 'same.safetensors'), sample);
    writeVectorFile(path.join(dir, 'same.json'), sample);
    const store = new VectorStore({ baseDir: dir });
    const a = store.resolve('same.safetensors');
    const b = store.resolve('same.json');
    expect(b).toBe(a);
    expect(store.vectors()).toHaveLength(1);
    expect(store.get(sample.id)).toBe(a);
  });
});
