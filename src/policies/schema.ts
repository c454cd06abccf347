/**
 * The policy file format, `apiVersion: saegate/v1`, `kind: Policy` (docs/policies.md has complete
 * examples). Every object is strict: an unknown key is an error naming the key, so a misspelt
 * `scael:` never silently means "no scale".
 *
 * A policy is a match (which requests) and a list of actions:
 * - `monitor`: watch features of an SAE (labels, alert thresholds) — feeds the monitor's
 *   watched-feature metrics;
 * - `steer`: add `scale × vector` at one or many hooks, on prompt, generated or all positions or a
 *   window; with `when`, only from the step after a condition fires (conditional steering);
 * - `flag`: annotate the response header and metrics when a condition fires (or always);
 * - `abort`: stop generation when a condition fires, with `finish_reason` `content_filter`.
 */
import { z } from 'zod';

export const POLICY_API_VERSION = 'saegate/v1';

const name = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$/, 'use lowercase letters, digits, ".", "_" and "-" (it appears in response headers and metric labels)');

const hookName = z
  .string()
  .regex(/^(hook_embed|blocks\.\d{1,4}\.hook_[a-z_]+)$/, 'expected a TransformerLens hook name such as blocks.3.hook_resid_post');

const featureIndex = z.number().int().nonnegative();

/** Which token positions a steering term covers. */
export const positionsSchema = z.union([
  z.enum(['prompt', 'generated', 'all']),
  z.strictObject({
    /** First steered position (0 = first prompt token). */
    from: z.number().int().nonnegative(),
    /** First position no longer steered; omitted = to the end. */
    until: z.number().int().positive().optional(),
  }),
]);

/** A condition on the SAE results (or a projection) of one request, evaluated token by token. */
export const conditionSchema = z.union([
  z.strictObject({
    feature: z.strictObject({
      /** SAE name as loaded by `saegate serve --sae` (its directory name). */
      sae: z.string().min(1),
      index: featureIndex,
      /** Fires when the feature's activation is above this value. */
      above: z.number().finite(),
      /** … for this many consecutive tokens. Default 1. */
      forTokens: z.number().int().min(1).max(1024).default(1),
    }),
  }),
  z.strictObject({
    projection: z.strictObject({
      /** Vector reference (file or sae:NAME#FEATURE) whose direction at `hook` the residual is projected on. */
      vector: z.string().min(1),
      hook: hookName,
      /** Fires when residual · unit(vector) is above this value. */
      above: z.number().finite(),
      forTokens: z.number().int().min(1).max(1024).default(1),
    }),
  }),
]);

const watchedFeatureSchema = z.strictObject({
  index: featureIndex,
  /** Defaults to the label in the SAE's features.yaml, if any. */
  label: z.string().min(1).max(128).optional(),
  /** Alert when the feature's firing rate over a window is above this fraction of tokens. */
  alertFiringRateAbove: z.number().min(0).max(1).optional(),
  /** Alert when the feature's mean activation (over firing tokens) is above this value. */
  alertMeanActivationAbove: z.number().finite().optional(),
});

export const monitorActionSchema = z.strictObject({
  monitor: z.strictObject({
    sae: z.string().min(1),
    features: z.array(watchedFeatureSchema).min(1).max(10_000),
  }),
});

export const steerActionSchema = z.strictObject({
  steer: z.strictObject({
    /** A vector file (relative to the policy directory) or `sae:NAME#FEATURE`. */
    vector: z.string().min(1),
    /** Hooks to steer; default: every hook the vector has. */
    hooks: z.array(hookName).min(1).max(256).optional(),
    scale: z.number().finite(),
    positions: positionsSchema.default('all'),
    /** Conditional steering: apply only from the step after this fires. */
    when: conditionSchema.optional(),
    /** With `when`: steer for the rest of the request (default) or this many tokens. */
    forTokens: z.number().int().min(1).optional(),
  }),
});

export const flagActionSchema = z.strictObject({
  flag: z.strictObject({
    name,
    when: conditionSchema.optional(),
    /**
     * A conditional flag's rows take the short tap and SAE deadlines so that it fires before the
     * response ends and appears in `x-saegate-applied` (default). `false`: they go at the
     * monitoring pace; it fires at the same position and counts in the metrics, the live view
     * and the logs, but usually after the response is written. With `when` only.
     */
    inResponse: z.boolean().optional(),
  }),
});

export const abortActionSchema = z.strictObject({
  abort: z.strictObject({
    when: conditionSchema,
    /** Text in the log and admin API; the client sees finish_reason `content_filter`. */
    reason: z.string().min(1).max(256).optional(),
  }),
});

export const actionSchema = z.union([monitorActionSchema, steerActionSchema, flagActionSchema, abortActionSchema]);

export const matchSchema = z.strictObject({
  /** OpenAI routes; default both. */
  routes: z.array(z.enum(['chat_completions', 'completions'])).min(1).optional(),
  /** The body's `model`, exact or with `*` wildcards. */
  models: z.array(z.string().min(1)).min(1).optional(),
  /** Header name (case-insensitive) → accepted values (exact); all listed headers must match. */
  headers: z.record(z.string().min(1).regex(/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/, 'not a valid header name'), z.array(z.string()).min(1)).optional(),
  /** SHA-256 (hex) of accepted API keys (the bearer token); keys themselves never appear in files or logs. */
  apiKeySha256: z.array(z.string().regex(/^[0-9a-f]{64}$/, 'expected 64 lowercase hex digits (sha256 of the key)')).min(1).optional(),
  /** Deterministic rollout: the share of requests (by request-id hash) the policy applies to, 0–100. */
  percent: z.number().min(0).max(100).optional(),
});

export const policySchema = z.strictObject({
  apiVersion: z.literal(POLICY_API_VERSION),
  kind: z.literal('Policy'),
  metadata: z.strictObject({
    name,
    description: z.string().max(4096).optional(),
  }),
  spec: z.strictObject({
    /** Lower runs first (and its steering terms come first). Default 100; ties by name. */
    priority: z.number().int().min(-1_000_000).max(1_000_000).default(100),
    /** Steering asked for and no connected server can apply it: 503 instead of an unsteered answer. */
    failClosed: z.boolean().default(false),
    /** Which requests; omitted = every request. */
    match: matchSchema.default({}),
    actions: z.array(actionSchema).min(1).max(256),
  }),
});

export type Policy = z.infer<typeof policySchema>;
export type PolicyAction = z.infer<typeof actionSchema>;
export type PolicyCondition = z.infer<typeof conditionSchema>;
export type PolicyPositions = z.infer<typeof positionsSchema>;
export type PolicyMatch = z.infer<typeof matchSchema>;
