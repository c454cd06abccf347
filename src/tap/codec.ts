/**
 * Tap protocol v1 binary codec: `encodeMessage` / `decodeMessage` for every message type, plus the
 * content-hash helper for steering vectors. docs/tap-protocol.md defines the layouts byte by byte.
 *
 * Decoding is total: any byte string either decodes or throws SaegateError SAEGATE_ERR_TAP_FRAME,
 * because a frame comes from another process and a RangeError thrown out of a socket handler
 * would take the whole gateway down. Lengths are checked against the bytes that are actually there
 * before anything is allocated, so a frame that lies about its row count costs nothing.
 *
 * Activation data decodes as a view over the received bytes when the data block is aligned in
 * memory (always for frames built here; usually for frames received through `ws`, which hands big
 * messages over in buffers of their own), otherwise as one copy. No per-row allocation either way.
 */
import { createHash } from 'node:crypto';
import { constants as bufferConstants } from 'node:buffer';
import type { z } from 'zod';
import { isSaegateError, SaegateError } from '../common/errors.js';
import {
  allocFrame,
  argumentError,
  assertLittleEndianHost,
  FrameReader,
  frameError,
  HEADER_BYTES,
  padTo4,
  readRequestTable,
  requestTableByteLength,
  writeRequestTable,
} from './layout.js';
import {
  controlSchemas,
  DtypeCode,
  endSchema,
  errorSchema,
  helloSchema,
  MAX_POSITION,
  MessageTypeCode,
  planAckSchema,
  planSchema,
  planUpdateSchema,
  subscribeSchema,
  VECTOR_ID_PATTERN,
  welcomeSchema,
  type ActivationsMessage,
  type ControlMessage,
  type ControlMessageType,
  type StreamDtype,
  type TapMessage,
  type TapMessageType,
  type TokensMessage,
  type VectorMessage,
} from './messages.js';
import { f16ToF32, f32ToF16 } from '../common/f16.js';

/**
 * Content id of a steering vector: lowercase hex sha256 of its f32 little-endian bytes. Two
 * vectors with the same id are bit-identical, so a receiver that holds an id never needs it again.
 */
export function vectorId(values: Float32Array): string {
  assertLittleEndianHost();
  return createHash('sha256').update(new Uint8Array(values.buffer, values.byteOffset, values.byteLength)).digest('hex');
}

/** True when the vector's id is the content hash of its values; receivers drop vectors where it is not. */
export function isVectorIdValid(vector: Pick<VectorMessage, 'id' | 'values'>): boolean {
  return vectorId(vector.values) === vector.id;
}

const typeByCode: (TapMessageType | undefined)[] = new Array<TapMessageType | undefined>(256).fill(undefined);
for (const [name, code] of Object.entries(MessageTypeCode)) typeByCode[code] = name as TapMessageType;

/** Bytes per element for a stream dtype. */
export function dtypeBytes(dtype: StreamDtype): 2 | 4 {
  return dtype === 'f32' ? 4 : 2;
}

// ---------------------------------------------------------------------------------------------
// Activations

/** Fixed part of an activations frame before the request table. */
const ACTIVATIONS_FIXED_BYTES = 20;
/** Row table entry: u16 request index + u32 position. */
const ACTIVATION_ROW_BYTES = 6;

/** Exact byte length of an activations frame. */
export function activationsFrameByteLength(
  requestTableBytes: number,
  rowCount: number,
  dModel: number,
  dtype: StreamDtype,
): number {
  const beforeData = ACTIVATIONS_FIXED_BYTES + requestTableBytes + rowCount * ACTIVATION_ROW_BYTES;
  return beforeData + padTo4(beforeData) + rowCount * dModel * dtypeBytes(dtype);
}

