/** The embedded default model of `saegate demo`, `model sample`, `sae train` and `sae features`. */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * The embedded default model (also `saegate model sample`'s): $SAEGATE_DEMO_MODEL, else
 * ../shared/models/stories260K/stories260K.bin beside the repository, else a seeded synthetic model.
 */
export function defaultModel(): string {
  if (process.env.SAEGATE_DEMO_MODEL) return process.env.SAEGATE_DEMO_MODEL;
  const shared = path.join(repoRoot, '..', 'shared', 'models', 'stories260K', 'stories260K.bin');
  if (fs.existsSync(shared)) return shared;
  return 'synthetic:dim=64,layers=4,heads=4,kv=2,hidden=172,vocab=512,ctx=512,seed=1';
}
