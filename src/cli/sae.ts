/** `saegate sae …`: tools for SAE files. */
import fs from 'node:fs';
import { SaegateError } from '../common/errors.js';
import { integer, parseCommand, text, type CommandSpec } from '../common/options.js';
import { describeSae, loadSae } from '../sae/load.js';
import { SaePool } from '../sae/pool.js';
import { readRowsFile } from '../lab/rows-file.js';

const saeInfoOptions = {
  dir: { type: text('DIR'), positional: true, required: true, help: 'SAE directory' },
  hook: { type: text('NAME'), defaultText: "the SAE's", help: 'hook point, when the SAE files do not name one (sparsify)' },
} as const;

export const saeInfoCommand = {
  name: 'sae info',
  synopsis: 'saegate sae info DIR [--hook NAME]',
  description:
    'Loads an SAE directory (SAELens: cfg.json + sae_weights.safetensors; EleutherAI sparsify:\n' +
    'cfg.json + sae.safetensors) and prints what was loaded.',
  options: saeInfoOptions,
} as const satisfies CommandSpec<typeof saeInfoOptions>;

/** `saegate sae info DIR`. */
export function saeInfo(argv: string[]): void {
  const flags = parseCommand(saeInfoCommand, argv);
  const sae = loadSae(flags.dir, flags.hook === undefined ? {} : { hookName: flags.hook });
  process.stdout.write(`${describeSae(sae)}\n`);
}

const saeEncodeOptions = {
  sae: { type: text('DIR'), required: true, help: 'SAELens or sparsify directory' },
  input: { type: text('FILE'), required: true, help: '.npy (rows × d_in; f4, f2 or f8) or safetensors (a [rows, d_in] tensor)' },
  output: { type: text('FILE'), required: true, help: 'JSON to write' },
  topK: {
    type: integer(1),
    defaultText: 'all',
    help: 'most features listed per row, the strongest; l0, sq_error and fvu are exact either way (every active feature is decoded)',
  },
  tensor: { type: text('NAME'), help: 'tensor to read from a safetensors input holding several' },
  hook: { type: text('NAME'), defaultText: "the SAE's", help: 'hook point, when the SAE files do not name one (sparsify)' },
} as const;

export const saeEncodeCommand = {
  name: 'sae encode',
  synopsis: 'saegate sae encode --sae DIR --input FILE --output FILE.json [--top-k N] [--tensor NAME] [--hook NAME]',
  description:
    'Encodes activation rows offline (for debugging and for checking against other tools) and writes\n' +
    '{"rows": [{"indices", "values", "l0", "sq_error", "fvu"}, ...]}: every active feature of each row\n' +
    '(the strongest --top-k when given), ordered by value; "top_k" is the cap, or null.',
  options: saeEncodeOptions,
} as const satisfies CommandSpec<typeof saeEncodeOptions>;

/** Rows encoded per worker call: large enough to batch well, small enough to bound memory. */
const ENCODE_CHUNK_ROWS = 1024;

/** `saegate sae encode`. onnxruntime runs in the pool's worker thread, as everywhere else. */
export async function saeEncode(argv: string[]): Promise<void> {
  const flags = parseCommand(saeEncodeCommand, argv);
  const sae = loadSae(flags.sae, flags.hook === undefined ? {} : { hookName: flags.hook });
  const input = readRowsFile(flags.input, flags.tensor === undefined ? {} : { tensor: flags.tensor });
  if (input.width !== sae.config.dIn) {
    throw new SaegateError('SAEGATE_ERR_ROWS_FILE', [flags.input, `rows are ${input.width} wide, the SAE's d_in is ${sae.config.dIn}`]);
  }
  const pool = await SaePool.create({ sae, ...(flags.topK !== undefined && { topK: flags.topK }) });
  const rows: { indices: number[]; values: number[]; l0: number; sq_error: number; fvu: number }[] = [];
  try {
    for (let start = 0; start < input.rowCount; start += ENCODE_CHUNK_ROWS) {
      const count = Math.min(ENCODE_CHUNK_ROWS, input.rowCount - start);
      const chunk = input.rows.slice(start * input.width, (start + count) * input.width);
      const result = await pool.encode(chunk, count);
      // Slots per row in this chunk: its largest L0 (or the cap), so each row's list is complete.
      const width = result.topK;
      for (let r = 0; r < count; r++) {
        const indices: number[] = [];
        const values: number[] = [];
        for (let j = 0; j < width; j++) {
          const index = result.indices[r * width + j];
          if (index < 0) break; // padding after the last active feature
          indices.push(index);
          values.push(result.values[r * width + j]);
        }
        rows.push({ indices, values, l0: result.l0[r], sq_error: result.sqError[r], fvu: result.fvu[r] });
      }
    }
  } finally {
    await pool.close();
  }
  fs.writeFileSync(flags.output, JSON.stringify({ sae: sae.config.source, hook: sae.config.hookName, top_k: flags.topK ?? null, rows }));
  process.stdout.write(`encoded ${input.rowCount} rows of ${flags.input} with ${sae.config.architecture} ${sae.config.dIn}×${sae.config.dSae} → ${flags.output}\n`);
}
