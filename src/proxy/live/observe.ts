/**
 * How the live view sees traffic without the proxy knowing about it: a `PlanResolver` wrapper
 * (request start, its policies and steering, its `x-saegate-applied` value, its end) and an
 * `ActivationSink` wrapper (token texts and the model server's `end`). Both forward everything
 * unchanged; the hub's work per call is a map lookup and a few bounded writes.
 */
import type { ActivationSink } from '../../tap/sink.js';
import { appliedValue, type PlanRequest, type PlanResolver, type RequestPlan } from '../plan.js';
import type { LiveHub } from './hub.js';

function isPromise<T>(value: T | Promise<T>): value is Promise<T> {
  return typeof (value as Promise<T>)?.then === 'function';
}

/**
 * Wraps `inner` so each generation request is recorded in `hub`. Every plan gets an outcome (the
 * inner one's when it has one) so the hub learns the applied value and the exchange's end; the
 * applied value is the one the proxy would have written without the wrapper.
 */
export function livePlanResolver(hub: LiveHub, inner: PlanResolver): PlanResolver {
  const observe = (request: PlanRequest, plan: RequestPlan): RequestPlan => {
    hub.started({ requestId: request.requestId, route: request.route, model: request.model, policies: plan.policies, steeringTerms: plan.steering.length });
    const innerOutcome = plan.outcome;
    return {
      ...plan,
      outcome: {
        applied(steering) {
          const value = innerOutcome === undefined ? appliedValue(plan, steering) : innerOutcome.applied(steering);
          hub.applied(request.requestId, value);
          return value;
        },
        done() {
          hub.done(request.requestId);
          innerOutcome?.done();
        },
      },
    };
  };
  return {
    resolve(request) {
      const plan = inner.resolve(request);
      return isPromise(plan) ? plan.then((resolved) => observe(request, resolved)) : observe(request, plan);
    },
  };
}

/** Wraps `sink` so token texts and request ends also reach `hub`. */
export function liveSink(hub: LiveHub, sink: ActivationSink): ActivationSink {
  const observed: ActivationSink = {
    write: (frame, source) => sink.write(frame, source),
    tokens(message, source) {
      hub.tokens(message);
      sink.tokens?.(message, source);
    },
    end(end, source) {
      hub.end(end);
      sink.end?.(end, source);
    },
  };
  if (sink.planAck) observed.planAck = (ack, source) => sink.planAck!(ack, source);
  if (sink.admit) observed.admit = (hello, source) => sink.admit!(hello, source);
  if (sink.connected) observed.connected = (source, subscription) => sink.connected!(source, subscription);
  if (sink.disconnected) observed.disconnected = (source) => sink.disconnected!(source);
  return observed;
}
