/** `saegate sae …`: tools for SAE files. */
import { z } from 'zod';
import { describeSae, loadSae } from '../sae/load.js';
import { parseFlags } from './args.js';

const infoUsage = `Usage: saegate sae info DIR [--hook NAME]

Loads an SAE directory (SAELens: cfg.json + sae_weights.safetensors; EleutherAI sparsify:
cfg.json + sae.safetensors) and prints what was loaded. --hook names the hook point when the
files do not (sparsify).`;

/** `saegate sae info DIR`. */
export function saeInfo(argv: string[]): void {
  const [dir, ...rest] = argv;
  if (dir === undefined || dir.startsWith('-')) {
    process.stdout.write(`${infoUsage}\n`);
    process.exitCode = dir === '--help' || dir === '-h' ? 0 : 2;
    return;
  }
  const flags = parseFlags(rest, { hook: { type: 'string' } }, z.object({ hook: z.string().min(1).optional() }), infoUsage);
  const sae = loadSae(dir, flags.hook === undefined ? {} : { hookName: flags.hook });
  process.stdout.write(`${describeSae(sae)}\n`);
}
