/**
 * Start-up failures of the long-running commands end with one line naming a SAEGATE_ERR_* code,
 * never a raw Node stack: a taken port, a host that does not resolve, an unknown subcommand.
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCliToExit } from '../helpers/cli.js';

const SYNTHETIC = 'synthetic:dim=32,layers=2,heads=4,kv=2,hidden=64,vocab=300,ctx=64,seed=1';

let taken: net.Server;
let takenPort = 0;

beforeAll(async () => {
  taken = net.createServer();
  await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
  takenPort = (taken.address() as net.AddressInfo).port;
});

afterAll(async () => {
  await new Promise<void>((resolve) => taken.close(() => resolve()));
});

async function failure(args: string[]): Promise<{ code: number | null; stderr: string }> {
  const { code, err } = await runCliToExit(args);
  return { code, stderr: err };
}

describe('CLI start-up errors', () => {
  it.each([
    ['serve', () => ['serve', '--upstream', 'http://127.0.0.1:9', '--port', String(takenPort)]],
    ['model serve', () => ['model', 'serve', '--model', SYNTHETIC, '--port', String(takenPort)]],
  ])('%s on a taken port exits 1 with SAEGATE_ERR_LISTEN in one line', async (_command, args) => {
    const { code, stderr } = await failure(args());
    expect(code).toBe(1);
    expect(stderr).toMatch(new RegExp(`^saegate: SAEGATE_ERR_LISTEN: cannot listen on 127\\.0\\.0\\.1:${takenPort}: the port is already in use .*\\(EADDRINUSE\\)\\n$`));
  });

  it('serve with a host that does not resolve exits 1 with SAEGATE_ERR_LISTEN naming --host, no stack', async () => {
    const { code, stderr } = await failure(['serve', '--upstream', 'http://127.0.0.1:9', '--host', 'no-such-host.invalid', '--port', '0', '--tap-token', 'secret']);
    expect(code).toBe(1);
    expect(stderr).toMatch(/^saegate: SAEGATE_ERR_LISTEN: cannot listen on no-such-host\.invalid:0: .*check --host \((ENOTFOUND|EAI_AGAIN|EAI_NONAME)\)\n$/);
  });

  it('an unknown subcommand exits 2 with SAEGATE_ERR_CLI_USAGE and the usage', async () => {
    const { code, stderr } = await failure(['frobnicate', 'now']);
    expect(code).toBe(2);
    expect(stderr).toMatch(/^saegate: SAEGATE_ERR_CLI_USAGE: unknown command 'frobnicate now'\n\nUsage: saegate <command>/);
  });
});