/** Everything writeActivationsFrame needs; `rowRequestIndexes` may be longer than `rowCount`. */
export interface ActivationsLayout {
  hookIndex: number;
  dtype: StreamDtype;
  dModel: number;
  droppedRows: number;
  requestIds: readonly string[];
  /** From requestTableByteLength(requestIds). */
  requestTableBytes: number;
  rowCount: number;
  rowRequestIndexes: Uint16Array;
  positions: ArrayLike<number>;
  /**
   * Float32Array: f32 values; Uint16Array: f16 bits. Converted to `dtype` while copying. Several
   * arrays (of one type) are the rows of consecutive parts, copied one after another.
   */
  data: ActivationData;
}

/** Row values: one array, or the consecutive parts of one (all Float32Array or all Uint16Array). */
export type ActivationData = Float32Array | Uint16Array | readonly Float32Array[] | readonly Uint16Array[];

/** `data` as a list of parts (one array is one part). */
function dataParts(data: ActivationData): readonly (Float32Array | Uint16Array)[] {
  return Array.isArray(data) ? (data as readonly (Float32Array | Uint16Array)[]) : [data as Float32Array | Uint16Array];
}

/** How many values `data` holds, over all its parts. */
export function activationDataLength(data: ActivationData): number {
  let n = 0;
  for (const part of dataParts(data)) n += part.length;
  return n;
}

function checkActivationsHeader(hookIndex: number, dModel: number, rowCount: number, dataLength: number): void {
  if (!Number.isInteger(hookIndex) || hookIndex < 0 || hookIndex > 0xffff) throw argumentError(`hook index ${hookIndex} is not a u16`);
  if (!Number.isInteger(dModel) || dModel < 1 || dModel > 0xffffffff) throw argumentError(`dModel ${dModel} is not a positive u32`);
  if (rowCount > 0xffffffff) throw argumentError(`${rowCount} rows do not fit a u32`);
  if (dataLength !== rowCount * dModel) {
    throw argumentError(`data holds ${dataLength} values, expected rows × dModel = ${rowCount} × ${dModel}`);
  }
}

/** Writes one activations frame (one allocation). Validates what the layout cannot guarantee. */
export function writeActivationsFrame(layout: ActivationsLayout): Buffer {
  assertLittleEndianHost();
  const { dtype, dModel, rowCount, rowRequestIndexes, positions, requestIds } = layout;
  checkActivationsHeader(layout.hookIndex, dModel, rowCount, activationDataLength(layout.data));
  if (positions.length < rowCount || rowRequestIndexes.length < rowCount) throw argumentError('fewer positions than rows');
  const byteLength = activationsFrameByteLength(layout.requestTableBytes, rowCount, dModel, dtype);
  if (byteLength > bufferConstants.MAX_LENGTH) throw argumentError(`frame of ${byteLength} bytes exceeds the buffer limit`);
  const { frame, view } = allocFrame(byteLength, 'activations');
  view.setUint16(4, layout.hookIndex, true);
  frame[6] = DtypeCode[dtype];
  frame[7] = 0;
  view.setUint32(8, dModel, true);
  view.setUint32(12, rowCount, true);
  // Drop counts saturate rather than wrap: "at least 4 billion" is still the right signal.
  view.setUint32(16, Math.min(Math.max(0, Math.floor(layout.droppedRows)), 0xffffffff), true);
  let at = writeRequestTable(frame, ACTIVATIONS_FIXED_BYTES, requestIds);
  const requestCount = requestIds.length;
  for (let i = 0; i < rowCount; i++) {
    const requestIndex = rowRequestIndexes[i];
    const position = positions[i];
    if (requestIndex >= requestCount) throw argumentError(`row ${i} refers to request ${requestIndex} of ${requestCount}`);
    if (position < 0) throw argumentError(`row ${i} has negative position ${position}`);
    view.setUint16(at, requestIndex, true);
    view.setUint32(at + 2, position, true);
    at += ACTIVATION_ROW_BYTES;
  }
  for (let pad = padTo4(at); pad > 0; pad--) frame[at++] = 0;
  // The parts hold rowCount × dModel values together (checked above).
  for (const part of dataParts(layout.data)) {
    writeElements(frame, at, dtype, part);
    at += part.length * dtypeBytes(dtype);
  }
  return frame;
}

