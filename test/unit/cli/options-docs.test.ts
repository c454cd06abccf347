/**
 * The option tables in README.md and docs/proxy.md against the commands' option tables, both ways:
 * every flag of a command is in its docs table with the same default, and the docs table lists no
 * flag the command lacks. A new option without a docs row (or a stale row) fails here.
 */
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { defaultLabel, envName, flagName, type OptionSpec, type OptionTable } from '../../../src/common/options.js';
import { alertsExportCommand } from '../../../src/cli/alerts.js';
import { baselineRecordCommand } from '../../../src/cli/baseline-record.js';
import { demoCommand } from '../../../src/cli/demo.js';
import { evalSteerCommand } from '../../../src/cli/eval-steer.js';
import { modelSampleCommand } from '../../../src/cli/model-sample.js';
import { modelServeCommand } from '../../../src/cli/model-serve.js';
import { saeEncodeCommand, saeInfoCommand } from '../../../src/cli/sae.js';
import { saeFeaturesCommand } from '../../../src/cli/sae-features.js';
import { saeTrainCommand } from '../../../src/cli/sae-train.js';
import { serveCommand } from '../../../src/cli/serve.js';
import { vectorsBuildCommand } from '../../../src/cli/vectors-build.js';
import { proxyCommand } from '../../../src/proxy/config.js';

interface Command {
  name: string;
  options: OptionTable;
  configFile?: { env: string };
}

const commands: Command[] = [serveCommand, alertsExportCommand, demoCommand, modelServeCommand, modelSampleCommand, saeTrainCommand, saeFeaturesCommand, saeInfoCommand, saeEncodeCommand, baselineRecordCommand, vectorsBuildCommand, evalSteerCommand];

/** `--flag` -> default as the code states it, for every flag of a command (`--config` included). */
function expectedFlags(command: Command): Map<string, string> {
  const flags = new Map<string, string>();
  for (const [key, spec] of Object.entries(command.options) as [string, OptionSpec][]) {
    if (!spec.positional) flags.set(`--${flagName(key)}`, defaultLabel(spec));
  }
  if (command.configFile) flags.set('--config', 'none');
  return flags;
}

interface Row {
  cells: string[];
}

/**
 * The first table whose header starts `| flag |` under each heading naming `` `saegate <command>` ``
 * (the nearest heading above the table), as rows of cells.
 */
function tablesByCommand(markdown: string): Map<string, Row[]> {
  const tables = new Map<string, Row[]>();
  let command: string | null = null;
  let rows: Row[] | null = null;
  for (const line of markdown.split('\n')) {
    const heading = /^#+ .*`saegate ([a-z ]+)`[^`]*$/.exec(line);
    if (heading) {
      command = heading[1];
      rows = null;
      continue;
    }
    if (/^#/.test(line)) command = null;
    if (command !== null && rows === null && /^\| flag \|/.test(line) && !tables.has(command)) {
      rows = [];
      tables.set(command, rows);
      continue;
    }
    if (rows !== null) {
      if (!line.startsWith('|')) {
        rows = null;
        continue;
      }
      if (/^\|[-| ]+\|$/.test(line)) continue;
      rows.push({ cells: line.slice(1, -1).split(' | ').map((cell) => cell.trim()) });
    }
  }
  return tables;
}

/** A docs default cell as the code states it: backticks dropped, a trailing "(32 MiB)" gloss allowed. */
function sameDefault(cell: string, label: string): boolean {
  const plain = cell.replaceAll('`', '');
  return plain === label || plain.startsWith(`${label} (`);
}

function compare(where: string, documented: Map<string, string>, expected: Map<string, string>): void {
  for (const [flag, label] of expected) {
    expect(documented.has(flag), `${where} lacks ${flag}`).toBe(true);
    expect(sameDefault(documented.get(flag)!, label), `${where}: ${flag} default is '${documented.get(flag)}', the code says '${label}'`).toBe(true);
  }
  for (const flag of documented.keys()) expect(expected.has(flag), `${where} lists ${flag}, which the command does not have`).toBe(true);
}

const readme = fs.readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');
const readmeTables = tablesByCommand(readme);

describe('README option tables', () => {
  it.each(commands.map((c) => [c.name, c] as const))('saegate %s: every flag with its default, and no other', (name, command) => {
    const rows = readmeTables.get(name);
    expect(rows, `README.md has no '| flag | default | meaning |' table under a \`saegate ${name}\` heading`).toBeDefined();
    const documented = new Map<string, string>();
    for (const { cells } of rows!) {
      const flag = /^`(--[a-z-]+)`$/.exec(cells[0]);
      expect(flag, `README.md, saegate ${name}: one backticked flag per row, got '${cells[0]}'`).not.toBeNull();
      expect(documented.has(flag![1]), `README.md, saegate ${name}: ${flag![1]} listed twice`).toBe(false);
      documented.set(flag![1], cells[1]);
    }
    compare(`README.md, saegate ${name}`, documented, expectedFlags(command));
  });

  it('notices a missing flag, an extra flag and a wrong default', () => {
    const expected = new Map([['--port', '9000'], ['--log', 'off']]);
    expect(() => compare('t', new Map([['--port', '`9000`']]), expected)).toThrow(/lacks --log/);
    expect(() => compare('t', new Map([['--port', '`9000`'], ['--log', 'off'], ['--verbose', 'off']]), expected)).toThrow(/lists --verbose/);
    expect(() => compare('t', new Map([['--port', '`8000`'], ['--log', 'off']]), expected)).toThrow(/--port default/);
    expect(() => compare('t', new Map([['--port', '`9000` (any)'], ['--log', 'off']]), expected)).not.toThrow();
  });
});

describe('docs/proxy.md configuration table', () => {
  it('lists every proxy option with its flag, variable, config key and default, and nothing else', () => {
    const doc = fs.readFileSync(new URL('../../../docs/proxy.md', import.meta.url), 'utf8');
    const rows = [...doc.matchAll(/^\| `(--[a-z-]+)` \| `([A-Z_]+)` \|\s*(?:`([a-zA-Z]+)`)?\s*\| ([^|]*) \|/gm)];
    const documented = new Map(rows.map((m) => [m[1], m[4].trim()]));
    compare('docs/proxy.md', documented, expectedFlags(proxyCommand));
    for (const m of rows) {
      if (m[1] === '--config') {
        expect(m[2]).toBe(proxyCommand.configFile.env);
        continue;
      }
      const key = Object.keys(proxyCommand.options).find((k) => `--${flagName(k)}` === m[1])!;
      expect([m[2], m[3]], m[1]).toEqual([envName(key), key]);
    }
  });
});
