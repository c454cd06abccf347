/**
 * The tap side of projection monitors (projection.ts): wraps the activation sink serve already has
 * (the SAE pipeline's, or none) so that every frame at a projected hook is projected on the event
 * loop (d_model multiply-adds per row per monitor, no copy of the rows) and offered to the monitor
 * as that monitor's rows; then the frame goes to the inner sink unchanged. Every other callback
 * goes to the inner sink as it is (the wrapper forwards whatever it does not handle, like
 * monitored-sink.ts).
 *
 * A frame whose width is not the direction's is not projected and its rows are counted as dropped
 * (`saegate_tap_rows_dropped_total{reason="sink"}`); the frame's dropped count is the larger of
 * the inner sink's and this one's, so a row is never counted twice.
 */
import type { ActivationSink, TapSource } from '../tap/sink.js';
import type { ActivationsFrame } from '../tap/server.js';
import { projectRows, projectionRows, type ProjectionSpec } from './projection.js';
import type { MonitorService } from './service.js';

/** `inner` (or a sink that takes nothing else) with `projections` fed to `monitor`. */
export function projectingSink(inner: ActivationSink | undefined, projections: readonly ProjectionSpec[], monitor: Pick<MonitorService, 'offerProjection'>): ActivationSink {
  const byHook = new Map<string, ProjectionSpec[]>();
  for (const p of projections) byHook.set(p.hook, [...(byHook.get(p.hook) ?? []), p]);
  const write = (frame: ActivationsFrame, source: TapSource): number => {
    const dropped = inner?.write(frame, source) ?? 0;
    const specs = byHook.get(frame.hook);
    if (specs === undefined || frame.rowCount === 0) return dropped;
    let ours = 0;
    // One index column for all monitors at this hook (the frame's is a Uint16Array view).
    let requestIndex: Uint32Array | null = null;
    for (const spec of specs) {
      if (frame.dModel !== spec.dModel) {
        ours = frame.rowCount;
        continue;
      }
      requestIndex ??= Uint32Array.from(frame.rowRequestIndexes);
      const projection = projectRows(frame, frame.rowCount, spec.direction);
      monitor.offerProjection(spec.name, projectionRows(projection, requestIndex, frame.requestIds.slice()));
    }
    return Math.max(dropped, ours);
  };
  if (inner === undefined) return { write };
  return new Proxy(inner, {
    get(target, property) {
      if (property === 'write') return write;
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}
