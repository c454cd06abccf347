/**
 * Steering-vector files: saegate's own safetensors and JSON forms, and llama.cpp's control-vector
 * GGUF (import and export). All three read into the same `SteeringVector`, so the same directions
 * get the same content id whatever file they came from.
 *
 * - **safetensors** (`.safetensors`, the default): one F32 (or F16/BF16) tensor per hook, named by
 *   the hook (`blocks.3.hook_resid_post`), shape `[d_model]`; `__metadata__` holds
 *   `format: saegate.steering-vector`, `format_version: 1` and `saegate`: the metadata as JSON.
 * - **JSON** (`.json`): `{"apiVersion": "saegate/v1", "kind": "SteeringVector", "metadata": {…},
 *   "directions": {"blocks.3.hook_resid_post": [numbers…]}}`, unknown keys refused.
 * - **GGUF** (`.gguf`): llama.cpp's control vectors. `general.architecture = "controlvector"`,
 *   `controlvector.model_hint` (string) and `controlvector.layer_count` (u32), one F32 tensor
 *   `direction.N` of `n_embd` values per layer N ≥ 1. llama.cpp adds `direction.N` to the output of
 *   its (0-based) layer N — `tensors[il]` at the end of layer `il`, and there is no direction for
 *   layer 0 — so `direction.N` is `blocks.N.hook_resid_post` here. Export refuses hooks that have
 *   no GGUF counterpart (anything but `blocks.N.hook_resid_post` with N ≥ 1) rather than moving
 *   them silently.
 */
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { err, SaegateError } from '../common/errors.js';
import { writeAtomically } from '../common/json-file.js';
import { SafetensorsFile, writeSafetensors } from '../common/safetensors.js';
import { GgufType, parseGguf, serializeGguf, type GgufTypedValue } from './gguf.js';
import { hookLayer, makeSteeringVector, vectorMetadataSchema, type SteeringVector, type VectorMetadata } from './vector.js';

export const VECTOR_FORMAT = 'saegate.steering-vector';
export const VECTOR_FORMAT_VERSION = '1';
export type VectorFileFormat = 'safetensors' | 'json' | 'gguf';

/** The format a path names by its extension; undefined for others. */
export function formatOfPath(file: string): VectorFileFormat | undefined {
  const ext = path.extname(file).toLowerCase();
  if (ext === '.safetensors') return 'safetensors';
  if (ext === '.json') return 'json';
  if (ext === '.gguf') return 'gguf';
  return undefined;
}

function metadataFromJson(source: string, text: string | undefined): Omit<VectorMetadata, 'norms'> {
  if (text === undefined) return {};
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw err('SAEGATE_ERR_VECTOR_FILE', source, `__metadata__.saegate is not JSON: ${(error as Error).message}`);
  }
  // Norms are recomputed from the values; a stored copy is informational.
  const parsed = vectorMetadataSchema.partial({ norms: true }).safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw err('SAEGATE_ERR_VECTOR_FILE', source, `__metadata__.saegate.${issue.path.join('.')}: ${issue.message}`);
  }
  const { norms: _norms, ...rest } = parsed.data;
  return rest;
}

function readSafetensorsVector(file: string, bytes?: Uint8Array): SteeringVector {
  let st: SafetensorsFile;
  try {
    st = bytes ? SafetensorsFile.fromBytes(bytes, file) : SafetensorsFile.open(file);
  } catch (error) {
    if (error instanceof SaegateError) throw err('SAEGATE_ERR_VECTOR_FILE', file, error.message);
    throw error;
  }
  try {
    const meta = st.metadata ?? {};
    if (meta.format !== undefined && meta.format !== VECTOR_FORMAT) {
      throw err('SAEGATE_ERR_VECTOR_FILE', file, `__metadata__.format is '${meta.format}', expected '${VECTOR_FORMAT}'`);
    }
    if (meta.format_version !== undefined && meta.format_version !== VECTOR_FORMAT_VERSION) {
      throw err('SAEGATE_ERR_VECTOR_FILE', file, `__metadata__.format_version ${meta.format_version} is not supported (${VECTOR_FORMAT_VERSION})`);
    }
    const directions = new Map<string, Float32Array>();
    for (const [name, info] of st.tensors) {
      if (info.shape.length !== 1 && !(info.shape.length === 2 && info.shape[0] === 1)) {
        throw err('SAEGATE_ERR_VECTOR_FILE', file, `tensor '${name}' has shape [${info.shape.join(', ')}]; a direction is [d_model]`);
      }
      directions.set(name, st.getFloat32(name));
    }
    return makeSteeringVector(file, directions, metadataFromJson(file, meta.saegate));
  } catch (error) {
    if (error instanceof SaegateError && error.code === 'SAEGATE_ERR_SAFETENSORS') throw err('SAEGATE_ERR_VECTOR_FILE', file, error.message);
    throw error;
  } finally {
    st.close();
  }
}

const jsonVectorSchema = z
  .object({
    apiVersion: z.literal('saegate/v1'),
    kind: z.literal('SteeringVector'),
    metadata: vectorMetadataSchema.partial({ norms: true }).optional(),
    directions: z.record(z.string(), z.array(z.number()).min(1)),
  })
  .strict();

