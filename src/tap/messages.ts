/**
 * Tap protocol v1 message types and the zod schemas that validate control-message bodies.
 * docs/tap-protocol.md is the normative text; names here follow it (`plan_update`, not
 * `planUpdate`, because the discriminant is the wire name).
 *
 * Control messages (JSON bodies) are validated by schema at decode and at encode. Data messages
 * (activations, tokens, vector) are checked field by field in codec.ts, never through zod: they are
 * the hot path and carry typed arrays.
 */
import { z } from 'zod';

/** The protocol version this module speaks. */
export const TAP_PROTOCOL_VERSION = 1;

/** Versions this module can negotiate, in order of preference. */
export const SUPPORTED_PROTOCOL_VERSIONS: readonly number[] = [TAP_PROTOCOL_VERSION];

/** First byte of every frame. */
export const MessageTypeCode = {
  hello: 0x01,
  welcome: 0x02,
  subscribe: 0x03,
  activations: 0x04,
  tokens: 0x05,
  vector: 0x06,
  plan: 0x07,
  plan_update: 0x08,
  plan_ack: 0x09,
  end: 0x0a,
  error: 0x0b,
} as const;

export type TapMessageType = keyof typeof MessageTypeCode;

/** Element types a model server may advertise in `hello`. */
export type TapDtype = 'f32' | 'f16' | 'bf16';
/** Element types saegate may subscribe to (and activation frames may carry) in v1. */
export type StreamDtype = 'f32' | 'f16';

/** Activation frame dtype byte. 0 is invalid so a zeroed buffer never decodes as a frame. */
export const DtypeCode = { f32: 1, f16: 2 } as const;

/** Longest request id, plan id or session id in UTF-8 bytes: binary tables store it in a u8. */
export const MAX_ID_BYTES = 255;
/** Most hook points a hello may list: activation frames index them with a u16. */
export const MAX_HOOK_POINTS = 0xffff;
/** Positions and token ids travel as u32 but must fit an Int32Array on both ends. */
export const MAX_POSITION = 0x7fffffff;

const utf8ByteLength = (s: string): number => Buffer.byteLength(s, 'utf8');

const idSchema = z
  .string()
  .min(1)
  .refine((s) => utf8ByteLength(s) <= MAX_ID_BYTES, { message: `longer than ${MAX_ID_BYTES} UTF-8 bytes` });

const hookNameSchema = z.string().min(1).max(256);

/**
 * TransformerLens hook point names: dot-separated lowercase segments ending in `hook_…`, with an
 * optional leading `blocks.N.` (N without leading zeros): `hook_embed`, `blocks.3.hook_resid_post`,
 * `blocks.0.attn.hook_z`, `ln_final.hook_normalized`. SAEs name their hook this way, so a model
 * server advertising anything else could never be matched to one.
 */
export const HOOK_POINT_PATTERN = /^(?:blocks\.(?:0|[1-9][0-9]{0,5})\.)?(?:(?!blocks\.)[a-z][a-z0-9_]*\.)*hook_[a-z0-9_]+$/;

/** A hook point a model server advertises in `hello`: a TransformerLens name. */
const hookPointSchema = hookNameSchema.regex(HOOK_POINT_PATTERN, "expected a TransformerLens hook name such as 'blocks.3.hook_resid_post' or 'hook_embed'");

/** Lowercase hex sha256 of the vector's f32 little-endian bytes. */
export const VECTOR_ID_PATTERN = /^[0-9a-f]{64}$/;
const vectorIdSchema = z.string().regex(VECTOR_ID_PATTERN, 'expected 64 lowercase hex digits');

const uniqueStrings = (values: readonly string[]): boolean => new Set(values).size === values.length;

