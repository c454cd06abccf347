import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { f32ToF16 } from '../../../src/common/f16.js';
import { writeSafetensors } from '../../../src/common/safetensors.js';
import { parseNpy, readRowsFile } from '../../../src/lab/rows-file.js';
import { expectSaegateError } from '../../helpers/errors.js';
import { makeTempDir, removeTempDir } from '../../helpers/fixtures.js';

/** Writes a .npy file the way numpy.save does (format 1.0, header padded to 64 bytes). */
function npy(descr: string, shape: number[], data: ArrayBufferView, options: { fortran?: boolean; version?: 1 | 2 } = {}): Uint8Array {
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let header = `{'descr': '${descr}', 'fortran_order': ${options.fortran ? 'True' : 'False'}, 'shape': ${shapeText}, }`;
  const version = options.version ?? 1;
  const prefix = version === 1 ? 10 : 12;
  header += ' '.repeat(64 - ((prefix + header.length + 1) % 64)) + '\n';
  const out = new Uint8Array(prefix + header.length + data.byteLength);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, version, 0]);
  const view = new DataView(out.buffer);
  if (version === 1) view.setUint16(8, header.length, true);
  else view.setUint32(8, header.length, true);
  out.set(new TextEncoder().encode(header), prefix);
  out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), prefix + header.length);
  return out;
}

const values = Float32Array.from({ length: 12 }, (_, i) => i * 0.25 - 1);

describe('activation rows files', () => {
  let dir: string;
  beforeAll(() => {
    dir = makeTempDir('saegate-rows-');
  });
  afterAll(() => removeTempDir(dir));

  it.each([
    ['<f4', values, 1],
    ['<f8', Float64Array.from(values), 2],
  ] as const)('reads a %s .npy of 3 rows × 4 (format %i)', (descr, data, version) => {
    const block = parseNpy(npy(descr, [3, 4], data, { version: version as 1 | 2 }), 'rows.npy');
    expect(block.rowCount).toBe(3);
    expect(block.width).toBe(4);
    expect([...block.rows]).toEqual([...values]);
  });

  it('reads f16 .npy rows and a single 1-D row', () => {
    const half = new Uint16Array(12);
    f32ToF16(values, half);
    expect([...parseNpy(npy('<f2', [3, 4], half), 'h.npy').rows]).toEqual([...values]); // quarter steps are exact in f16
    const one = parseNpy(npy('<f4', [4], values.subarray(0, 4)), 'one.npy');
    expect([one.rowCount, one.width]).toEqual([1, 4]);
  });

  it('reads the only tensor of a safetensors file, or the one named', () => {
    const file = path.join(dir, 'rows.safetensors');
    writeSafetensors(file, { acts: { dtype: 'F32', shape: [3, 4], data: values } });
    expect(readRowsFile(file)).toMatchObject({ rowCount: 3, width: 4 });
    const two = path.join(dir, 'two.safetensors');
    writeSafetensors(two, { a: { dtype: 'F32', shape: [3, 4], data: values }, b: { dtype: 'BF16', shape: [2, 6], data: values } });
    expectSaegateError(() => readRowsFile(two), 'SAEGATE_ERR_ROWS_FILE', two, 'name one with --tensor');
    expect(readRowsFile(two, { tensor: 'b' })).toMatchObject({ rowCount: 2, width: 6 });
    expectSaegateError(() => readRowsFile(two, { tensor: 'c' }), 'SAEGATE_ERR_ROWS_FILE', "no tensor 'c'");
  });

  it('refuses bad files with a typed error naming the file and the problem', () => {
    const good = npy('<f4', [3, 4], values);
    expectSaegateError(() => parseNpy(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), 'x.npy'), 'SAEGATE_ERR_ROWS_FILE', 'x.npy', 'bad magic');
    expectSaegateError(() => parseNpy(good.subarray(0, good.length - 4), 'short.npy'), 'SAEGATE_ERR_ROWS_FILE', 'short.npy', 'needs 48');
    expectSaegateError(() => parseNpy(npy('<f4', [3, 4], values, { fortran: true }), 'f.npy'), 'SAEGATE_ERR_ROWS_FILE', 'Fortran');
    expectSaegateError(() => parseNpy(npy('<f4', [1, 3, 4], values), '3d.npy'), 'SAEGATE_ERR_ROWS_FILE', 'shape (1, 3, 4)');
    expectSaegateError(() => parseNpy(npy('>f4', [3, 4], values), 'be.npy'), 'SAEGATE_ERR_ROWS_FILE', "'>f4'");
    expectSaegateError(() => readRowsFile(path.join(dir, 'missing.npy')), 'SAEGATE_ERR_ROWS_FILE', 'no such file');
    fs.writeFileSync(path.join(dir, 'r.npy'), good);
    expect(readRowsFile(path.join(dir, 'r.npy')).rowCount).toBe(3);
  });
});
