export * from './messages.js';
export { decodeMessage, encodeMessage, isVectorIdValid, vectorId } from './codec.js';
export { ActivationFrameBuilder, encodeActivationFrame, encodeTokensFrame, type ActivationRows, type TokenEntries } from './builders.js';
export { f16BitsToF32, f16ToF32, f32ToF16, f32ToF16Bits, F16_MAX } from '../common/f16.js';
export { silentLogger, type TapLogger } from './logger.js';
export {
  TapClient,
  type ActivationBatch,
  type ResolvedPlan,
  type ResolvedPlanEntry,
  type TapClientEvents,
  type TapClientOptions,
  type TapClientStats,
  type TapDropReason,
  type TapReconnectOptions,
} from './client.js';
export {
  TapConnection,
  TapServer,
  type ActivationsFrame,
  type TapConnectionEvents,
  type TapConnectionStats,
  type TapServerEvents,
  type TapServerOptions,
  type TapServerStats,
} from './server.js';
export { TapCloseCode } from './socket.js';