export const helloSchema = z.object({
  protocolVersions: z.array(z.int().min(1)).min(1).max(64),
  modelId: z.string().min(1).max(1024),
  dModel: z.int().min(1).max(0xffffffff),
  nLayers: z.int().min(1),
  hookPoints: z.array(hookPointSchema).max(MAX_HOOK_POINTS).refine(uniqueStrings, 'hook points must be unique'),
  dtypes: z.array(z.enum(['f32', 'f16', 'bf16'])).min(1),
  canSteer: z.boolean(),
  /** The server honours plan entries with a `span` (positions counted from the start of the prompt or of the generation). */
  relativeSpans: z.boolean().optional(),
  serverId: z.string().max(1024).optional(),
});

export const welcomeSchema = z.object({
  protocolVersion: z.int().min(1),
  sessionId: idSchema,
});

/** The longest a model server may be asked to hold tapped data, ms (subscription-wide or per request). */
export const MAX_TAP_HOLD_MS = 60_000;
const holdMsSchema = z.int().min(0).max(MAX_TAP_HOLD_MS);

export const subscribeSchema = z.object({
  hooks: z.array(hookNameSchema).max(MAX_HOOK_POINTS).refine(uniqueStrings, 'hooks must be unique'),
  dtype: z.enum(['f32', 'f16']),
  includePrompt: z.boolean(),
  /**
   * How long the server may hold this connection's rows, tokens and request ends before sending
   * them, ms (it waits the longer of this and its own flush interval). Absent: its own interval.
   */
  maxDelayMs: holdMsSchema.optional(),
});

export const planEntrySchema = z
  .object({
    hook: hookNameSchema,
    vectorId: vectorIdSchema,
    scale: z.number(),
    fromPosition: z.int().min(0).max(MAX_POSITION),
    untilPosition: z.int().min(0).max(MAX_POSITION).nullable(),
    /**
     * Absent: positions are absolute (0 = first prompt token). `prompt`: counted from the first
     * prompt token and never past the prompt. `generated`: counted from the first generated
     * position (the prompt's length). Only sent to servers whose hello says `relativeSpans`.
     */
    span: z.enum(['prompt', 'generated']).optional(),
  })
  .refine((e) => e.untilPosition === null || e.untilPosition > e.fromPosition, {
    message: 'untilPosition must be greater than fromPosition',
    path: ['untilPosition'],
  });

export const planSchema = z.object({
  requestId: idSchema,
  planId: idSchema,
  entries: z.array(planEntrySchema).max(4096),
});

/**
 * Same body as `plan`, plus an optional `maxDelayMs`; a separate message so a receiver knows the
 * request is already running.
 */
export const planUpdateSchema = planSchema.extend({
  /**
   * From now on, how long the server may hold this request's rows, tokens and end before sending
   * them, ms, in place of what the subscription (or the request's `x-saegate-tap-max-delay-ms`
   * header) said. Absent: unchanged.
   */
  maxDelayMs: holdMsSchema.optional(),
});

export const planAckSchema = z.object({
  requestId: idSchema,
  planId: idSchema,
  accepted: z.boolean(),
  reason: z.string().max(4096).optional(),
});

export const endSchema = z.object({
  requestId: idSchema,
  promptTokens: z.int().min(0),
  completionTokens: z.int().min(0),
  finishReason: z.enum(['stop', 'length', 'abort', 'error']),
});

export const errorSchema = z.object({
  code: z.string().min(1).max(128),
  message: z.string().max(4096),
});

/** `hello` body: what a model server can tap and apply. */
export type Hello = z.infer<typeof helloSchema>;
/** `hello` without `protocolVersions`, which the client fills in. */
export type HelloInfo = Omit<Hello, 'protocolVersions'>;
export type Welcome = z.infer<typeof welcomeSchema>;
/** Which hook points to stream, in which dtype; empty `hooks` stops streaming. */
export type Subscription = z.infer<typeof subscribeSchema>;
/**
 * One additive steering term: at `hook`, for positions in [fromPosition, untilPosition), the
 * residual stream gets `+ scale × vector(vectorId)`. Positions count from 0 at the first prompt token.
 */
