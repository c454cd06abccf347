/**
 * Reading the deployment files in deploy/ the way their runtimes would, for the tests that check
 * them against saegate's own option tables: which saegate command a container runs and with what
 * options (flags, environment, config file resolved by src/common/options.ts), and a directory
 * laid out like a container's file system, ConfigMap volumes in the kubelet's layout
 * (`..data` → timestamped directory, top-level symlinks), so paths in the manifests can be opened.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { parseCommandLine, resolveOptions, type CommandSpec, type OptionTable, type OptionValues } from '../../src/common/options.js';
import { modelServeCommand } from '../../src/cli/model-serve.js';
import { serveCommand } from '../../src/cli/serve.js';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const deployDir = path.join(repoRoot, 'deploy');

/** Every YAML document of a file, as plain values, `<<` merge keys resolved (compose uses them). Throws on a YAML error. */
export function readYamlDocuments(file: string): unknown[] {
  const docs = parseAllDocuments(fs.readFileSync(file, 'utf8'), { merge: true });
  return docs.map((doc) => {
    if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors.map((e) => e.message).join('; ')}`);
    return doc.toJS() as unknown;
  });
}

/** The one YAML document of a file. */
export function readYaml<T>(file: string): T {
  const docs = readYamlDocuments(file);
  if (docs.length !== 1) throw new Error(`${file}: expected one YAML document, found ${docs.length}`);
  return docs[0] as T;
}

/** The saegate commands a container may run, by the words after `saegate`. */
export const commandSpecs = {
  serve: serveCommand,
  'model serve': modelServeCommand,
} as const;

export type DeployedCommand = keyof typeof commandSpecs;

/** Splits a container's argv (after the image's `saegate` entry point) into the command and its options. */
export function splitCommand(argv: readonly string[]): { name: DeployedCommand; args: string[] } {
  for (const name of Object.keys(commandSpecs) as DeployedCommand[]) {
    const words = name.split(' ');
    if (words.every((word, i) => argv[i] === word)) return { name, args: argv.slice(words.length) };
  }
  throw new Error(`not a saegate command: ${argv.join(' ')}`);
}

/** The variables a command reads: its options' `env` names and its config-file variable. */
export function knownVariables(spec: CommandSpec<OptionTable>): Set<string> {
  const names = Object.values(spec.options).flatMap((option) => (option.env === undefined ? [] : [option.env]));
  if (spec.configFile) names.push(spec.configFile.env);
  return new Set(names);
}

/**
 * Resolves a command's options exactly as the CLI does (flags > environment > config file >
 * defaults, every source validated), with `mapPath` applied to the config file's path first.
 */
export function resolveDeployed<N extends DeployedCommand>(
  name: N,
  args: readonly string[],
  env: Record<string, string>,
  mapPath: (p: string) => string = (p) => p,
): OptionValues<(typeof commandSpecs)[N]['options']> {
  const spec = commandSpecs[name] as CommandSpec<OptionTable>;
  const { flags, positionals } = parseCommandLine(spec, args);
  const mappedEnv = { ...env };
  if (spec.configFile && mappedEnv[spec.configFile.env] !== undefined) mappedEnv[spec.configFile.env] = mapPath(mappedEnv[spec.configFile.env]);
  return resolveOptions(spec, { flags, positionals, env: mappedEnv }) as OptionValues<(typeof commandSpecs)[N]['options']>;
}

/** The long flags (`--name`) in an argv. */
export function flagsIn(args: readonly string[]): string[] {
  return args.filter((arg) => arg.startsWith('--')).map((arg) => arg.split('=')[0]);
}

/**
 * A temporary directory standing for a container's root: `mount(mountPath, files)` writes a
 * ConfigMap volume as the kubelet does (files in `..TIMESTAMP/`, `..data` → that directory, each
 * key a symlink `key → ..data/key`); `map(p)` turns an absolute container path into one here.
 */
export class ContainerRoot {
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), 'saegate-pod-'));

  mountConfigMap(mountPath: string, files: ReadonlyMap<string, string>): string {
    const target = this.map(mountPath);
    fs.mkdirSync(target, { recursive: true });
    const stamp = '..2026_12_03_00_00_00.000000001';
    fs.mkdirSync(path.join(target, stamp));
    for (const [key, content] of files) fs.writeFileSync(path.join(target, stamp, key), content);
    fs.symlinkSync(stamp, path.join(target, '..data'));
    for (const key of files.keys()) fs.symlinkSync(path.join('..data', key), path.join(target, key));
    return target;
  }

  map(containerPath: string): string {
    if (!path.isAbsolute(containerPath)) throw new Error(`not an absolute container path: ${containerPath}`);
    return path.join(this.dir, containerPath);
  }

  remove(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/** True when `p` is `mountPath` or below it. */
export function isUnder(p: string, mountPath: string): boolean {
  const rel = path.posix.relative(mountPath, p);
  return rel === '' || (!rel.startsWith('..') && !path.posix.isAbsolute(rel));
}
