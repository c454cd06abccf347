/**
 * The SAE pipeline's activation sink with the monitor beside it: every tap callback goes to the SAE
 * sink unchanged (any callback, present or added later to `ActivationSink`: the wrapper forwards
 * whatever it does not handle); request ends also go to the monitor (summaries, live baseline
 * recording), and the model id of the tap connection that last sent rows is remembered (a live
 * recording's provenance names it).
 */
import type { ActivationSink, TapSource } from '../tap/sink.js';
import type { RequestEnd } from '../tap/messages.js';
import type { ActivationsFrame } from '../tap/server.js';
import type { MonitorService } from './service.js';

export interface MonitoredSink {
  /** What the tap host is given. */
  readonly sink: ActivationSink;
  /** Model id of the last tap connection that sent rows; null before any. */
  modelId(): string | null;
}

/** Wraps `inner` so request ends reach `monitor` too. */
export function monitoredSink(inner: ActivationSink, monitor: MonitorService): MonitoredSink {
  let modelId: string | null = null;
  const write = (frame: ActivationsFrame, source: TapSource): number => {
    modelId = source.modelId;
    return inner.write(frame, source);
  };
  const end = (message: RequestEnd, source: TapSource): void => {
    inner.end?.(message, source);
    monitor.requestEnded(message.requestId);
  };
  const sink = new Proxy(inner, {
    get(target, property) {
      if (property === 'write') return write;
      if (property === 'end') return end;
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
    has(target, property) {
      return property === 'end' || Reflect.has(target, property);
    },
  });
  return { sink, modelId: () => modelId };
}
