/**
 * Payloads between `trainTopKSae` (main thread) and the training worker, inside the `WorkerHost`
 * envelope: one `train` request answered when the last step is done, progress and checkpoints as
 * events.
 */
import type { Device } from '../../common/ort.js';

/** Everything that decides the trained weights. Two runs with equal configs and data give equal weights. */
export interface TrainConfig {
  dIn: number;
  dSae: number;
  /** Active latents per row. */
  k: number;
  /** Latents the AuxK loss draws from the dead ones, per row; 0 turns AuxK off. */
  kAux: number;
  /** Weight of the AuxK loss. */
  auxCoef: number;
  /** Adam learning rate (peak). */
  lr: number;
  /** Steps of linear warm-up from 0 to `lr`. */
  warmupSteps: number;
  /** Fraction of the steps, at the end, over which the learning rate decays linearly to 0. */
  decayFraction: number;
  /** Rows per step. */
  batchRows: number;
  /** Optimiser steps. */
  steps: number;
  seed: number;
  /** A latent that has not fired for this many training rows counts as dead (and feeds AuxK). */
  deadAfterRows: number;
}

export interface RunOptions {
  device: Device;
  /** onnxruntime intra-op threads; undefined = onnxruntime's default. */
  intraOpThreads?: number;
  /** Post progress every this many steps. */
  progressEvery: number;
  /** Write a checkpoint every this many steps (0 = never); the file is `checkpointPath`. */
  checkpointEvery: number;
  checkpointPath: string | null;
  /** Start from this checkpoint file (its config must match). */
  resumeFrom: string | null;
}

/** A view of rows shared with the worker. */
export interface SharedRows {
  buffer: SharedArrayBuffer;
  rows: number;
}

export interface TrainProgress {
  step: number;
  steps: number;
  /** FVU over the batches since the previous progress message. */
  fvu: number;
  /** The loss minimised: FVU plus auxCoef × the AuxK term, over the same batches. */
  loss: number;
  /** The AuxK term's ‖e − ê‖² / ‖e‖² over the same batches (1 = dead latents explain nothing). */
  auxFvu: number;
  /** Mean active latents per row (≤ k: ReLU can zero a selected latent). */
  l0: number;
  /** Fraction of latents currently counted dead. */
  deadFraction: number;
  lr: number;
  /** Training rows per second since the previous progress message. */
  rowsPerSecond: number;
}

/** Parameters in the graph's orientation: `w_enc` and `w_dec` are `[dSae, dIn]`. */
export interface TrainedParams {
  w_enc: Float32Array;
  b_enc: Float32Array;
  w_dec: Float32Array;
  b_dec: Float32Array;
}

export interface TrainRequest {
  config: TrainConfig;
  run: RunOptions;
  train: SharedRows;
}

export interface TrainDone {
  params: TrainedParams;
  history: TrainProgress[];
  resumedAtStep: number;
  trainSeconds: number;
}

export type TrainEvent = { type: 'progress'; progress: TrainProgress } | { type: 'checkpoint'; step: number; path: string };

export interface TrainWorkerProtocol {
  /** Nothing to send: the worker only loads onnxruntime before it is ready. */
  init: null;
  request: TrainRequest;
  response: TrainDone;
  notice: never;
  event: TrainEvent;
}
