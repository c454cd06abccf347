import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AtomicFileWriter } from '../../../../src/lab/corpus/write.js';
import { makeTempDir, removeTempDir } from '../../../helpers/fixtures.js';

describe('AtomicFileWriter', () => {
  let dir: string;
  beforeEach(() => {
    dir = makeTempDir('saegate-atomic-');
  });
  afterEach(() => removeTempDir(dir));

  it('shows nothing at the target until commit, then exactly what was written', async () => {
    const target = path.join(dir, 'corpus.jsonl');
    const writer = await AtomicFileWriter.open(target);
    const line = `${JSON.stringify({ text: 'x'.repeat(1000) })}\n`;
    for (let i = 0; i < 200; i++) await writer.write(line);
    // 200 kB is past the 64 KiB buffer, so some of it is already in the temporary file.
    expect(fs.existsSync(target)).toBe(false);
    expect(fs.statSync(writer.temporary).size).toBeGreaterThan(0);
    await writer.commit();
    expect(fs.readFileSync(target, 'utf8')).toBe(line.repeat(200));
    expect(fs.readdirSync(dir)).toEqual(['corpus.jsonl']);
  });

  it('leaves an existing target untouched and removes its temporary file on abort', async () => {
    const target = path.join(dir, 'corpus.jsonl');
    fs.writeFileSync(target, 'old\n');
    const writer = await AtomicFileWriter.open(target);
    await writer.write('new\n');
    await writer.abort();
    await writer.abort();
    expect(fs.readFileSync(target, 'utf8')).toBe('old\n');
    expect(fs.readdirSync(dir)).toEqual(['corpus.jsonl']);
    await expect(writer.write('more')).rejects.toMatchObject({ code: 'SAEGATE_ERR_INTERNAL' });
  });

  it('fails with SAEGATE_ERR_CORPUS_FILE naming the target when its directory does not exist', async () => {
    const target = path.join(dir, 'missing', 'corpus.jsonl');
    await expect(AtomicFileWriter.open(target)).rejects.toMatchObject({
      code: 'SAEGATE_ERR_CORPUS_FILE',
      message: expect.stringMatching(new RegExp(`^corpus file '${target}': cannot create a temporary file beside it: .*ENOENT`)),
    });
  });

  it('fails with SAEGATE_ERR_CORPUS_FILE when the target is a directory, leaving no temporary file', async () => {
    const target = path.join(dir, 'taken');
    fs.mkdirSync(target);
    fs.writeFileSync(path.join(target, 'keep'), '');
    const writer = await AtomicFileWriter.open(target);
    await writer.write('x\n');
    await expect(writer.commit()).rejects.toMatchObject({ code: 'SAEGATE_ERR_CORPUS_FILE', message: expect.stringContaining(`'${target}': cannot write`) });
    expect(fs.readdirSync(dir)).toEqual(['taken']);
  });
});
