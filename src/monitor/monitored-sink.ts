/**
 * The SAE pipeline's activation sink with the monitor beside it: every tap callback goes to the SAE
 * sink unchanged; request ends also go to the monitor (summaries, live baseline recording), and the
 * model id of the tap connections is remembered (a live recording's provenance names it).
 */
import type { ActivationSink, TapSource } from '../tap/sink.js';
import type { RequestEnd } from '../tap/messages.js';
import type { ActivationsFrame } from '../tap/server.js';
import type { MonitorService } from './service.js';

export class MonitoredSink implements ActivationSink {
  /** Model id of the last tap connection that sent rows; null before any. */
  modelId: string | null = null;

  constructor(
    private readonly sink: ActivationSink,
    private readonly monitor: MonitorService,
  ) {
    if (sink.tokens !== undefined) this.tokens = sink.tokens.bind(sink);
    if (sink.admit !== undefined) this.admit = sink.admit.bind(sink);
    if (sink.connected !== undefined) this.connected = sink.connected.bind(sink);
    if (sink.disconnected !== undefined) this.disconnected = sink.disconnected.bind(sink);
  }

  tokens?: ActivationSink['tokens'];
  admit?: ActivationSink['admit'];
  connected?: ActivationSink['connected'];
  disconnected?: ActivationSink['disconnected'];

  write(frame: ActivationsFrame, source: TapSource): number {
    this.modelId = source.modelId;
    return this.sink.write(frame, source);
  }

  end(end: RequestEnd, source: TapSource): void {
    this.sink.end?.(end, source);
    this.monitor.requestEnded(end.requestId);
  }
}
