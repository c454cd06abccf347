/**
 * Names of saegate's `node:diagnostics_channel` channels, all in one place so a tracer finds every
 * one here. Publishers hold the channel object from `diagnostics.channel(name)` and publish only
 * behind `channel.hasSubscribers`, so a channel nobody subscribes to costs one property check per
 * event and builds no payload (pino and undici do the same). Subscribe with
 * `diagnostics.subscribe(name, listener)`; payload types live next to their publishers, and
 * docs/sae-engine.md ("Tracing") describes each.
 */

/** An activations frame was received and decoded by a tap connection (`TapFrameEvent`, src/tap/server.ts). Per frame. */
export const TAP_FRAME_CHANNEL = 'saegate:tap:frame';

/** A micro-batcher sent a batch to its SAE worker pool (`SaeBatchSentEvent`, src/sae/batcher.ts). Per batch. */
export const SAE_BATCH_SENT_CHANNEL = 'saegate:sae:batch-sent';

/** A batch's turn came, in push order: results delivered, or rows dropped (`SaeBatchSettledEvent`, src/sae/batcher.ts). Per batch. */
export const SAE_BATCH_SETTLED_CHANNEL = 'saegate:sae:batch-settled';

/** Every channel saegate publishes on. */
export const DIAGNOSTICS_CHANNELS = [TAP_FRAME_CHANNEL, SAE_BATCH_SENT_CHANNEL, SAE_BATCH_SETTLED_CHANNEL] as const;