/** Copies all of `data` into the frame at `offset` (4-aligned), converting to `dtype`. */
function writeElements(frame: Buffer, offset: number, dtype: StreamDtype, data: Float32Array | Uint16Array): void {
  const count = data.length;
  if (count === 0) return;
  if (dtype === 'f32') {
    const dst = new Float32Array(frame.buffer, frame.byteOffset + offset, count);
    if (data instanceof Float32Array) dst.set(data);
    else f16ToF32(data, dst);
  } else {
    const dst = new Uint16Array(frame.buffer, frame.byteOffset + offset, count);
    if (data instanceof Uint16Array) dst.set(data);
    else f32ToF16(data, dst);
  }
}

function encodeActivations(msg: ActivationsMessage): Buffer {
  const rowCount = msg.positions.length;
  if (msg.rowRequestIndexes.length !== rowCount) {
    throw argumentError(`${msg.rowRequestIndexes.length} row request indexes for ${rowCount} positions`);
  }
  if ((msg.dtype === 'f32') !== (msg.data instanceof Float32Array)) throw argumentError(`dtype ${msg.dtype} does not match the data array type`);
  return writeActivationsFrame({
    hookIndex: msg.hookIndex,
    dtype: msg.dtype,
    dModel: msg.dModel,
    droppedRows: msg.droppedRowsSinceLastFrame,
    requestIds: msg.requestIds,
    requestTableBytes: requestTableByteLength(msg.requestIds),
    rowCount,
    rowRequestIndexes: msg.rowRequestIndexes,
    positions: msg.positions,
    data: msg.data,
  });
}

/** Views `count` elements at the reader's offset, or copies them when the bytes are misaligned. */
function readElements(reader: FrameReader, dtype: StreamDtype, count: number): Float32Array | Uint16Array {
  const bytes = reader.bytes;
  const start = bytes.byteOffset + reader.offset;
  const elem = dtypeBytes(dtype);
  if (dtype === 'f32') {
    if (start % 4 === 0) return new Float32Array(bytes.buffer, start, count);
    const copy = new Float32Array(count);
    new Uint8Array(copy.buffer).set(bytes.subarray(reader.offset, reader.offset + count * elem));
    return copy;
  }
  if (start % 2 === 0) return new Uint16Array(bytes.buffer, start, count);
  const copy = new Uint16Array(count);
  new Uint8Array(copy.buffer).set(bytes.subarray(reader.offset, reader.offset + count * elem));
  return copy;
}

function decodeActivations(reader: FrameReader): ActivationsMessage {
  const hookIndex = reader.u16('hook index');
  const dtypeCode = reader.u8('dtype');
  const dtype: StreamDtype | null = dtypeCode === DtypeCode.f32 ? 'f32' : dtypeCode === DtypeCode.f16 ? 'f16' : null;
  if (dtype === null) throw frameError(`unknown activation dtype code ${dtypeCode}`);
  if (reader.u8('reserved byte') !== 0) throw frameError('activations reserved byte 7 is not zero');
  const dModel = reader.u32('dModel');
  if (dModel === 0) throw frameError('dModel is 0');
  const rowCount = reader.u32('row count');
  const droppedRowsSinceLastFrame = reader.u32('dropped row count');
  const requestIds = readRequestTable(reader);
  reader.need(rowCount * ACTIVATION_ROW_BYTES, 'row table');
  const rowRequestIndexes = new Uint16Array(rowCount);
  const positions = new Int32Array(rowCount);
  const view = reader.view;
  const requestCount = requestIds.length;
  let at = reader.offset;
  for (let i = 0; i < rowCount; i++) {
    const requestIndex = view.getUint16(at, true);
    const position = view.getUint32(at + 2, true);
    if (requestIndex >= requestCount) throw frameError(`row ${i} refers to request ${requestIndex} of ${requestCount}`);
    if (position > MAX_POSITION) throw frameError(`row ${i} position ${position} exceeds ${MAX_POSITION}`);
    rowRequestIndexes[i] = requestIndex;
    positions[i] = position;
    at += ACTIVATION_ROW_BYTES;
  }
  reader.offset = at;
  reader.align4('data block');
  const count = rowCount * dModel;
  const dataBytes = count * dtypeBytes(dtype);
  if (dataBytes !== reader.remaining) {
    throw frameError(`data block has ${reader.remaining} bytes, rows × dModel = ${rowCount} × ${dModel} ${dtype} needs ${dataBytes}`);
  }
  const data = readElements(reader, dtype, count);
  reader.offset += dataBytes;
  const header = { type: 'activations' as const, hookIndex, dModel, droppedRowsSinceLastFrame, requestIds, rowRequestIndexes, positions };
  return data instanceof Float32Array ? { ...header, dtype: 'f32', data } : { ...header, dtype: 'f16', data };
}

