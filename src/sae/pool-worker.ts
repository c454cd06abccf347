/**
 * An SAE encoder worker: owns one onnxruntime session of the encoder graph and runs the batches the
 * pool sends it, one at a time in arrival order (a session run blocks onnxruntime's intra-op threads;
 * running two at once on one session only makes them contend).
 */
import type { InferenceSession } from 'onnxruntime-node';
import { f16ToF32 } from '../common/f16.js';
import { createSession, loadOrt, runSession, type Ort } from '../common/ort.js';
import { serveWorker, type WorkerReply } from '../common/worker-port.js';
import { SaeEncoderNames, saeEncoderOutputNames } from './graph.js';
import type { EncodeRequest, EncodeResponse, PoolWorkerProtocol } from './pool-protocol.js';

let ort: Ort;
let session: InferenceSession;
let dIn = 0;

/**
 * int64 → int32 into `out` by taking the low word of each value (little-endian, as on every
 * platform onnxruntime-node ships for). Indices < dSae and counts ≤ dSae always fit, and −1 stays
 * −1. Reading the BigInt64Array itself allocates a BigInt per element: at 256 rows × 32 slots that
 * cost about 200 µs of CPU per batch; this about 25.
 */
function lowWordsInto(src: BigInt64Array, out: Int32Array): void {
  const words = new Int32Array(src.buffer, src.byteOffset, 2 * out.length);
  for (let i = 0; i < out.length; i++) out[i] = words[2 * i];
}

const outputNames = [...saeEncoderOutputNames];

/** Where float16 batches are widened; grown to the largest batch seen, reused after that. */
let widened = new Float32Array(0);

/** The batch's first `n` values as float32: the input itself, or float16 bits widened into `widened`. */
function float32Rows(rows: Float32Array | Uint16Array, n: number): Float32Array {
  if (rows instanceof Float32Array) return rows.length === n ? rows : rows.subarray(0, n);
  if (widened.length < n) widened = new Float32Array(n);
  const out = widened.subarray(0, n);
  f16ToF32(rows.subarray(0, n), out);
  return out;
}

async function encode({ rows, rowCount }: EncodeRequest): Promise<WorkerReply<EncodeResponse>> {
  const input = float32Rows(rows, rowCount * dIn);
  const t0 = performance.now();
  const out = await runSession(session, { [SaeEncoderNames.input]: new ort.Tensor('float32', input, [rowCount, dIn]) }, outputNames);
  const runMs = performance.now() - t0;
  // The graph chose the list width for this batch (its largest L0, or the cap).
  const topK = out[SaeEncoderNames.indices].dims[1];
  // The five outputs go back as views of one buffer: a transferred buffer costs both threads a few
  // microseconds of allocation and bookkeeping, and the copies here are a few kilobytes.
  const slots = rowCount * topK;
  const packed = new ArrayBuffer(4 * (2 * slots + 3 * rowCount));
  const indices = new Int32Array(packed, 0, slots);
  const values = new Float32Array(packed, 4 * slots, slots);
  const l0 = new Int32Array(packed, 8 * slots, rowCount);
  const sqError = new Float32Array(packed, 8 * slots + 4 * rowCount, rowCount);
  const fvu = new Float32Array(packed, 8 * slots + 8 * rowCount, rowCount);
  lowWordsInto(out[SaeEncoderNames.indices].data as BigInt64Array, indices);
  lowWordsInto(out[SaeEncoderNames.l0].data as BigInt64Array, l0);
  values.set(out[SaeEncoderNames.values].data as Float32Array);
  sqError.set(out[SaeEncoderNames.sqError].data as Float32Array);
  fvu.set(out[SaeEncoderNames.fvu].data as Float32Array);
  return {
    body: { rowCount, topK, rows, indices, values, l0, sqError, fvu, runMs },
    transfer: [rows.buffer as ArrayBuffer, packed],
  };
}

serveWorker<PoolWorkerProtocol>({
  async init(init) {
    dIn = init.dIn;
    ort = await loadOrt();
    session = await createSession(init.model, { device: init.device, intraOpThreads: init.intraOpThreads, spinning: false });
  },
  request: encode,
  // One run at a time, in arrival order (see the file comment).
  serial: true,
});
