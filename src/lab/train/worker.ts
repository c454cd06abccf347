/**
 * The SAE training worker: owns the onnxruntime session of the training-step graph and runs the
 * whole loop (batching, dead-latent tracking, learning-rate schedule, checkpoints) so the main
 * thread only sees progress messages. A step is one `session.run`: parameters and Adam moments go
 * in and come back updated.
 *
 * Batches: the rows are consumed in a seeded random order, one permutation per epoch, derived from
 * `(seed, epoch)` only. The batch of step s is therefore a function of the seed and s, which makes a
 * resumed run take exactly the batches the uninterrupted one would have.
 */
import type { InferenceSession, Tensor } from 'onnxruntime-node';
import { createSession, loadOrt, runSession, type Ort } from '../../common/ort.js';
import { SeededRandom, shuffledIndices } from '../../common/random.js';
import { serveWorker, type WorkerReply } from '../../common/worker-port.js';
import { readCheckpoint, writeCheckpoint, type CheckpointState } from './checkpoint.js';
import { buildTrainStepGraph, PARAM_NAMES, paramShape, TrainNames, type ParamName } from './graph.js';
import { initialParams } from './init.js';
import type { TrainConfig, TrainDone, TrainedParams, TrainProgress, TrainRequest, TrainWorkerProtocol } from './protocol.js';

/** Learning rate at `step` (0-based): linear warm-up, constant, then linear decay to 0. */
function learningRate(config: TrainConfig, step: number): number {
  const warm = config.warmupSteps > 0 ? Math.min(1, (step + 1) / config.warmupSteps) : 1;
  const decaySteps = Math.floor(config.steps * config.decayFraction);
  const decayStart = config.steps - decaySteps;
  const decay = decaySteps > 0 && step >= decayStart ? Math.max(0, (config.steps - step) / decaySteps) : 1;
  return config.lr * warm * decay;
}

/** Seeded permutation of `[0, n)` for one epoch. */
function permutation(n: number, seed: number, epoch: number): Uint32Array {
  return shuffledIndices(n, new SeededRandom((Math.imul(seed, 0x9e3779b1) ^ Math.imul(epoch + 1, 0x85ebca6b)) >>> 0));
}

class BatchSource {
  private epoch = -1;
  private perm: Uint32Array = new Uint32Array(0);

  constructor(
    private readonly rows: Float32Array,
    private readonly count: number,
    private readonly dIn: number,
    private readonly seed: number,
  ) {}

  /** Copies the rows of the batch of `step` into `out` (`batchRows × dIn`). */
  fill(step: number, batchRows: number, out: Float32Array): void {
    const { dIn, count } = this;
    let position = step * batchRows;
    for (let r = 0; r < batchRows; r++, position++) {
      const epoch = Math.floor(position / count);
      if (epoch !== this.epoch) {
        this.perm = permutation(count, this.seed, epoch);
        this.epoch = epoch;
      }
      const src = this.perm[position - epoch * count] * dIn;
      out.set(this.rows.subarray(src, src + dIn), r * dIn);
    }
  }
}

