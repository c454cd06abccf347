/**
 * `/readyz`: is this saegate worth sending traffic to? Ready when it is not shutting down, the
 * upstream answers `GET /v1/models` (probed with a short timeout, the result reused briefly so a
 * burst of probes costs one request), and a model server is connected to the tap when the
 * configuration requires one. SAE loading will join the checks when src/sae exists. With the drift
 * monitor on, `monitor` reports each SAE's baseline (loaded, or why not) and any live recording;
 * a missing or unusable baseline never makes saegate unready: it serves without drift for that SAE.
 */
import { performance } from 'node:perf_hooks';
import type { MonitorService } from '../monitor/service.js';
import type { ProbeResult, UpstreamClient } from './upstream.js';
import type { SteeringStrategy } from './upstream-steering.js';

export interface ReadinessOptions {
  upstream: UpstreamClient;
  probeTimeoutMs: number;
  /** How long a probe result is reused, ms. */
  cacheMs: number;
  requireTap: boolean;
  /** Open tap connections now. */
  tapConnections: () => number;
  /** How steering reaches the model server; reported, never a reason to be unready. */
  steering: Pick<SteeringStrategy, 'mode' | 'activations' | 'description'>;
  /** True once shutdown has begun. */
  draining: () => boolean;
  /** The drift monitor's details (MonitorService.readiness); absent without a monitor. */
  monitor?: () => MonitorReadiness;
}

/** `/readyz` details of the drift monitor. `ok` false: some baseline could not be used (still ready). */
export type MonitorReadiness = ReturnType<MonitorService['readiness']>;

/** The `/readyz` body. */
export interface ReadinessReport {
  ready: boolean;
  draining: boolean;
  upstream: { ok: boolean; url: string; status: number | null; error: string | null };
  tap: { ok: boolean; required: boolean; connections: number };
  /** `details`: e.g. `steering via easysteer, no activations` for a server without the tap. */
  steering: { mode: string; activations: boolean; details: string };
  monitor?: MonitorReadiness;
}

export class Readiness {
  private cached: { result: ProbeResult; at: number } | null = null;
  private inFlight: Promise<ProbeResult> | null = null;

  constructor(private readonly options: ReadinessOptions) {}

  async check(): Promise<ReadinessReport> {
    const { steering } = this.options;
    const draining = this.options.draining();
    const connections = this.options.tapConnections();
    const tapOk = !this.options.requireTap || connections > 0;
    const probe = draining ? { ok: false, status: null, error: 'shutting down' } : await this.probe();
    return {
      ready: !draining && probe.ok && tapOk,
      draining,
      upstream: { ok: probe.ok, url: this.options.upstream.url, status: probe.status, error: probe.error },
      tap: { ok: tapOk, required: this.options.requireTap, connections },
      steering: { mode: steering.mode, activations: steering.activations, details: steering.description },
      ...(this.options.monitor && { monitor: this.options.monitor() }),
    };
  }

  private probe(): Promise<ProbeResult> {
    const cached = this.cached;
    if (cached !== null && performance.now() - cached.at < this.options.cacheMs) return Promise.resolve(cached.result);
    if (this.inFlight !== null) return this.inFlight;
    this.inFlight = this.options.upstream.probe(this.options.probeTimeoutMs).then((result) => {
      this.cached = { result, at: performance.now() };
      this.inFlight = null;
      return result;
    });
    return this.inFlight;
  }
}
