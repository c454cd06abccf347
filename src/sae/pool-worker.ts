/**
 * An SAE encoder worker: owns one onnxruntime session of the encoder graph and runs the batches the
 * pool sends it, one at a time in arrival order (a session run blocks onnxruntime's intra-op threads;
 * running two at once on one session only makes them contend).
 */
import { parentPort } from 'node:worker_threads';
import type { InferenceSession } from 'onnxruntime-node';
import { isSaegateError } from '../common/errors.js';
import { f16ToF32 } from '../common/f16.js';
import { createSession, loadOrt, type Ort } from '../common/ort.js';
import { SaeEncoderNames, saeEncoderOutputNames } from './graph.js';
import type { FromPoolWorker, ToPoolWorker } from './pool-protocol.js';

const port = parentPort;
if (!port) throw new Error('pool-worker must run in a worker thread');

let ort: Ort;
let session: InferenceSession;
let dIn = 0;
let topK = 0;
/**
 * Serialises runs: each encode chains onto the previous one, and the chain starts at session
 * creation, so encodes posted before the session is ready wait for it.
 */
let queue: Promise<void> = Promise.resolve();
let initError: { code: string; message: string } | null = null;

function post(message: FromPoolWorker, transfer: ArrayBuffer[] = []): void {
  port!.postMessage(message, transfer);
}

/**
 * int64 → int32 by taking the low word of each value (little-endian, as on every platform
 * onnxruntime-node ships for). Indices < dSae and counts ≤ dSae always fit, and −1 stays −1.
 * Reading the BigInt64Array itself allocates a BigInt per element: at 256 rows × 32 slots that
 * conversion, with the copies `owned` avoids, cost about 200 µs of CPU per batch; now about 25.
 */
function lowWords(src: BigInt64Array, n: number): Int32Array {
  const words = new Int32Array(src.buffer, src.byteOffset, 2 * n);
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = words[2 * i];
  return out;
}

/**
 * `data` itself when it is the whole of its buffer (what onnxruntime-node hands out: one fresh
 * ArrayBuffer per output), so it can be transferred without a copy; otherwise an exact-size copy, so
 * the transfer list never holds memory we do not own.
 */
function owned(data: Float32Array): Float32Array {
  return data.byteOffset === 0 && data.byteLength === data.buffer.byteLength ? data : data.slice();
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

async function encode(msg: Extract<ToPoolWorker, { type: 'encode' }>): Promise<void> {
  const { id, rows, rowCount } = msg;
  if (initError) {
    post({ type: 'encode_error', id, rows, ...initError }, [rows.buffer as ArrayBuffer]);
    return;
  }
  try {
    const input = float32Rows(rows, rowCount * dIn);
    const t0 = performance.now();
    const out = await session.run({ [SaeEncoderNames.input]: new ort.Tensor('float32', input, [rowCount, dIn]) }, outputNames);
    const runMs = performance.now() - t0;
    const indices = lowWords(out[SaeEncoderNames.indices].data as BigInt64Array, rowCount * topK);
    const l0 = lowWords(out[SaeEncoderNames.l0].data as BigInt64Array, rowCount);
    const values = owned(out[SaeEncoderNames.values].data as Float32Array);
    const sqError = owned(out[SaeEncoderNames.sqError].data as Float32Array);
    const fvu = owned(out[SaeEncoderNames.fvu].data as Float32Array);
    post({ type: 'result', id, rowCount, rows, indices, values, l0, sqError, fvu, runMs }, [
      rows.buffer as ArrayBuffer,
      indices.buffer as ArrayBuffer,
      values.buffer as ArrayBuffer,
      l0.buffer as ArrayBuffer,
      sqError.buffer as ArrayBuffer,
      fvu.buffer as ArrayBuffer,
    ]);
  } catch (error) {
    const code = isSaegateError(error) ? error.code : 'SAEGATE_ERR_RUNTIME';
    post({ type: 'encode_error', id, rows, code, message: (error as Error).message }, [rows.buffer as ArrayBuffer]);
  }
}

port.on('message', (msg: ToPoolWorker) => {
  switch (msg.type) {
    case 'init':
      dIn = msg.dIn;
      topK = msg.topK;
      queue = loadOrt()
        .then(async (m) => {
          ort = m;
          session = await createSession(msg.model, { device: msg.device, intraOpThreads: msg.intraOpThreads, spinning: false });
        })
        .then(
          () => post({ type: 'ready' }),
          (error: unknown) => {
            initError = { code: isSaegateError(error) ? error.code : 'SAEGATE_ERR_RUNTIME', message: (error as Error).message };
            post({ type: 'init_error', ...initError });
          },
        );
      break;
    case 'encode':
      queue = queue.then(() => encode(msg));
      break;
    case 'crash':
      process.exit(1);
      break;
    case 'close':
      port.close();
      break;
  }
});
