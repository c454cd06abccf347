/**
 * Activation rows from disk, for `saegate sae encode` and for checking results against other
 * tools: NumPy `.npy` (format versions 1–3, little-endian f4/f2/f8, C order) or a 2-D tensor of a
 * safetensors file. Rows come back as one float32 block, row-major.
 */
import fs from 'node:fs';
import { SaegateError } from '../common/errors.js';
import { f16ToF32 } from '../common/f16.js';
import { SafetensorsFile } from '../common/safetensors.js';

export interface RowsBlock {
  /** rowCount × width values. */
  rows: Float32Array;
  rowCount: number;
  width: number;
}

function fail(file: string, problem: string): never {
  throw new SaegateError('SAEGATE_ERR_ROWS_FILE', [file, problem]);
}

/** Parses a `.npy` file held in memory. */
export function parseNpy(bytes: Uint8Array, file: string): RowsBlock {
  const magic = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY
  if (bytes.length < 10 || magic.some((b, i) => bytes[i] !== b)) fail(file, 'not a .npy file (bad magic)');
  const major = bytes[6];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLenSize = major === 1 ? 2 : major === 2 || major === 3 ? 4 : fail(file, `unsupported .npy format version ${major}`);
  const headerLen = headerLenSize === 2 ? view.getUint16(8, true) : view.getUint32(8, true);
  const dataStart = 8 + headerLenSize + headerLen;
  if (dataStart > bytes.length) fail(file, `header length ${headerLen} runs past the end of the file`);
  const header = new TextDecoder().decode(bytes.subarray(8 + headerLenSize, dataStart));
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) fail(file, `unreadable header ${JSON.stringify(header.trim())}`);
  if (fortran === 'True') fail(file, 'Fortran-ordered arrays are not supported; save with np.ascontiguousarray');
  const shape = shapeText
    .split(',')
    .map((d) => d.trim())
    .filter((d) => d !== '')
    .map(Number);
  if (shape.some((d) => !Number.isInteger(d) || d < 0)) fail(file, `bad shape (${shapeText})`);
  if (shape.length !== 1 && shape.length !== 2) fail(file, `expected a 2-D array of rows (or one 1-D row), got shape (${shape.join(', ')})`);
  const [rowCount, width] = shape.length === 1 ? [1, shape[0]] : [shape[0], shape[1]];
  const itemSize = descr === '<f4' ? 4 : descr === '<f2' ? 2 : descr === '<f8' ? 8 : fail(file, `unsupported dtype '${descr}' (expected little-endian <f4, <f2 or <f8)`);
  const expected = rowCount * width * itemSize;
  if (bytes.length - dataStart !== expected) fail(file, `data is ${bytes.length - dataStart} bytes, shape (${shape.join(', ')}) of ${descr} needs ${expected}`);
  // Copy into aligned storage first: the data offset need not be a multiple of the item size.
  const raw = bytes.slice(dataStart, dataStart + expected);
  const rows = new Float32Array(rowCount * width);
  if (itemSize === 4) rows.set(new Float32Array(raw.buffer));
  else if (itemSize === 2) f16ToF32(new Uint16Array(raw.buffer), rows);
  else rows.set(new Float64Array(raw.buffer));
  return { rows, rowCount, width };
}

/** Reads rows from a `.npy` file or from `tensor` (default: the only tensor) of a safetensors file. */
export function readRowsFile(file: string, options: { tensor?: string } = {}): RowsBlock {
  if (!fs.existsSync(file)) fail(file, 'no such file');
  if (file.endsWith('.npy')) return parseNpy(new Uint8Array(fs.readFileSync(file)), file);
  const st = SafetensorsFile.open(file);
  try {
    const names = [...st.tensors.keys()];
    const name = options.tensor ?? (names.length === 1 ? names[0] : fail(file, `holds ${names.length} tensors (${names.join(', ')}); name one with --tensor`));
    if (!st.has(name)) fail(file, `has no tensor '${name}' (it has ${names.join(', ')})`);
    const shape = st.info(name)!.shape;
    if (shape.length !== 2) fail(file, `tensor '${name}' has shape [${shape.join(', ')}], expected [rows, d_in]`);
    return { rows: st.getFloat32(name), rowCount: shape[0], width: shape[1] };
  } finally {
    st.close();
  }
}
