/**
 * `saegate policy check PATH`: validates policy files without starting anything, and
 * `saegate vectors import|export`: llama.cpp control vectors to and from saegate's files.
 */
import path from 'node:path';
import { SaegateError } from '../common/errors.js';
import { integer, parseCommand, text, type CommandSpec } from '../common/options.js';
import { loadModel } from '../model/load.js';
import { allHookPoints } from '../model/types.js';
import { compilePolicySet, type PolicyContext } from '../policies/compile.js';
import { formatProblem, readPolicyFiles } from '../policies/load.js';
import { loadSae } from '../sae/load.js';
import { readVectorFile, writeVectorFile } from '../steering/formats.js';
import { VectorStore } from '../steering/store.js';

const policyCheckOptions = {
  path: { type: text('PATH'), positional: true, required: true, help: 'policy directory or file' },
  model: { type: text('FILE'), help: "model whose shape (d_model, hook points) the policies are checked against" },
  dModel: { type: integer(1), help: "the model's width, when no --model is given (hooks are then not checked)" },
  sae: { type: text('DIR'), multiple: true, help: 'SAE directory the policies may name (by its directory name); repeatable' },
} as const;

export const policyCheckCommand = {
  name: 'policy check',
  synopsis: 'saegate policy check PATH [--model FILE | --d-model N] [--sae DIR ...]',
  description:
    'Validates policy files (docs/policies.md) without starting anything and prints every problem as\n' +
    'file:line:column: path: message. Exits 1 when there is any, 0 otherwise.',
  options: policyCheckOptions,
} as const satisfies CommandSpec<typeof policyCheckOptions>;

/** Runs the check; returns the process exit code and the lines to print. */
export async function policyCheck(argv: string[]): Promise<{ code: number; lines: string[] }> {
  const flags = parseCommand(policyCheckCommand, argv);
  const target = path.resolve(flags.path);
  const baseDir = flags.path.endsWith('.yaml') || flags.path.endsWith('.yml') || flags.path.endsWith('.json') ? path.dirname(target) : target;
  const context: PolicyContext = { vectors: new VectorStore({ baseDir }) };
  if (flags.model !== undefined) {
    const loaded = await loadModel({ model: flags.model });
    const cfg = loaded.weights.config;
    context.model = { dModel: cfg.dim, hookPoints: new Set(allHookPoints(cfg)) };
  } else if (flags.dModel !== undefined) {
    // Width only: every hook name is accepted.
    context.model = { dModel: flags.dModel, hookPoints: { has: () => true } as unknown as ReadonlySet<string> };
  }
  if (flags.sae.length > 0) {
    const saes = new Map<string, { dSae: number; hook: string }>();
    for (const dir of flags.sae) {
      const sae = loadSae(dir);
      saes.set(path.basename(path.resolve(dir)), { dSae: sae.config.dSae, hook: sae.config.hookName });
    }
    context.saes = saes;
  }
  const read = readPolicyFiles(target);
  const problems = read.problems.length > 0 ? read.problems : compilePolicySet(read.sources, context, 1, read.files).problems;
  if (problems.length > 0) return { code: 1, lines: problems.map(formatProblem) };
  return { code: 0, lines: [`${read.sources.length} ${read.sources.length === 1 ? 'policy' : 'policies'} in ${read.files.length} file(s): ok`] };
}

const vectorsConvertOptions = {
  input: { type: text('FILE'), positional: true, required: true, help: 'vector file: .gguf (llama.cpp control vector), .safetensors or .json' },
  out: { type: text('FILE'), required: true, help: 'file to write; the format follows its extension (.safetensors, .json, .gguf)' },
} as const;

export const vectorsImportCommand = {
  name: 'vectors import',
  synopsis: 'saegate vectors import FILE.gguf --out FILE.safetensors',
  description: "Reads a llama.cpp control vector (direction.N → blocks.N.hook_resid_post) and writes saegate's vector file.",
  options: vectorsConvertOptions,
} as const satisfies CommandSpec<typeof vectorsConvertOptions>;

export const vectorsExportCommand = {
  name: 'vectors export',
  synopsis: 'saegate vectors export FILE.safetensors --out FILE.gguf',
  description: "Writes a saegate vector as a llama.cpp control vector (only blocks.N.hook_resid_post, N ≥ 1, have a counterpart).",
  options: vectorsConvertOptions,
} as const satisfies CommandSpec<typeof vectorsConvertOptions>;

/** `vectors import` / `vectors export`: returns the line to print. */
export function vectorsConvert(direction: 'import' | 'export', argv: string[]): string {
  const flags = parseCommand(direction === 'import' ? vectorsImportCommand : vectorsExportCommand, argv);
  if (direction === 'export' && !flags.out.toLowerCase().endsWith('.gguf')) {
    throw new SaegateError('SAEGATE_ERR_CLI_USAGE', [`--out: export writes a llama.cpp control vector, so it must end in .gguf, got '${flags.out}'`]);
  }
  const vector = readVectorFile(flags.input);
  writeVectorFile(flags.out, vector);
  return `${flags.out}: ${vector.hooks.size} direction(s) of ${vector.dModel} values (${[...vector.hooks.keys()].join(', ')}), id ${vector.id.slice(0, 16)}…`;
}
