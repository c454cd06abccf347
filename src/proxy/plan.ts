/**
 * The seam between the proxy and the policies module: before forwarding a generation request the
 * proxy asks a PlanResolver what to do with it. Until policies exist the resolver returns an
 * empty plan, so requests pass through untouched and `x-saegate-applied` says `none`.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { SteeringTerm } from '../tap/host.js';

/** A steering term is the tap host's (src/tap/host.ts): the proxy hands them to it as they are. */
export type { SteeringTerm };

/** What the proxy knows about a request when it asks for its plan. */
export interface PlanRequest {
  requestId: string;
  /** `chat_completions` or `completions`. */
  route: 'chat_completions' | 'completions';
  /** The body's `model`, or null. */
  model: string | null;
  stream: boolean;
  headers: IncomingHttpHeaders;
  /** The raw body, exactly as it will be forwarded. Parse it if you need more; never modify it. */
  body: Buffer;
}

/** A request's plan: what policies matched and what steering they ask for. */
export interface RequestPlan {
  /** Names of the policies that matched (monitoring-only ones included), for `x-saegate-applied`. */
  policies: readonly string[];
  /** Steering terms; empty = no steering. */
  steering: readonly SteeringTerm[];
  /**
   * When steering is asked for and no connected model server can apply it: true fails the request
   * with 503 SAEGATE_ERR_STEERING_UNAVAILABLE, false forwards it unsteered (and says so). Default false.
   */
  failClosed?: boolean;
  /**
   * Set when what applies is decided while the request runs (conditional steering, flags): the
   * `x-saegate-applied` value is then asked for when the response head is written and again for
   * the final SSE comment, so it can list triggers that happened in between.
   */
  outcome?: PlanOutcome;
  /**
   * How long the model server's tap may hold this request's rows, tokens and end before sending
   * them, ms, in place of the subscription's hold (sent as `x-saegate-tap-max-delay-ms`; model
   * servers without the tap ignore it). The policies set it on requests no conditional rule reads,
   * so that one loaded conditional policy does not shorten every request's hold. Absent: the
   * subscription's.
   */
  tapMaxDelayMs?: number;
}

/** A plan whose outcome unfolds while the request runs (src/policies/runtime.ts). */
export interface PlanOutcome {
  /** The `x-saegate-applied` value now, given what follows `steering=` (as for `appliedValue`; null = skipped). */
  applied(steering: string | null): string;
  /** The exchange is over, however it ended (or it was never forwarded). Called once. */
  done(): void;
}

/** Resolves a request's plan. May answer synchronously, which keeps the common path free of promises. */
export interface PlanResolver {
  resolve(request: PlanRequest): RequestPlan | Promise<RequestPlan>;
}

/** A policy's decision to stop a request's generation (an `abort` action that fired). */
export interface GenerationAbort {
  /** The policy that fired (`NAME@VERSION`); it appears as `abort=POLICY` in `x-saegate-applied`. */
  policy: string;
  /** Free text for the log; never sent to the client. */
  reason?: string;
}

/**
 * How the policies side stops a running request: the proxy cancels the upstream request (which is
 * how a model server learns to stop generating; the tap protocol has no abort message) and ends
 * the client's response with `finish_reason: "content_filter"` (src/proxy/abort.ts). The proxy
 * app implements it; `saegate serve` hands it to whatever evaluates conditions. The policies layer
 * cannot import this file and declares the same shape structurally.
 */
export interface RequestAborter {
  /**
   * Stops the generation request `requestId` if it is still being answered. True when the abort
   * was taken: the response ends with content_filter (a stream mid-event first finishes the event
   * in progress). False when there is no such request, it already ended, its response is an
   * upstream error, or a non-streaming body already started (generation is then over anyway).
   */
  abortRequest(requestId: string, abort: GenerationAbort): boolean;
}

/** The plan of a request nothing applies to. */
export const EMPTY_PLAN: RequestPlan = Object.freeze({ policies: Object.freeze([]), steering: Object.freeze([]) });

/** The resolver used until the policies module provides one: every request gets the empty plan. */
export const emptyPlanResolver: PlanResolver = { resolve: () => EMPTY_PLAN };

/**
 * The `x-saegate-applied` value: `none`, or comma-separated items `policy=<name>` and
 * `steering=<planId>` (the plan went to the model server with the request), `steering=upstream:<mode>`
 * (it was written into the body for a server without the tap) or `steering=skipped` (steering was
 * asked for but nothing could apply it). `planId` is what follows `steering=`; null = skipped.
 */
export function appliedValue(plan: RequestPlan, planId: string | null): string {
  if (plan.policies.length === 0 && plan.steering.length === 0) return 'none';
  const items = plan.policies.map((name) => `policy=${name}`);
  if (plan.steering.length > 0) items.push(`steering=${planId ?? 'skipped'}`);
  return items.join(', ');
}
