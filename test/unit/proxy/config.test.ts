import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SaegateError } from '../../../src/common/errors.js';
import { envName, flagName } from '../../../src/common/options.js';
import { isLoopbackHost, proxyConfigKeys, resolveProxyConfig } from '../../../src/proxy/config.js';
import { checkTapExposure } from '../../../src/proxy/server.js';
import { makeTempDir, removeTempDir } from '../../helpers/fixtures.js';

const dir = makeTempDir('saegate-config-');
afterAll(() => removeTempDir(dir));

function writeConfig(name: string, value: unknown): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, typeof value === 'string' ? value : JSON.stringify(value));
  return file;
}

function configError(fn: () => unknown): SaegateError {
  try {
    fn();
  } catch (error) {
    if (error instanceof SaegateError) return error;
    throw error;
  }
  throw new Error('expected a SaegateError');
}

describe('proxy configuration', () => {
  it('fills defaults around the one required option', () => {
    const config = resolveProxyConfig({ flags: { upstream: 'http://127.0.0.1:8000/' } });
    expect(config).toMatchObject({ upstream: 'http://127.0.0.1:8000', host: '127.0.0.1', port: 9000, tapToken: null, adminToken: null, retries: 0, maxStreams: 1024 });
    expect(config.idleTimeoutMs).toBe(60_000);
  });

  it('takes flags over environment over config file over defaults, key by key', () => {
    const file = writeConfig('layers.json', { upstream: 'http://file:1', port: 1111, idleTimeoutMs: 1, totalTimeoutMs: 2, maxStreams: 3 });
    const config = resolveProxyConfig({
      flags: { config: file, port: '3333' },
      env: { SAEGATE_PORT: '2222', SAEGATE_IDLE_TIMEOUT_MS: '20', SAEGATE_REQUIRE_TAP: 'yes', SAEGATE_ADMIN_TOKEN: '' },
    });
    expect(config).toMatchObject({ upstream: 'http://file:1', port: 3333, idleTimeoutMs: 20, totalTimeoutMs: 2, maxStreams: 3, requireTap: true, adminToken: null });
  });

  it('refuses a bad config-file value even when a flag or variable overrides it, naming the file and key', () => {
    const file = writeConfig('overridden.json', { upstream: 'http://x', port: 'eighty', maxStreams: 0 });
    expect(configError(() => resolveProxyConfig({ flags: { config: file, port: '3333' } })).message).toBe(
      `invalid configuration '${file}: port': expected an integer from 0 to 65535, got "eighty"`,
    );
    const portFixed = writeConfig('overridden-env.json', { upstream: 'http://x', maxStreams: 0 });
    expect(configError(() => resolveProxyConfig({ flags: { config: portFixed }, env: { SAEGATE_MAX_STREAMS: '8' } })).message).toBe(
      `invalid configuration '${portFixed}: maxStreams': expected an integer from 1 to 1000000, got 0`,
    );
    // A bad variable under a good flag is refused the same way.
    expect(configError(() => resolveProxyConfig({ flags: { upstream: 'http://x', retries: '1' }, env: { SAEGATE_RETRIES: 'many' } })).message).toBe(
      "invalid configuration 'SAEGATE_RETRIES': expected an integer from 0 to 10, got \"many\"",
    );
  });

  it('refuses an unknown flag name passed in code', () => {
    expect(configError(() => resolveProxyConfig({ flags: { upstream: 'http://x', 'idle-timeout': '5' } })).message).toBe("invalid configuration '--idle-timeout': unknown flag");
  });

  it('finds the config file through SAEGATE_CONFIG when --config is absent', () => {
    const file = writeConfig('env.json', { upstream: 'https://gpu-box:8443/prefix', retries: 2 });
    expect(resolveProxyConfig({ env: { SAEGATE_CONFIG: file } })).toMatchObject({ upstream: 'https://gpu-box:8443/prefix', retries: 2 });
  });

  it('names the flag, the variable, or the file and key of a bad value, with what was expected', () => {
    expect(configError(() => resolveProxyConfig({ flags: { upstream: 'http://x', port: 'eighty' } })).message).toBe(
      "invalid configuration '--port': expected an integer from 0 to 65535, got \"eighty\"",
    );
    expect(configError(() => resolveProxyConfig({ flags: { upstream: 'http://x' }, env: { SAEGATE_IDLE_TIMEOUT_MS: '-5' } })).message).toContain(
      "'SAEGATE_IDLE_TIMEOUT_MS': expected an integer from 0 to 86400000, got \"-5\"",
    );
    const file = writeConfig('bad.json', { upstream: 'http://x', requireTap: 'maybe' });
    const error = configError(() => resolveProxyConfig({ flags: { config: file } }));
    expect(error.code).toBe('SAEGATE_ERR_CONFIG');
    expect(error.message).toBe(`invalid configuration '${file}: requireTap': expected true or false, got "maybe"`);
  });

  it('refuses an unknown config-file key, a file that is not a JSON object, and a missing file', () => {
    expect(configError(() => resolveProxyConfig({ flags: { config: writeConfig('typo.json', { upstream: 'http://x', idleTimeout: 5 }) } })).message).toMatch(
      /typo\.json: idleTimeout': unknown key; known keys: upstream, host, port/,
    );
    expect(configError(() => resolveProxyConfig({ flags: { config: writeConfig('array.json', '[1]') } })).message).toContain('expected a JSON object, got [1]');
    expect(configError(() => resolveProxyConfig({ flags: { config: writeConfig('broken.json', '{"upstream": ') } })).message).toContain('expected a JSON object:');
    expect(configError(() => resolveProxyConfig({ flags: { config: path.join(dir, 'missing.json') } })).message).toContain('cannot read the config file');
  });

  it('says where to give the upstream when it is missing', () => {
    expect(configError(() => resolveProxyConfig({})).message).toBe(
      "invalid configuration 'upstream': required; give --upstream, SAEGATE_UPSTREAM or \"upstream\" in the config file",
    );
  });

  it.each(['http://host:8000/v1', 'http://host:8000/v1/', 'ftp://host', 'http://host?x=1', 'not a url'])('refuses %j as the upstream base URL', (upstream) => {
    expect(configError(() => resolveProxyConfig({ flags: { upstream } })).message).toContain("expected an http:// or https:// base URL without '/v1'");
  });

  it('derives every flag and variable name from the option name', () => {
    expect(flagName('firstTokenTimeoutMs')).toBe('first-token-timeout-ms');
    expect(envName('firstTokenTimeoutMs')).toBe('SAEGATE_FIRST_TOKEN_TIMEOUT_MS');
    expect(new Set(proxyConfigKeys.map(envName)).size).toBe(proxyConfigKeys.length);
  });

  it('is documented in docs/proxy.md: one table row per option with its flag, variable and key', () => {
    const doc = fs.readFileSync(new URL('../../../docs/proxy.md', import.meta.url), 'utf8');
    for (const key of proxyConfigKeys) {
      expect(doc, `docs/proxy.md lacks ${key}`).toContain(`| \`--${flagName(key)}\` | \`${envName(key)}\` | \`${key}\` |`);
    }
  });

  it('knows which listen addresses are loopback-only', () => {
    expect(['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost'].map(isLoopbackHost)).toEqual([true, true, true, true, true]);
    expect(['0.0.0.0', '::', '10.0.0.5', 'saegate.internal'].map(isLoopbackHost)).toEqual([false, false, false, false]);
  });

  it('refuses to expose the tap off loopback without a token, naming tapToken', () => {
    const open = resolveProxyConfig({ flags: { upstream: 'http://x', host: '0.0.0.0' } });
    const error = configError(() => checkTapExposure(open));
    expect(error.message).toMatch(/^invalid configuration 'tapToken': required when listening on '0\.0\.0\.0', which is not loopback/);
    expect(() => checkTapExposure({ ...open, tapToken: 'secret' })).not.toThrow();
    expect(() => checkTapExposure({ ...open, host: '127.0.0.1' })).not.toThrow();
  });
});
