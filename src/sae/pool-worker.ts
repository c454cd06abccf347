/**
 * An SAE encoder worker: owns one onnxruntime session of the encoder graph and runs the batches the
 * pool sends it, one at a time in arrival order (a session run blocks onnxruntime's intra-op threads;
 * running two at once on one session only makes them contend).
 */
import { parentPort } from 'node:worker_threads';
import type { InferenceSession } from 'onnxruntime-node';
import { isSaegateError } from '../common/errors.js';
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

/** int64 → int32 (indices < dSae and counts ≤ dSae always fit). */
function toInt32(src: BigInt64Array, n: number): Int32Array {
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = Number(src[i]);
  return out;
}

async function encode(msg: Extract<ToPoolWorker, { type: 'encode' }>): Promise<void> {
  const { id, rows, rowCount } = msg;
  if (initError) {
    post({ type: 'encode_error', id, rows, ...initError }, [rows.buffer as ArrayBuffer]);
    return;
  }
  try {
    const input = rows.length === rowCount * dIn ? rows : rows.subarray(0, rowCount * dIn);
    const t0 = performance.now();
    const out = await session.run({ [SaeEncoderNames.input]: new ort.Tensor('float32', input, [rowCount, dIn]) }, [...saeEncoderOutputNames]);
    const runMs = performance.now() - t0;
    const indices = toInt32(out[SaeEncoderNames.indices].data as BigInt64Array, rowCount * topK);
    const l0 = toInt32(out[SaeEncoderNames.l0].data as BigInt64Array, rowCount);
    // onnxruntime's output arrays may be views of a larger native-backed buffer; copy into exact-size
    // arrays so the transfer list holds only what we own.
    const values = Float32Array.from(out[SaeEncoderNames.values].data as Float32Array);
    const sqError = Float32Array.from(out[SaeEncoderNames.sqError].data as Float32Array);
    const fvu = Float32Array.from(out[SaeEncoderNames.fvu].data as Float32Array);
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
          session = await createSession(msg.model, { device: msg.device, intraOpThreads: msg.intraOpThreads });
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