// ---------------------------------------------------------------------------------------------
// Tokens

/** Fixed part: header + u32 entry count. */
const TOKENS_FIXED_BYTES = 8;
/** Entry without its text: u16 request index, u32 position, u32 token id, u16 text length. */
const TOKEN_ENTRY_BYTES = 12;

/** Everything writeTokensFrame needs: the request table and per-entry columns (`count` entries). */
export interface TokensLayout {
  /** Distinct request ids (the frame's request table). */
  requestIds: readonly string[];
  count: number;
  /** Index into `requestIds` per entry; may be longer than `count`. */
  rowRequestIndexes: Uint16Array;
  positions: ArrayLike<number>;
  tokenIds: ArrayLike<number>;
  texts: readonly string[];
}

/** Writes one tokens frame (one allocation). Validates what the layout cannot guarantee. */
export function writeTokensFrame(layout: TokensLayout): Buffer {
  const { count, requestIds, rowRequestIndexes, positions, tokenIds, texts } = layout;
  if (rowRequestIndexes.length < count || positions.length < count || tokenIds.length < count || texts.length < count) {
    throw argumentError('tokens: rowRequestIndexes, positions, tokenIds and texts must have the same length');
  }
  let byteLength = TOKENS_FIXED_BYTES + requestTableByteLength(requestIds);
  for (let i = 0; i < count; i++) {
    const n = Buffer.byteLength(texts[i], 'utf8');
    if (n > 0xffff) throw argumentError(`token text ${i} takes ${n} bytes, at most 65535`);
    byteLength += TOKEN_ENTRY_BYTES + n;
  }
  const { frame, view } = allocFrame(byteLength, 'tokens');
  view.setUint32(4, count, true);
  let at = writeRequestTable(frame, TOKENS_FIXED_BYTES, requestIds);
  for (let i = 0; i < count; i++) {
    const requestIndex = rowRequestIndexes[i];
    const position = positions[i];
    const tokenId = tokenIds[i];
    if (requestIndex >= requestIds.length) throw argumentError(`token ${i} refers to request ${requestIndex} of ${requestIds.length}`);
    if (position < 0 || tokenId < 0) throw argumentError(`token ${i} has a negative position or token id`);
    view.setUint16(at, requestIndex, true);
    view.setUint32(at + 2, position, true);
    view.setUint32(at + 6, tokenId, true);
    const n = texts[i].length === 0 ? 0 : frame.write(texts[i], at + TOKEN_ENTRY_BYTES, 'utf8');
    view.setUint16(at + 10, n, true);
    at += TOKEN_ENTRY_BYTES + n;
  }
  return frame;
}

function encodeTokens(msg: TokensMessage): Buffer {
  const count = msg.positions.length;
  if (msg.rowRequestIndexes.length !== count || msg.tokenIds.length !== count || msg.texts.length !== count) {
    throw argumentError('tokens: rowRequestIndexes, positions, tokenIds and texts must have the same length');
  }
  return writeTokensFrame({ requestIds: msg.requestIds, count, rowRequestIndexes: msg.rowRequestIndexes, positions: msg.positions, tokenIds: msg.tokenIds, texts: msg.texts });
}

