/** The `saegate` command as a user runs it: a real process, real signals. */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const main = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
const tsx = fileURLToPath(new URL('../../node_modules/.bin/tsx', import.meta.url));

function run(args: string[]) {
  const child = spawn(tsx, [main, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, exited, out: () => stdout, err: () => stderr };
}

describe('saegate CLI', () => {
  it('serves a synthetic model on a free port, answers /v1/models, and exits 0 on SIGTERM', async () => {
    const proc = run(['model', 'serve', '--model', 'synthetic:dim=32,layers=2,heads=4,kv=2,hidden=64,vocab=300,ctx=64,seed=1', '--name', 'tiny', '--port', '0']);
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setInterval(() => {
        const m = /OpenAI API\s+(http:\/\/\S+)\/v1/.exec(proc.out());
        if (m) {
          clearInterval(timer);
          resolve(m[1]);
        }
      }, 50);
      void proc.exited.then((code) => {
        clearInterval(timer);
        reject(new Error(`exited ${code}: ${proc.err()}`));
      });
    });
    const models = (await (await fetch(`${url}/v1/models`)).json()) as { data: { id: string }[] };
    expect(models.data.map((m) => m.id)).toEqual(['tiny']);
    proc.child.kill('SIGTERM');
    expect(await proc.exited).toBe(0);
  });

  it('rejects a bad flag value with exit code 2, naming the flag', async () => {
    const proc = run(['model', 'serve', '--model', 'x.bin', '--device', 'tpu']);
    expect(await proc.exited).toBe(2);
    expect(proc.err()).toContain('--device');
    expect(proc.err()).toContain('SAEGATE_ERR_CLI_USAGE');
  });

  it('fails at load with a typed error naming a missing model file', async () => {
    const proc = run(['model', 'serve', '--model', '/nonexistent/model.bin', '--port', '0']);
    expect(await proc.exited).toBe(1);
    expect(proc.err()).toMatch(/SAEGATE_ERR_MODEL_FILE.*\/nonexistent\/model\.bin/);
  });
});
