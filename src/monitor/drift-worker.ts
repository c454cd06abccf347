/**
 * The drift worker: scores monitor windows off the event loop (docs/monitor.md, "Assessment"). It
 * holds each monitored SAE's `BaselineReference` and its calibrators (one per α, each caching its
 * thresholds per token bucket), so the bootstrap calibrations, the drift scores and the per-feature
 * tests with BH all run on this thread. Requests are answered one at a time in arrival order (each
 * handler is synchronous), so a baseline replaced before an assessment is the one it is scored on.
 */
import { err } from '../common/errors.js';
import { serveWorker, type WorkerReply } from '../common/worker-port.js';
import { DriftCalibrator, type CalibrationOptions } from './calibration.js';
import { assessWindow } from './drift.js';
import type { AssessRequest, DriftResponse, DriftWorkerProtocol } from './drift-protocol.js';
import { BaselineReference, type BaselineReferenceParts } from './reference.js';

interface Held {
  readonly reference: BaselineReference;
  readonly calibrators: Map<number, DriftCalibrator>;
}

const held = new Map<string, Held>();
let calibration: CalibrationOptions = {};

function install(key: string, parts: BaselineReferenceParts): void {
  held.set(key, { reference: new BaselineReference(parts), calibrators: new Map() });
}

function calibrator(entry: Held, alpha: number): DriftCalibrator {
  let found = entry.calibrators.get(alpha);
  if (found === undefined) {
    found = new DriftCalibrator(entry.reference, { ...calibration, alpha });
    entry.calibrators.set(alpha, found);
  }
  return found;
}

function assess(request: AssessRequest): WorkerReply<DriftResponse> {
  const entry = held.get(request.key);
  if (entry === undefined) throw err('SAEGATE_ERR_MONITOR_ARGUMENT', `drift worker: no baseline for '${request.key}'`);
  const assessment = assessWindow(request.window, calibrator(entry, request.alpha), request.featureTests);
  const extraThresholds = request.extraAlphas.map((alpha) => [alpha, calibrator(entry, alpha).thresholds(request.window.tokens)] as const);
  return { body: { assessment, extraThresholds }, transfer: [assessment.features.pValues.buffer as ArrayBuffer] };
}

serveWorker<DriftWorkerProtocol>({
  init(init) {
    calibration = init.calibration;
    for (const { key, reference } of init.baselines) install(key, reference);
  },
  request(body) {
    if (body.kind === 'baseline') {
      install(body.key, body.reference);
      return { body: { assessment: null, extraThresholds: [] } };
    }
    return assess(body);
  },
});