function decodeTokens(reader: FrameReader): TokensMessage {
  const count = reader.u32('token count');
  const requestIds = readRequestTable(reader);
  reader.need(count * TOKEN_ENTRY_BYTES, 'token entries');
  const rowRequestIndexes = new Uint16Array(count);
  const positions = new Int32Array(count);
  const tokenIds = new Int32Array(count);
  const texts = new Array<string>(count);
  for (let i = 0; i < count; i++) {
    const requestIndex = reader.u16('token request index');
    const position = reader.u32('token position');
    const tokenId = reader.u32('token id');
    if (requestIndex >= requestIds.length) throw frameError(`token ${i} refers to request ${requestIndex} of ${requestIds.length}`);
    if (position > MAX_POSITION || tokenId > MAX_POSITION) throw frameError(`token ${i} position or id exceeds ${MAX_POSITION}`);
    rowRequestIndexes[i] = requestIndex;
    positions[i] = position;
    tokenIds[i] = tokenId;
    texts[i] = reader.utf8(reader.u16('token text length'), `token ${i} text`);
  }
  reader.end('tokens');
  return { type: 'tokens', requestIds, rowRequestIndexes, positions, tokenIds, texts };
}

// ---------------------------------------------------------------------------------------------
// Vector

const VECTOR_ID_BYTES = 64;
/** header + u8 id length + 64-byte id, padded to 4: where dModel sits. */
const VECTOR_DMODEL_OFFSET = HEADER_BYTES + 1 + VECTOR_ID_BYTES + padTo4(HEADER_BYTES + 1 + VECTOR_ID_BYTES);

function encodeVector(msg: VectorMessage): Buffer {
  assertLittleEndianHost();
  if (!VECTOR_ID_PATTERN.test(msg.id)) throw argumentError(`vector id '${msg.id}' is not 64 lowercase hex digits`);
  const dModel = msg.values.length;
  if (dModel === 0) throw argumentError('vector has no values');
  const { frame, view } = allocFrame(VECTOR_DMODEL_OFFSET + 4 + dModel * 4, 'vector');
  frame[HEADER_BYTES] = VECTOR_ID_BYTES;
  frame.write(msg.id, HEADER_BYTES + 1, 'latin1');
  frame.fill(0, HEADER_BYTES + 1 + VECTOR_ID_BYTES, VECTOR_DMODEL_OFFSET);
  view.setUint32(VECTOR_DMODEL_OFFSET, dModel, true);
  new Float32Array(frame.buffer, frame.byteOffset + VECTOR_DMODEL_OFFSET + 4, dModel).set(msg.values);
  return frame;
}

function decodeVector(reader: FrameReader): VectorMessage {
  const idLength = reader.u8('vector id length');
  if (idLength !== VECTOR_ID_BYTES) throw frameError(`vector id length ${idLength}, expected ${VECTOR_ID_BYTES}`);
  const id = reader.utf8(idLength, 'vector id');
  if (!VECTOR_ID_PATTERN.test(id)) throw frameError('vector id is not 64 lowercase hex digits');
  reader.align4('vector dModel');
  const dModel = reader.u32('vector dModel');
  if (dModel === 0) throw frameError('vector dModel is 0');
  if (dModel * 4 !== reader.remaining) throw frameError(`vector of dModel ${dModel} needs ${dModel * 4} value bytes, frame has ${reader.remaining}`);
  const values = readElements(reader, 'f32', dModel) as Float32Array;
  reader.offset += dModel * 4;
  return { type: 'vector', id, values };
}

// ---------------------------------------------------------------------------------------------
// Control messages (JSON)

function encodeControl(msg: ControlMessage): Buffer {
  const { type, ...body } = msg;
  const parsed = controlSchemas[type].safeParse(body);
  if (!parsed.success) throw argumentError(`${type}: ${describeIssues(parsed.error)}`);
  // Serialise the parsed value, not the input: unknown keys are stripped, so nothing the schema
  // does not know about leaves the process.
  const json = JSON.stringify(parsed.data);
  const { frame } = allocFrame(HEADER_BYTES + Buffer.byteLength(json, 'utf8'), type);
  frame.write(json, HEADER_BYTES, 'utf8');
  return frame;
}

