/**
 * How a request's steering reaches the model server, one strategy per `--upstream-steering` mode:
 *
 * - `tap` (default): the plan goes down the tap before the request; the body is forwarded byte for
 *   byte and `x-saegate-plan-id` names the plan.
 * - `none`: saegate never steers; a plan that asks for steering is skipped (or refused when
 *   fail-closed), as when no tap connection can apply it.
 * - `reference`, `easysteer`, `vllm-xargs`: servers without the tap. The JSON body is parsed, the
 *   backend (src/steering/upstream.ts) writes the plan into the server's own field, and the body is
 *   serialised again: the one case where the forwarded body is not the client's bytes. Requests
 *   without steering are still forwarded untouched. `x-saegate-applied` says
 *   `steering=upstream:<mode>`: the field was sent, which is all saegate can know.
 *
 * Each strategy answers synchronously and throws only before anything is forwarded, so its errors
 * reach the client as clean 4xx/5xx bodies.
 */
import { SaegateError } from '../common/errors.js';
import { createBodySteeringBackend, isBodySteeringMode, type BodySteeringBackend, type UpstreamSteeringMode } from '../steering/upstream.js';
import type { TapHost } from '../tap/host.js';
import type { SteeringTerm } from './plan.js';

/** What delivering a plan's steering decided. */
export interface SteeringDelivery {
  /** `x-saegate-plan-id` for the upstream request, or null. */
  planId: string | null;
  /** What `steering=` says in `x-saegate-applied`: a plan id, `upstream:<mode>`, or null = skipped. */
  applied: string | null;
  /** The body to forward (the client's own Buffer unless the mode rewrites it). */
  body: Buffer;
}

/** One way of getting steering to the model server. */
export interface SteeringStrategy {
  readonly mode: UpstreamSteeringMode;
  /** Model servers stream activations to saegate in this mode (monitoring and conditions work). */
  readonly activations: boolean;
  /** The `/readyz` line saying how steering travels. */
  readonly description: string;
  /** Delivers non-empty `steering` for a request. */
  deliver(requestId: string, steering: readonly SteeringTerm[], body: Buffer): SteeringDelivery;
}

class TapStrategy implements SteeringStrategy {
  readonly mode = 'tap' as const;
  readonly activations = true;
  readonly description = 'steering and activations via the tap';
  constructor(private readonly tap: TapHost) {}

  deliver(requestId: string, steering: readonly SteeringTerm[], body: Buffer): SteeringDelivery {
    const planId = this.tap.deliverPlan(requestId, steering);
    return { planId, applied: planId, body };
  }
}

class NoSteeringStrategy implements SteeringStrategy {
  readonly mode = 'none' as const;
  readonly activations = true;
  readonly description = 'steering off (--upstream-steering none), activations via the tap';

  deliver(_requestId: string, _steering: readonly SteeringTerm[], body: Buffer): SteeringDelivery {
    return { planId: null, applied: null, body };
  }
}

/** Parses a generation body as a JSON object; SAEGATE_ERR_INVALID_JSON otherwise. */
export function parseBodyObject(body: Buffer): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch (error) {
    throw new SaegateError('SAEGATE_ERR_INVALID_JSON', [`${(error as Error).message} (saegate parses the body to add the steering field)`]);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new SaegateError('SAEGATE_ERR_INVALID_JSON', ['the body is not a JSON object']);
  return parsed as Record<string, unknown>;
}

class BodyFieldStrategy implements SteeringStrategy {
  readonly activations = false;
  readonly description: string;
  private readonly applied: string;
  constructor(private readonly backend: BodySteeringBackend) {
    this.description = `steering via ${backend.mode}, no activations`;
    this.applied = `upstream:${backend.mode}`;
  }

  get mode(): UpstreamSteeringMode {
    return this.backend.mode;
  }

  deliver(_requestId: string, steering: readonly SteeringTerm[], body: Buffer): SteeringDelivery {
    const rewritten = this.backend.serialize(parseBodyObject(body), steering);
    return { planId: null, applied: this.applied, body: Buffer.from(rewritten) };
  }
}

/** The strategy for `mode`. Throws SAEGATE_ERR_CONFIG when the mode's settings are unusable. */
export function createSteeringStrategy(mode: UpstreamSteeringMode, options: { tap: TapHost; vectorDir: string | null }): SteeringStrategy {
  if (mode === 'tap') return new TapStrategy(options.tap);
  if (mode === 'none' || !isBodySteeringMode(mode)) return new NoSteeringStrategy();
  return new BodyFieldStrategy(createBodySteeringBackend(mode, { vectorDir: options.vectorDir }));
}
