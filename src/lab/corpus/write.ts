/**
 * Writes a file atomically: everything goes to a temporary file beside the target, which is
 * fsynced and renamed over the target only on `commit()`. A reader never sees a half-written
 * corpus, and a run that fails or is interrupted leaves any earlier file at the target untouched.
 * The temporary file is in the target's directory because rename(2) is atomic only within one
 * file system.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { err, isSaegateError } from '../../common/errors.js';

/** Text buffered before a write call; fewer, larger writes than one per document. */
const FLUSH_BYTES = 64 * 1024;

export class AtomicFileWriter {
  private pending: string[] = [];
  private pendingLength = 0;
  private finished = false;

  private constructor(
    /** The file `commit()` creates or replaces. */
    readonly target: string,
    /** The temporary file written until then. */
    readonly temporary: string,
    private readonly handle: fs.FileHandle,
  ) {}

  /** Creates the temporary file. Throws SAEGATE_ERR_CORPUS_FILE naming `target` when its directory cannot be written. */
  static async open(target: string): Promise<AtomicFileWriter> {
    const resolved = path.resolve(target);
    const temporary = path.join(path.dirname(resolved), `.${path.basename(resolved)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
    try {
      return new AtomicFileWriter(resolved, temporary, await fs.open(temporary, 'wx'));
    } catch (error) {
      throw err('SAEGATE_ERR_CORPUS_FILE', target, `cannot create a temporary file beside it: ${(error as Error).message}`);
    }
  }

  /** Appends text (buffered; written in 64 KiB pieces). */
  async write(text: string): Promise<void> {
    if (this.finished) throw err('SAEGATE_ERR_INTERNAL', `write to ${this.target} after commit or abort`);
    this.pending.push(text);
    this.pendingLength += text.length;
    if (this.pendingLength >= FLUSH_BYTES) await this.flush();
  }

  private async flush(): Promise<void> {
    if (this.pending.length === 0) return;
    const chunk = this.pending.join('');
    this.pending = [];
    this.pendingLength = 0;
    try {
      await this.handle.write(chunk);
    } catch (error) {
      throw err('SAEGATE_ERR_CORPUS_FILE', this.target, `cannot write ${this.temporary}: ${(error as Error).message}`);
    }
  }

  /** Writes what is buffered, syncs, and renames the temporary file to the target. */
  async commit(): Promise<void> {
    if (this.finished) throw err('SAEGATE_ERR_INTERNAL', `commit of ${this.target} after commit or abort`);
    try {
      await this.flush();
      await this.handle.sync();
      await this.handle.close();
      this.finished = true;
      await fs.rename(this.temporary, this.target);
    } catch (error) {
      await this.abort();
      if (isSaegateError(error)) throw error;
      throw err('SAEGATE_ERR_CORPUS_FILE', this.target, `cannot write: ${(error as Error).message}`);
    }
  }

  /** Discards the temporary file; the target is left as it was. Safe to call more than once. */
  async abort(): Promise<void> {
    if (!this.finished) {
      this.finished = true;
      await this.handle.close().catch(() => {});
    }
    await fs.rm(this.temporary, { force: true });
  }
}
