/**
 * Files saegate writes and reads back as a whole: written through a temporary file beside the
 * target and renamed into place (a reader never sees half a file, a failed write leaves the old
 * one), and JSON read back with the module's own error code naming the file.
 */
import fs from 'node:fs';
import path from 'node:path';
import { err, type SaegateErrorCode } from './errors.js';

/**
 * Calls `write(temp)` for a temporary path beside `file`, then renames it over `file`. On any error
 * the temporary file is removed and the error rethrown.
 */
export function writeAtomically(file: string, write: (temp: string) => void): void {
  const temp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  try {
    write(temp);
    fs.renameSync(temp, file);
  } catch (error) {
    fs.rmSync(temp, { force: true });
    throw error;
  }
}

/**
 * `value` as JSON with the array under `key` (its last key) written one element per line after a
 * header line, so a large report or baseline stays readable and diffable line by line.
 */
export function jsonWithArrayLines(value: object, key: string): string {
  const entries = (value as Record<string, unknown>)[key] as readonly unknown[];
  const head = JSON.stringify({ ...value, [key]: [] }).slice(0, -2); // ends in `"<key>":[`
  const body = entries.length === 0 ? ']}' : `\n${entries.map((entry) => JSON.stringify(entry)).join(',\n')}\n]}`;
  return `${head}${body}\n`;
}

/** Reads and parses a JSON file; `code` (with the file) on an unreadable file or invalid JSON. */
export function readJsonFile(file: string, code: SaegateErrorCode): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    throw err(code, file, `cannot read: ${(error as Error).message}`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw err(code, file, `not valid JSON: ${(error as Error).message}`);
  }
}

/** `writeAtomically` of text, with write failures as `code` naming the file. */
export function writeTextAtomically(file: string, text: string, code: SaegateErrorCode): void {
  try {
    writeAtomically(file, (temp) => fs.writeFileSync(temp, text));
  } catch (error) {
    throw err(code, file, `cannot write: ${(error as Error).message}`);
  }
}