function readJsonVector(file: string, text: string): SteeringVector {
  let raw: unknown;
  try {
    raw = JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
  } catch (error) {
    throw err('SAEGATE_ERR_VECTOR_FILE', file, `not JSON: ${(error as Error).message}`);
  }
  const parsed = jsonVectorSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw err('SAEGATE_ERR_VECTOR_FILE', file, `${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  const { norms: _norms, ...metadata } = parsed.data.metadata ?? {};
  const directions = new Map(Object.entries(parsed.data.directions).map(([hook, values]) => [hook, Float32Array.from(values)]));
  return makeSteeringVector(file, directions, metadata);
}

function readGgufVector(file: string, bytes: Uint8Array): SteeringVector {
  const gguf = parseGguf(bytes, file);
  const arch = gguf.metadata.get('general.architecture')?.value;
  if (arch !== 'controlvector') {
    throw err('SAEGATE_ERR_VECTOR_FILE', file, `general.architecture is ${JSON.stringify(arch ?? null)}, expected "controlvector" (a llama.cpp control vector)`);
  }
  const directions = new Map<string, Float32Array>();
  for (const tensor of gguf.tensors) {
    const match = /^direction\.(\d+)$/.exec(tensor.name);
    if (!match) throw err('SAEGATE_ERR_VECTOR_FILE', file, `tensor '${tensor.name}' is not a control-vector direction (direction.N)`);
    const layer = Number(match[1]);
    if (layer < 1) throw err('SAEGATE_ERR_VECTOR_FILE', file, `tensor '${tensor.name}': llama.cpp control vectors start at layer 1 (layer 0 is never steered)`);
    if (tensor.dims.length !== 1) throw err('SAEGATE_ERR_VECTOR_FILE', file, `tensor '${tensor.name}' has ${tensor.dims.length} dimensions; a direction has one`);
    directions.set(`blocks.${layer}.hook_resid_post`, tensor.data);
  }
  const hint = gguf.metadata.get('controlvector.model_hint')?.value;
  return makeSteeringVector(file, directions, { method: 'import', ...(typeof hint === 'string' && hint !== '' ? { model: hint } : {}) });
}

/** Reads a vector file in any of the three formats (by extension, else by content). */
export function readVectorFile(file: string): SteeringVector {
  let bytes: Uint8Array;
  try {
    bytes = fs.readFileSync(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw err('SAEGATE_ERR_VECTOR_FILE', file, code === 'ENOENT' ? 'no such file' : `cannot read it (${code ?? (error as Error).message})`);
  }
  return parseVectorBytes(file, bytes);
}

/** Parses a vector from bytes; `file` names it and picks the format by extension, else by content. */
export function parseVectorBytes(file: string, bytes: Uint8Array): SteeringVector {
  let format = formatOfPath(file);
  if (format === undefined) {
    if (bytes.length >= 4 && bytes[0] === 0x47 && bytes[1] === 0x47 && bytes[2] === 0x55 && bytes[3] === 0x46) format = 'gguf';
    else if (bytes.length > 0 && (bytes[0] === 0x7b || bytes[0] === 0xef)) format = 'json';
    else format = 'safetensors';
  }
  if (format === 'gguf') return readGgufVector(file, bytes);
  if (format === 'json') return readJsonVector(file, new TextDecoder().decode(bytes));
  return readSafetensorsVector(file, bytes);
}

function serializableMetadata(vector: SteeringVector): VectorMetadata {
  return { ...vector.metadata };
}

/** Writes a vector atomically (temporary file, then rename) in the format given or named by the extension. */
export function writeVectorFile(file: string, vector: SteeringVector, format: VectorFileFormat = formatOfPath(file) ?? 'safetensors'): void {
  writeAtomically(file, (tmp) => {
    if (format === 'safetensors') {
      const tensors = Object.fromEntries([...vector.hooks].map(([hook, values]) => [hook, { dtype: 'F32' as const, shape: [values.length], data: values }]));
      writeSafetensors(tmp, tensors, { format: VECTOR_FORMAT, format_version: VECTOR_FORMAT_VERSION, saegate: JSON.stringify(serializableMetadata(vector)) });
    } else if (format === 'json') {
      const doc = {
        apiVersion: 'saegate/v1',
        kind: 'SteeringVector',
        metadata: serializableMetadata(vector),
        directions: Object.fromEntries([...vector.hooks].map(([hook, values]) => [hook, Array.from(values)])),
      };
      fs.writeFileSync(tmp, `${JSON.stringify(doc, null, 2)}\n`);
    } else {
      fs.writeFileSync(tmp, toControlVectorGguf(file, vector));
    }
  });
}

/** The llama.cpp control-vector GGUF bytes of a vector (see the module comment for the layer mapping). */
export function toControlVectorGguf(target: string, vector: SteeringVector): Uint8Array {
  const tensors: { name: string; data: Float32Array }[] = [];
  for (const [hook, values] of vector.hooks) {
    const layer = hookLayer(hook);
    if (layer === undefined || !hook.endsWith('.hook_resid_post') || layer < 1) {
      throw err(
        'SAEGATE_ERR_VECTOR_FILE',
        target,
        `${hook} has no llama.cpp control-vector counterpart: control vectors steer blocks.N.hook_resid_post for N ≥ 1 (direction.N)`,
      );
    }
    tensors.push({ name: `direction.${layer}`, data: values });
  }
  tensors.sort((a, b) => Number(a.name.slice(10)) - Number(b.name.slice(10)));
  const metadata = new Map<string, GgufTypedValue>([
    ['general.architecture', { type: GgufType.STRING, value: 'controlvector' }],
    ['controlvector.model_hint', { type: GgufType.STRING, value: vector.metadata.model ?? '' }],
    ['controlvector.layer_count', { type: GgufType.UINT32, value: tensors.length }],
  ]);
  return serializeGguf(metadata, tensors);
}
