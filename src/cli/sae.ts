/** `saegate sae …`: tools for SAE files. */
import fs from 'node:fs';
import { z } from 'zod';
import { SaegateError } from '../common/errors.js';
import { describeSae, loadSae } from '../sae/load.js';
import { SaePool } from '../sae/pool.js';
import { readRowsFile } from '../lab/rows-file.js';
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

const encodeUsage = `Usage: saegate sae encode --sae DIR --input FILE --output FILE.json [--top-k N] [--tensor NAME] [--hook NAME]

Encodes activation rows offline (for debugging and for checking against other tools) and writes
{"rows": [{"indices", "values", "l0", "sq_error", "fvu"}, ...]}, active features ordered by value.

  --sae DIR        SAELens or sparsify directory
  --input FILE     .npy (rows × d_in; f4, f2 or f8) or safetensors (a [rows, d_in] tensor)
  --output FILE    JSON to write
  --top-k N        most active features listed per row (default: k for TopK SAEs, else 64);
                   sq_error and fvu come from the listed features (a sparse decode)
  --tensor NAME    tensor to read from a safetensors input holding several
  --hook NAME      hook point, when the SAE files do not name one (sparsify)`;

/** Rows encoded per worker call: large enough to batch well, small enough to bound memory. */
const ENCODE_CHUNK_ROWS = 1024;

/** `saegate sae encode`. onnxruntime runs in the pool's worker thread, as everywhere else. */
export async function saeEncode(argv: string[]): Promise<void> {
  const flags = parseFlags(
    argv,
    { sae: { type: 'string' }, input: { type: 'string' }, output: { type: 'string' }, 'top-k': { type: 'string' }, tensor: { type: 'string' }, hook: { type: 'string' } },
    z.object({
      sae: z.string({ error: 'is required' }).min(1),
      input: z.string({ error: 'is required' }).min(1),
      output: z.string({ error: 'is required' }).min(1),
      'top-k': z.coerce.number().int().min(1).optional(),
      tensor: z.string().min(1).optional(),
      hook: z.string().min(1).optional(),
    }),
    encodeUsage,
  );
  const sae = loadSae(flags.sae, flags.hook === undefined ? {} : { hookName: flags.hook });
  const input = readRowsFile(flags.input, flags.tensor === undefined ? {} : { tensor: flags.tensor });
  if (input.width !== sae.config.dIn) {
    throw new SaegateError('SAEGATE_ERR_ROWS_FILE', [flags.input, `rows are ${input.width} wide, the SAE's d_in is ${sae.config.dIn}`]);
  }
  const topK = Math.min(sae.config.dSae, flags['top-k'] ?? sae.config.k ?? 64);
  const pool = await SaePool.create({ sae, topK });
  const rows: { indices: number[]; values: number[]; l0: number; sq_error: number; fvu: number }[] = [];
  try {
    for (let start = 0; start < input.rowCount; start += ENCODE_CHUNK_ROWS) {
      const count = Math.min(ENCODE_CHUNK_ROWS, input.rowCount - start);
      const chunk = input.rows.slice(start * input.width, (start + count) * input.width);
      const result = await pool.encode(chunk, count);
      for (let r = 0; r < count; r++) {
        const indices: number[] = [];
        const values: number[] = [];
        for (let j = 0; j < topK; j++) {
          const index = result.indices[r * topK + j];
          if (index < 0) break; // padding after the last active feature
          indices.push(index);
          values.push(result.values[r * topK + j]);
        }
        rows.push({ indices, values, l0: result.l0[r], sq_error: result.sqError[r], fvu: result.fvu[r] });
      }
    }
  } finally {
    await pool.close();
  }
  fs.writeFileSync(flags.output, JSON.stringify({ sae: sae.config.source, hook: sae.config.hookName, top_k: topK, rows }));
  process.stdout.write(`encoded ${input.rowCount} rows of ${flags.input} with ${sae.config.architecture} ${sae.config.dIn}×${sae.config.dSae} → ${flags.output}\n`);
}
