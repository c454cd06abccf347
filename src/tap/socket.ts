/**
 * The one place that knows how `ws` hands over and takes back bytes, shared by TapClient and
 * TapServer: message payload normalisation, close codes, and the "error frame, then close" step
 * the protocol requires of whoever gives up on a connection.
 */
import WebSocket from 'ws';
import { encodeMessage } from './codec.js';

/** WebSocket close codes the tap protocol uses (RFC 6455 §7.4.1). */
export const TapCloseCode = {
  normal: 1000,
  goingAway: 1001,
  /** Out-of-order or wrong-direction message, no version overlap, no hello in time. */
  protocolError: 1002,
  /** A text frame: the tap protocol is binary only. */
  unsupportedData: 1003,
  /** A binary frame that does not decode, or decodes to something inconsistent with the hello. */
  invalidPayload: 1007,
  /** A frame larger than the receiver's limit (sent by `ws` itself). */
  messageTooBig: 1009,
} as const;

/** The payload of a `ws` message event as bytes, without copying in the usual case. */
export function rawToBytes(data: WebSocket.RawData): Uint8Array {
  if (Array.isArray(data)) return Buffer.concat(data);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  return data;
}

const MAX_ERROR_MESSAGE = 4000;

/**
 * Sends an `error` message and closes with `closeCode`. The close reason is the error code (short
 * enough for the 123-byte limit); the readable message travels in the error frame. ws flushes the
 * error frame before the close frame, so the peer sees why.
 */
export function sendErrorAndClose(ws: WebSocket, code: string, message: string, closeCode: number): void {
  if (ws.readyState !== WebSocket.OPEN) return;
  const text = message.length > MAX_ERROR_MESSAGE ? `${message.slice(0, MAX_ERROR_MESSAGE)}…` : message;
  ws.send(encodeMessage({ type: 'error', code: code.slice(0, 128), message: text }));
  ws.close(closeCode, code.slice(0, 120));
}

/** The message of an unknown thrown value, for logs and error frames. */
export function describeError(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
