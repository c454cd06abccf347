import { describe, expect, it } from 'vitest';
import { HOOK_POINT_PATTERN, helloSchema } from '../../../src/tap/messages.js';

const hello = (hookPoints: string[]): unknown => ({ protocolVersions: [1], modelId: 'm', dModel: 8, nLayers: 2, hookPoints, dtypes: ['f32'], canSteer: true });

describe('hello hook points', () => {
  it.each(['hook_embed', 'hook_pos_embed', 'blocks.0.hook_resid_pre', 'blocks.11.hook_resid_post', 'blocks.3.attn.hook_z', 'blocks.2.ln1.hook_normalized', 'ln_final.hook_normalized'])(
    'accepts the TransformerLens name %s',
    (name) => {
      expect(HOOK_POINT_PATTERN.test(name)).toBe(true);
      expect(helloSchema.safeParse(hello([name])).success).toBe(true);
    },
  );

  it.each(['h', 'resid', 'Blocks.3.hook_resid_post', 'blocks.03.hook_resid_post', 'blocks.x.hook_resid_post', 'blocks.3.hook_resid_post ', 'blocks.3.', 'blocks.3.resid_post', '.hook_embed', 'blocks..hook_embed', 'hook_', '__proto__'])(
    'refuses %j with a message naming the expected form',
    (name) => {
      const parsed = helloSchema.safeParse(hello(['blocks.0.hook_resid_pre', name]));
      expect(parsed.success).toBe(false);
      expect(parsed.error?.issues[0]).toMatchObject({ path: ['hookPoints', 1], message: expect.stringContaining('TransformerLens hook name') });
    },
  );
});
