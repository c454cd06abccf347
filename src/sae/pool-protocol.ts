/**
 * Payloads between the SAE pool (main thread) and its encoder workers, inside the `WorkerHost`
 * envelope. Bulk data (ONNX bytes, input rows, results) travels as transferred ArrayBuffers, never
 * as per-row objects: an encode request hands the rows buffer to the worker, and the result hands
 * it back (with the outputs) so the caller can reuse it for the next batch. The five outputs are
 * views of one exact-size buffer, in the order indices, values, l0, sqError, fvu (int64 outputs
 * narrowed to int32): two transferred buffers per answer instead of six. A transferred buffer costs
 * both threads allocation and bookkeeping; on this project's 2-core VM a worker round trip with
 * six of them cost 52–65 µs of CPU back to back and one with one 31–48 µs.
 */
import type { Device } from '../common/ort.js';

export interface PoolWorkerInit {
  /** Encoder graph bytes from `buildSaeEncoderGraph`. */
  model: Uint8Array;
  dIn: number;
  device: Device;
  intraOpThreads?: number;
}

export interface EncodeRequest {
  /**
   * `rowCount × dIn` values (the buffer may be longer; only the prefix is read): float32, or
   * float16 bits, which the worker widens to float32 itself, off the main thread.
   */
  rows: Float32Array | Uint16Array;
  rowCount: number;
}

export interface EncodeResponse {
  rowCount: number;
  /** Feature slots per row in this batch: its largest L0 (at least 1), or the graph's cap when smaller. */
  topK: number;
  /** The input buffer, returned for reuse. */
  rows: Float32Array | Uint16Array;
  /** [rowCount · topK]; −1 pads unused slots. */
  indices: Int32Array;
  /** [rowCount · topK]; 0 pads unused slots. */
  values: Float32Array;
  /** [rowCount] */
  l0: Int32Array;
  /** [rowCount] */
  sqError: Float32Array;
  /** [rowCount] */
  fvu: Float32Array;
  /** Time inside onnxruntime, milliseconds. */
  runMs: number;
}

export interface PoolWorkerProtocol {
  init: PoolWorkerInit;
  request: EncodeRequest;
  response: EncodeResponse;
  notice: never;
  event: never;
}
