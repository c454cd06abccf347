/**
 * The one place that imports onnxruntime. `SAEGATE_ONNXRUNTIME` may name the root of another
 * onnxruntime-node package (for example the GPU build unpacked by shared/gpu/unpack.sh); otherwise
 * the installed `onnxruntime-node` is used. Only worker threads call this: `run()` blocks the thread.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import type * as OrtModule from 'onnxruntime-node';
import { isSaegateError, SaegateError } from './errors.js';

export type Ort = typeof OrtModule;
export type Device = 'cpu' | 'cuda';

let cached: Promise<Ort> | null = null;

export function loadOrt(): Promise<Ort> {
  if (!cached) {
    const override = process.env.SAEGATE_ONNXRUNTIME;
    cached = override
      ? Promise.resolve(createRequire(import.meta.url)(path.resolve(override)) as Ort)
      : import('onnxruntime-node').then((m) => m as unknown as Ort);
  }
  return cached;
}

export interface SessionOptions {
  device: Device;
  /** Threads for one operator; default: onnxruntime's choice (all cores). */
  intraOpThreads?: number;
  /**
   * Let onnxruntime's intra-op threads spin-wait between runs. Default true (onnxruntime's own
   * default). Sessions that run in short bursts beside other work (the SAE pool next to the proxy
   * and the tap) do better without: a spinning thread holds a core that the event loop, the other
   * workers or the model server need.
   */
  spinning?: boolean;
}

/**
 * Creates a session, translating a missing execution provider into SAEGATE_ERR_DEVICE_UNAVAILABLE
 * (onnxruntime's own message names library files, not what the user should do).
 */
export async function createSession(model: Uint8Array, options: SessionOptions): Promise<OrtModule.InferenceSession> {
  const ort = await loadOrt();
  const sessionOptions: OrtModule.InferenceSession.SessionOptions = {
    graphOptimizationLevel: 'all',
    logSeverityLevel: 3,
    executionProviders: options.device === 'cuda' ? ['cuda'] : ['cpu'],
  };
  if (options.intraOpThreads !== undefined) sessionOptions.intraOpNumThreads = options.intraOpThreads;
  if (options.spinning === false) sessionOptions.extra = { session: { intra_op: { allow_spinning: '0' } } };
  try {
    return await ort.InferenceSession.create(model, sessionOptions);
  } catch (cause) {
    if (options.device === 'cuda') {
      throw new SaegateError(
        'SAEGATE_ERR_DEVICE_UNAVAILABLE',
        ['cuda', `onnxruntime could not start its CUDA execution provider (${(cause as Error).message}). Install onnxruntime-node with ONNXRUNTIME_NODE_INSTALL=cuda12 on a machine with CUDA 12 and cuDNN 9, or set SAEGATE_ONNXRUNTIME to a CUDA-enabled onnxruntime-node build`],
        { cause },
      );
    }
    throw new SaegateError('SAEGATE_ERR_RUNTIME', [(cause as Error).message], { cause });
  }
}

/**
 * Runs `session` on `feeds`, returning the outputs named in `fetches`. The one place an
 * onnxruntime run error (a shape mismatch, an out-of-memory on the device, a kernel failure) becomes
 * SAEGATE_ERR_RUNTIME, with onnxruntime's error as its cause; workers call this instead of
 * `session.run` and translate nothing themselves.
 */
export async function runSession(
  session: OrtModule.InferenceSession,
  feeds: OrtModule.InferenceSession.FeedsType,
  fetches: readonly string[],
): Promise<OrtModule.InferenceSession.ReturnType> {
  try {
    return await session.run(feeds, fetches);
  } catch (cause) {
    if (isSaegateError(cause)) throw cause;
    throw new SaegateError('SAEGATE_ERR_RUNTIME', [cause instanceof Error ? cause.message : String(cause)], { cause });
  }
}
