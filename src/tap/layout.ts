/**
 * Byte-level building blocks shared by the codec and the frame builders: the 4-byte header, a
 * bounds-checked reader, and the request-id table that activations and tokens frames start with.
 * Not exported from the module index: the frame layout is an implementation detail of codec.ts.
 */
import { err, SaegateError } from '../common/errors.js';
import { MAX_ID_BYTES, MessageTypeCode, type TapMessageType } from './messages.js';

/** `u8 messageType, u8 flags, u16 reserved`. */
export const HEADER_BYTES = 4;

/** Typed-array views alias frame bytes directly only when the host stores numbers little-endian. */
export const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export function assertLittleEndianHost(): void {
  if (!HOST_IS_LITTLE_ENDIAN) throw err('SAEGATE_ERR_TAP_ARGUMENT', 'the tap codec needs a little-endian host');
}

export function frameError(reason: string): SaegateError {
  return err('SAEGATE_ERR_TAP_FRAME', reason);
}

export function argumentError(reason: string): SaegateError {
  return err('SAEGATE_ERR_TAP_ARGUMENT', reason);
}

/** Bytes of padding that bring `offset` to a multiple of 4. */
export function padTo4(offset: number): number {
  return (4 - (offset & 3)) & 3;
}

/**
 * Allocates a frame without zero-filling it: every writer fills every byte, padding included.
 * `allocUnsafeSlow` gives the frame its own ArrayBuffer at offset 0, so offsets that the layout
 * aligns relative to the frame start are aligned in memory too (pooled buffers are not).
 */
export function allocFrame(byteLength: number, type: TapMessageType): { frame: Buffer; view: DataView } {
  const frame = Buffer.allocUnsafeSlow(byteLength);
  frame[0] = MessageTypeCode[type];
  frame[1] = 0;
  frame[2] = 0;
  frame[3] = 0;
  return { frame, view: new DataView(frame.buffer, frame.byteOffset, frame.byteLength) };
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** A cursor over one frame; every read checks bounds and throws SAEGATE_ERR_TAP_FRAME. */
export class FrameReader {
  readonly bytes: Uint8Array;
  readonly view: DataView;
  offset: number;

  constructor(bytes: Uint8Array, offset: number) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.offset = offset;
  }

  get remaining(): number {
    return this.bytes.byteLength - this.offset;
  }

  need(n: number, what: string): void {
    if (n > this.remaining) {
      throw frameError(`truncated at byte ${this.offset}: ${what} needs ${n} bytes, ${this.remaining} left`);
    }
  }

  u8(what: string): number {
    this.need(1, what);
    return this.view.getUint8(this.offset++);
  }

  u16(what: string): number {
    this.need(2, what);
    const v = this.view.getUint16(this.offset, true);
    this.offset += 2;
    return v;
  }

  u32(what: string): number {
    this.need(4, what);
    const v = this.view.getUint32(this.offset, true);
    this.offset += 4;
    return v;
  }

  /** Decodes `n` bytes of strict UTF-8 (invalid sequences are a frame error, a BOM is kept). */
  utf8(n: number, what: string): string {
    this.need(n, what);
    const slice = this.bytes.subarray(this.offset, this.offset + n);
    this.offset += n;
    try {
      return utf8.decode(slice);
    } catch {
      throw frameError(`${what} is not valid UTF-8`);
    }
  }

  /** Skips the zero padding that aligns the cursor to 4 bytes from the frame start. */
  align4(what: string): void {
    const pad = padTo4(this.offset);
    this.need(pad, what);
    for (let i = 0; i < pad; i++) {
      if (this.bytes[this.offset + i] !== 0) throw frameError(`${what}: padding byte ${this.offset + i} is not zero`);
    }
    this.offset += pad;
  }

  /** Rejects trailing bytes: every v1 frame has an exact length. */
  end(what: string): void {
    if (this.remaining !== 0) throw frameError(`${what}: ${this.remaining} unexpected trailing bytes`);
  }
}

/** Decodes the request table: `u16 count`, then per entry `u8 byteLength` + UTF-8 id (1..255 bytes). */
export function readRequestTable(reader: FrameReader): string[] {
  const count = reader.u16('request count');
  // Each entry takes at least 2 bytes; check before allocating so a lying count cannot cost memory.
  reader.need(count * 2, 'request table');
  const ids = new Array<string>(count);
  for (let i = 0; i < count; i++) {
    const length = reader.u8('request id length');
    if (length === 0) throw frameError(`request id ${i} is empty`);
    ids[i] = reader.utf8(length, `request id ${i}`);
  }
  return ids;
}

/** UTF-8 bytes the request table takes for `ids` (count field included); validates each id. */
export function requestTableByteLength(ids: readonly string[]): number {
  if (ids.length > 0xffff) throw argumentError(`${ids.length} distinct request ids in one frame, at most 65535`);
  let total = 2;
  for (let i = 0; i < ids.length; i++) {
    const n = Buffer.byteLength(ids[i], 'utf8');
    if (n === 0 || n > MAX_ID_BYTES) throw argumentError(`request id '${ids[i]}' must take 1..${MAX_ID_BYTES} UTF-8 bytes`);
    total += 1 + n;
  }
  return total;
}

/** Writes the request table at `offset`; returns the offset after it. */
export function writeRequestTable(frame: Buffer, offset: number, ids: readonly string[]): number {
  frame.writeUInt16LE(ids.length, offset);
  let at = offset + 2;
  for (let i = 0; i < ids.length; i++) {
    const n = frame.write(ids[i], at + 1, 'utf8');
    frame[at] = n;
    at += 1 + n;
  }
  return at;
}