function describeIssues(error: z.ZodError): string {
  return error.issues
    .slice(0, 3)
    .map((issue) => `${issue.path.length > 0 ? issue.path.join('.') : '(body)'}: ${issue.message}`)
    .join('; ');
}

function parseBody<S extends z.ZodType>(schema: S, type: ControlMessageType, reader: FrameReader): z.output<S> {
  const text = reader.utf8(reader.remaining, `${type} body`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw frameError(`${type} body is not JSON: ${e instanceof Error ? e.message : String(e)}`);
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw frameError(`${type}: ${describeIssues(parsed.error)}`);
  return parsed.data;
}

function decodeControl(type: ControlMessageType, reader: FrameReader): ControlMessage {
  switch (type) {
    case 'hello':
      return { type, ...parseBody(helloSchema, type, reader) };
    case 'welcome':
      return { type, ...parseBody(welcomeSchema, type, reader) };
    case 'subscribe':
      return { type, ...parseBody(subscribeSchema, type, reader) };
    case 'plan':
      return { type, ...parseBody(planSchema, type, reader) };
    case 'plan_update':
      return { type, ...parseBody(planUpdateSchema, type, reader) };
    case 'plan_ack':
      return { type, ...parseBody(planAckSchema, type, reader) };
    case 'end':
      return { type, ...parseBody(endSchema, type, reader) };
    case 'error':
      return { type, ...parseBody(errorSchema, type, reader) };
  }
}

// ---------------------------------------------------------------------------------------------
// Entry points

/**
 * Encodes one message as a complete frame (one allocation; typed data is copied in, converted to
 * the activation frame's dtype where needed). Throws SAEGATE_ERR_TAP_ARGUMENT for a message the
 * protocol cannot carry (schema failure, id too long, data length not rows × dModel, ...).
 */
export function encodeMessage(msg: TapMessage): Uint8Array {
  switch (msg.type) {
    case 'activations':
      return encodeActivations(msg);
    case 'tokens':
      return encodeTokens(msg);
    case 'vector':
      return encodeVector(msg);
    default:
      return encodeControl(msg);
  }
}

function decodeFrame(bytes: Uint8Array): TapMessage {
  if (bytes.byteLength < HEADER_BYTES) throw frameError(`${bytes.byteLength} bytes, shorter than the ${HEADER_BYTES}-byte header`);
  const type = typeByCode[bytes[0]];
  if (type === undefined) throw frameError(`unknown message type 0x${bytes[0].toString(16).padStart(2, '0')}`);
  if (bytes[1] !== 0) throw frameError(`flags byte is 0x${bytes[1].toString(16)}, v1 requires 0`);
  if (bytes[2] !== 0 || bytes[3] !== 0) throw frameError('reserved header bytes are not zero');
  const reader = new FrameReader(bytes, HEADER_BYTES);
  switch (type) {
    case 'activations':
      return decodeActivations(reader);
    case 'tokens':
      return decodeTokens(reader);
    case 'vector':
      return decodeVector(reader);
    default:
      return decodeControl(type, reader);
  }
}

/**
 * Decodes one frame. Throws SaegateError SAEGATE_ERR_TAP_FRAME for anything malformed and never
 * any other error. Typed arrays in the result may be views of `bytes`: do not reuse `bytes` while
 * the message is in use, and copy rows that must outlive it.
 */
export function decodeMessage(bytes: Uint8Array): TapMessage {
  try {
    return decodeFrame(bytes);
  } catch (e) {
    if (isSaegateError(e, 'SAEGATE_ERR_TAP_FRAME')) throw e;
    // Backstop for anything the explicit checks missed: the contract is one error code, always.
    throw new SaegateError('SAEGATE_ERR_TAP_FRAME', [e instanceof Error ? e.message : String(e)], { cause: e });
  }
}
