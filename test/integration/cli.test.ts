/** The `saegate` command as a user runs it: a real process, real signals. */
import { describe, expect, it } from 'vitest';
import { runCli, waitForApiUrl } from '../helpers/cli.js';



describe('saegate CLI', () => {
  it('serves a synthetic model on a free port, answers /v1/models, and exits 0 on SIGTERM', async () => {
    const proc = runCli(['model', 'serve', '--model', 'synthetic:dim=32,layers=2,heads=4,kv=2,hidden=64,vocab=300,ctx=64,seed=1', '--name', 'tiny', '--port', '0']);
    const url = await waitForApiUrl(proc);
    const models = (await (await fetch(`${url}/v1/models`)).json()) as { data: { id: string }[] };
    expect(models.data.map((m) => m.id)).toEqual(['tiny']);
    proc.child.kill('SIGTERM');
    expect(await proc.exited).toBe(0);
  });

  it('rejects a bad flag value with exit code 2, naming the flag', async () => {
    const proc = runCli(['model', 'serve', '--model', 'x.bin', '--device', 'tpu']);
    expect(await proc.exited).toBe(2);
    expect(proc.err()).toContain('--device');
    expect(proc.err()).toContain('SAEGATE_ERR_CLI_USAGE');
  });

  it('fails at load with a typed error naming a missing model file', async () => {
    const proc = runCli(['model', 'serve', '--model', '/nonexistent/model.bin', '--port', '0']);
    expect(await proc.exited).toBe(1);
    expect(proc.err()).toMatch(/SAEGATE_ERR_MODEL_FILE.*\/nonexistent\/model\.bin/);
  });
});