async function train(msg: TrainRequest): Promise<WorkerReply<TrainDone>> {
  const { config, run } = msg;
  const { dIn, dSae, k, batchRows } = config;
  const rows = new Float32Array(msg.train.buffer, 0, msg.train.rows * dIn);
  const sessionOptions = { device: run.device, intraOpThreads: run.intraOpThreads };
  // Two graphs: a step without AuxK for when no latent is dead (most steps), one with it otherwise.
  const plain: InferenceSession = await createSession(buildTrainStepGraph({ dIn, dSae, k, kAux: 0 }), sessionOptions);
  const withAux: InferenceSession | null = config.kAux > 0 ? await createSession(buildTrainStepGraph({ dIn, dSae, k, kAux: config.kAux }), sessionOptions) : null;

  let state: CheckpointState;
  if (run.resumeFrom !== null) {
    state = readCheckpoint(run.resumeFrom, config, msg.train.rows);
  } else {
    const params = initialParams(rows, msg.train.rows, dIn, dSae, config.seed);
    const zeros = (p: ParamName): Float32Array => new Float32Array(params[p].length);
    state = {
      step: 0,
      params,
      m: { w_enc: zeros('w_enc'), b_enc: zeros('b_enc'), w_dec: zeros('w_dec'), b_dec: zeros('b_dec') },
      v: { w_enc: zeros('w_enc'), b_enc: zeros('b_enc'), w_dec: zeros('w_dec'), b_dec: zeros('b_dec') },
      rowsSinceFired: new Float32Array(dSae),
    };
  }
  const resumedAtStep = state.step;

  const source = new BatchSource(rows, msg.train.rows, dIn, config.seed);
  const batch = new Float32Array(batchRows * dIn);
  const deadList = new BigInt64Array(dSae);
  const auxK = new BigInt64Array(1);
  const stepSize = new Float32Array(1);
  const auxCoef = Float32Array.of(config.auxCoef);
  const feeds: Record<string, Tensor> = {
    [TrainNames.x]: new ort.Tensor('float32', batch, [batchRows, dIn]),
    [TrainNames.stepSize]: new ort.Tensor('float32', stepSize, [1]),
  };
  const auxFeeds = (deadCount: number): Record<string, Tensor> => ({
    ...feeds,
    [TrainNames.deadIndices]: new ort.Tensor('int64', deadList.subarray(0, deadCount), [deadCount]),
    [TrainNames.auxK]: new ort.Tensor('int64', auxK, [1]),
    [TrainNames.auxCoef]: new ort.Tensor('float32', auxCoef, [1]),
  });
  const bind = (): void => {
    for (const p of PARAM_NAMES) {
      const shape = paramShape(p, dIn, dSae);
      feeds[TrainNames.param(p)] = new ort.Tensor('float32', state.params[p], shape);
      feeds[TrainNames.m(p)] = new ort.Tensor('float32', state.m[p], shape);
      feeds[TrainNames.v(p)] = new ort.Tensor('float32', state.v[p], shape);
    }
  };
  const fetches = [
    ...PARAM_NAMES.flatMap((p) => [TrainNames.newParam(p), TrainNames.newM(p), TrainNames.newV(p)]),
    TrainNames.sqError,
    TrainNames.variance,
    TrainNames.auxSqError,
    TrainNames.indices,
    TrainNames.acts,
  ];
  const beta1 = 0.9;
  const beta2 = 0.999;
  const history: TrainProgress[] = [];
  let window = { sq: 0, variance: 0, auxSq: 0, auxTerm: 0, active: 0, rows: 0, started: performance.now() };
  const trainStarted = performance.now();

  for (let step = state.step; step < config.steps; step++) {
    source.fill(step, batchRows, batch);
    let deadCount = 0;
    for (let j = 0; j < dSae; j++) if (state.rowsSinceFired[j] >= config.deadAfterRows) deadList[deadCount++] = BigInt(j);
    auxK[0] = BigInt(Math.min(config.kAux, deadCount));
    const t = step + 1;
    const lr = learningRate(config, step);
    stepSize[0] = (lr * Math.sqrt(1 - beta2 ** t)) / (1 - beta1 ** t);
    bind();
    const out = withAux !== null && deadCount > 0 ? await runSession(withAux, auxFeeds(deadCount), fetches) : await runSession(plain, feeds, fetches);
    for (const p of PARAM_NAMES) {
      state.params[p] = out[TrainNames.newParam(p)].data as Float32Array;
      state.m[p] = out[TrainNames.newM(p)].data as Float32Array;
      state.v[p] = out[TrainNames.newV(p)].data as Float32Array;
    }
    // Dead-latent bookkeeping: every latent ages by the batch; the ones that fired reset.
    const indices = out[TrainNames.indices].data as BigInt64Array;
    const acts = out[TrainNames.acts].data as Float32Array;
    const since = state.rowsSinceFired;
    for (let j = 0; j < dSae; j++) since[j] = Math.min(since[j] + batchRows, 2 * config.deadAfterRows);
    let active = 0;
    for (let i = 0; i < acts.length; i++) {
      if (acts[i] > 0) {
        since[Number(indices[i])] = 0;
        active++;
      }
    }
    const sq = (out[TrainNames.sqError].data as Float32Array)[0];
    window.sq += sq;
    window.variance += (out[TrainNames.variance].data as Float32Array)[0];
    const ranAux = withAux !== null && deadCount > 0;
    const auxSq = ranAux ? (out[TrainNames.auxSqError].data as Float32Array)[0] : 0;
    // 1 = the dead latents explain nothing of the residual (also when AuxK did not run).
    window.auxSq += ranAux ? auxSq / Math.max(sq, 1e-30) : 1;
    window.auxTerm += config.auxCoef * auxSq;
    window.active += active;
    window.rows += batchRows;
    state.step = t;

    const last = t === config.steps;
    if (t % run.progressEvery === 0 || last) {
      const seconds = (performance.now() - window.started) / 1000;
      const stepsInWindow = window.rows / batchRows;
      const progress: TrainProgress = {
        step: t,
        steps: config.steps,
        fvu: window.sq / Math.max(window.variance, 1e-30),
        loss: (window.sq + window.auxTerm) / Math.max(window.variance, 1e-30),
        auxFvu: window.auxSq / stepsInWindow,
        l0: window.active / window.rows,
        deadFraction: deadCount / dSae,
        lr,
        rowsPerSecond: window.rows / Math.max(seconds, 1e-9),
      };
      history.push(progress);
      worker.emit({ type: 'progress', progress });
      window = { sq: 0, variance: 0, auxSq: 0, auxTerm: 0, active: 0, rows: 0, started: performance.now() };
    }
    if (run.checkpointPath !== null && run.checkpointEvery > 0 && (t % run.checkpointEvery === 0 || last)) {
      writeCheckpoint(run.checkpointPath, config, msg.train.rows, state);
      worker.emit({ type: 'checkpoint', step: t, path: run.checkpointPath });
    }
  }
  await plain.release();
  await withAux?.release();
  const params: TrainedParams = {
    w_enc: Float32Array.from(state.params.w_enc),
    b_enc: Float32Array.from(state.params.b_enc),
    w_dec: Float32Array.from(state.params.w_dec),
    b_dec: Float32Array.from(state.params.b_dec),
  };
  return {
    body: { params, history, resumedAtStep, trainSeconds: (performance.now() - trainStarted) / 1000 },
    transfer: PARAM_NAMES.map((p) => params[p].buffer as ArrayBuffer),
  };
}

let ort: Ort;

const worker = serveWorker<TrainWorkerProtocol>({
  async init() {
    ort = await loadOrt();
  },
  request: train,
});
