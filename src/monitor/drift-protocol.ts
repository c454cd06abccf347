/**
 * The drift worker's payloads (drift-worker.ts; the envelope is src/common/worker-protocol.ts). The
 * worker holds each monitored SAE's baseline reference and calibrators, keyed by `monitorKey`; the
 * service sends a baseline once when it is loaded or replaced, then one window's sums per request.
 */
import type { CalibrationOptions, DriftThresholds } from './calibration.js';
import type { DriftAssessment } from './drift.js';
import type { FeatureTestOptions } from './feature-tests.js';
import type { BaselineReferenceParts, DistributionSums } from './reference.js';

/** Sent to each worker start (a replacement too): the calibration options and every current baseline. */
export interface DriftWorkerInit {
  readonly calibration: CalibrationOptions;
  readonly baselines: readonly { readonly key: string; readonly reference: BaselineReferenceParts }[];
}

/** Scores one window against the SAE's baseline at `alpha`, plus the thresholds at `extraAlphas` (alert rules' own false-alarm rates). */
export interface AssessRequest {
  readonly kind: 'assess';
  readonly key: string;
  readonly window: DistributionSums;
  readonly alpha: number;
  readonly extraAlphas: readonly number[];
  readonly featureTests: FeatureTestOptions & { readonly top: number };
}

/** Installs (or replaces) the baseline of `key`; its calibrators start empty. */
export interface BaselineRequest {
  readonly kind: 'baseline';
  readonly key: string;
  readonly reference: BaselineReferenceParts;
}

export type DriftRequest = AssessRequest | BaselineRequest;

export interface DriftResponse {
  /** Null for a `baseline` request. */
  readonly assessment: DriftAssessment | null;
  /** Thresholds per extra α, in request order. */
  readonly extraThresholds: readonly (readonly [number, DriftThresholds])[];
}

export interface DriftWorkerProtocol {
  init: DriftWorkerInit;
  request: DriftRequest;
  response: DriftResponse;
  notice: never;
  event: never;
}