export type PlanEntry = z.infer<typeof planEntrySchema>;
export type Plan = z.infer<typeof planSchema>;
export type PlanUpdate = z.infer<typeof planUpdateSchema>;
export type PlanAck = z.infer<typeof planAckSchema>;
export type RequestEnd = z.infer<typeof endSchema>;
export type FinishReason = RequestEnd['finishReason'];
export type TapErrorBody = z.infer<typeof errorSchema>;

export type HelloMessage = { type: 'hello' } & Hello;
export type WelcomeMessage = { type: 'welcome' } & Welcome;
export type SubscribeMessage = { type: 'subscribe' } & Subscription;
export type PlanMessage = { type: 'plan' } & Plan;
export type PlanUpdateMessage = { type: 'plan_update' } & PlanUpdate;
export type PlanAckMessage = { type: 'plan_ack' } & PlanAck;
export type EndMessage = { type: 'end' } & RequestEnd;
export type ErrorMessage = { type: 'error' } & TapErrorBody;

/** The element block of an activations frame; the array type follows the dtype. */
export type ActivationData =
  | { dtype: 'f32'; /** rows × dModel values, row-major. */ data: Float32Array }
  | { dtype: 'f16'; /** rows × dModel IEEE binary16 bit patterns, row-major. */ data: Uint16Array };

/**
 * Rows of one hook point from one or more requests. `requestIds` is the frame's request table;
 * row `i` belongs to `requestIds[rowRequestIndexes[i]]` at token position `positions[i]`.
 * Decoded frames hold views into the received bytes where alignment allows: copy rows you keep.
 */
export type ActivationsMessage = {
  type: 'activations';
  /** Index into the hello's `hookPoints`. */
  hookIndex: number;
  dModel: number;
  /** Rows the sender dropped (queue full) since its previous activations frame. */
  droppedRowsSinceLastFrame: number;
  requestIds: string[];
  rowRequestIndexes: Uint16Array;
  positions: Int32Array;
} & ActivationData;

/** Generated (or prompt) tokens; entry `i` belongs to `requestIds[rowRequestIndexes[i]]`. */
export interface TokensMessage {
  type: 'tokens';
  requestIds: string[];
  rowRequestIndexes: Uint16Array;
  positions: Int32Array;
  tokenIds: Int32Array;
  /** The token's text piece, valid UTF-8 (see docs/tap-protocol.md on split characters). */
  texts: string[];
}

/** A steering vector, addressed by the sha256 of its f32 little-endian bytes. */
export interface VectorMessage {
  type: 'vector';
  id: string;
  /** dModel values. */
  values: Float32Array;
}

export type ControlMessage =
  | HelloMessage
  | WelcomeMessage
  | SubscribeMessage
  | PlanMessage
  | PlanUpdateMessage
  | PlanAckMessage
  | EndMessage
  | ErrorMessage;

export type TapMessage = ControlMessage | ActivationsMessage | TokensMessage | VectorMessage;

/** Body schema per control message type. */
export const controlSchemas = {
  hello: helloSchema,
  welcome: welcomeSchema,
  subscribe: subscribeSchema,
  plan: planSchema,
  plan_update: planUpdateSchema,
  plan_ack: planAckSchema,
  end: endSchema,
  error: errorSchema,
} as const;

export type ControlMessageType = keyof typeof controlSchemas;

/** Messages a model server sends to saegate. */
export const SERVER_TO_GATE: ReadonlySet<TapMessageType> = new Set<TapMessageType>([
  'hello',
  'activations',
  'tokens',
  'plan_ack',
  'end',
  'error',
]);

/** Messages saegate sends to a model server. */
export const GATE_TO_SERVER: ReadonlySet<TapMessageType> = new Set<TapMessageType>([
  'welcome',
  'subscribe',
  'vector',
  'plan',
  'plan_update',
  'error',
]);
