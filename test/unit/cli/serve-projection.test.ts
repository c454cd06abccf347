/**
 * `serve --projection` and `baseline record --projection` in process: flag values are parsed and
 * their vector files read before anything starts, every bad value is a typed error naming the flag
 * or file; a projection named like an SAE, or used with a body-steering upstream, is refused; the
 * projecting sink feeds the monitor and counts a frame of the wrong width as dropped, forwarding
 * everything to the inner sink.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Registry } from 'prom-client';
import { afterAll, describe, expect, it } from 'vitest';
import { baselineRecord } from '../../../src/cli/baseline-record.js';
import { createMonitor, loadProjections } from '../../../src/cli/serve-monitor.js';
import { startProxyWithSaes } from '../../../src/cli/serve.js';
import { projectingSink } from '../../../src/monitor/projection-sink.js';
import type { EncodedRows } from '../../../src/monitor/rows.js';
import { writeVectorFile } from '../../../src/steering/formats.js';
import { makeSteeringVector } from '../../../src/steering/vector.js';
import { CountingSink, type TapSource } from '../../../src/tap/sink.js';
import type { ActivationsFrame } from '../../../src/tap/server.js';
import { expectSaegateError, expectSaegateRejection } from '../../helpers/errors.js';
import { makeTempDir } from '../../helpers/fixtures.js';
import { seededStandardSae } from '../../helpers/sae.js';

const dir = makeTempDir('serve-projection-');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const HOOK = 'blocks.0.hook_resid_post';
const one = path.join(dir, 'one.safetensors');
const two = path.join(dir, 'two.safetensors');
writeVectorFile(one, makeSteeringVector(one, { [HOOK]: Float32Array.from([3, 4, 0, 0]) }, { method: 'manual' }));
writeVectorFile(two, makeSteeringVector(two, { [HOOK]: Float32Array.from([1, 0, 0, 0]), 'blocks.1.hook_resid_post': Float32Array.from([0, 1, 0, 0]) }, { method: 'manual' }));
const source: TapSource = { sessionId: 's', modelId: 'm', serverId: undefined };

function frame(dModel: number, rows: number[][]): ActivationsFrame {
  return {
    type: 'activations',
    hookIndex: 0,
    hook: HOOK,
    dModel,
    rowCount: rows.length,
    droppedRowsSinceLastFrame: 0,
    requestIds: ['r1', 'r2'],
    rowRequestIndexes: Uint16Array.from(rows.map((_, i) => i % 2)),
    positions: Int32Array.from(rows.map((_, i) => i)),
    dtype: 'f32',
    data: Float32Array.from(rows.flat()),
  };
}

describe('serve --projection', () => {
  it('reads each NAME=FILE[@HOOK] and takes the unit direction at the hook', () => {
    const [a, b] = loadProjections({ projection: [`a=${one}`, `b=${two}@blocks.1.hook_resid_post`] });
    expect(a).toMatchObject({ name: 'a', hook: HOOK, dModel: 4 });
    expect(Array.from(a.direction)).toEqual([0.6000000238418579, 0.800000011920929, 0, 0]);
    expect(a.hash).toMatch(/^vector:[0-9a-f]{64}$/);
    expect(b).toMatchObject({ name: 'b', hook: 'blocks.1.hook_resid_post' });
  });

  it('refuses a malformed value, a file with several directions and no @HOOK, a missing hook, a name twice', () => {
    expectSaegateError(() => loadProjections({ projection: [one] }), 'SAEGATE_ERR_CONFIG', '--projection', 'NAME=FILE');
    expectSaegateError(() => loadProjections({ projection: [`p=${two}`] }), 'SAEGATE_ERR_VECTOR_FILE', two, 'p=', '@HOOK');
    expectSaegateError(() => loadProjections({ projection: [`p=${one}@blocks.5.hook_resid_post`] }), 'SAEGATE_ERR_VECTOR_FILE', "no direction for hook 'blocks.5.hook_resid_post'");
    expectSaegateError(() => loadProjections({ projection: [`p=${path.join(dir, 'none.safetensors')}`] }), 'SAEGATE_ERR_VECTOR_FILE', 'no such file');
    expectSaegateError(() => loadProjections({ projection: [`p=${one}`, `p=${one}`] }), 'SAEGATE_ERR_CONFIG', "two projection monitors named 'p'");
  });

  it('builds a monitor from projections alone, and refuses a projection named like an SAE', async () => {
    const projections = loadProjections({ projection: [`persona=${one}`] });
    const monitor = createMonitor([], {}, new Registry(), undefined, projections)!;
    expect(monitor.saes).toMatchObject([{ sae: 'persona', hook: HOOK, dSae: 1, projection: true, model: 'unknown' }]);
    await monitor.close();
    const weights = seededStandardSae({ dIn: 4, dSae: 8, hook: HOOK, seed: 1, scales: { W_enc: 1, b_enc: 0.1, W_dec: 1, b_dec: 0.1 } });
    const sae = { ...weights, config: { ...weights.config, source: path.join(dir, 'persona') } };
    expectSaegateError(() => createMonitor([sae], {}, new Registry(), undefined, projections), 'SAEGATE_ERR_CONFIG', "'persona' is also an SAE's name");
  });

  it('refuses --projection with a body-steering upstream (no tap, nothing to project)', async () => {
    await expectSaegateRejection(() => startProxyWithSaes({ upstream: 'http://127.0.0.1:9', port: 0, upstreamSteering: 'reference' }, [], undefined, { projection: [`p=${one}`] }), 'SAEGATE_ERR_CONFIG', '--upstream-steering reference', 'drop --projection');
  });
});

describe('projectingSink', () => {
  it('offers projections of its hook to the monitor, forwards frames, and counts a frame of the wrong width as dropped', () => {
    const [spec] = loadProjections({ projection: [`p=${one}`] });
    const offered: { name: string; rows: EncodedRows }[] = [];
    const inner = new CountingSink();
    const sink = projectingSink(inner, [spec], { offerProjection: (name, rows) => offered.push({ name, rows }) });
    expect(sink.write(frame(4, [[5, 0, 0, 0], [0, 5, 1, 1], [1, 1, 1, 1]]), source)).toBe(0);
    expect(offered).toHaveLength(1);
    expect(offered[0].name).toBe('p');
    expect(Array.from(offered[0].rows.projection!)).toEqual([3, 4, Math.fround(1.4000000357627869)].map((v) => Math.fround(v)));
    expect(Array.from(offered[0].rows.requestIndex)).toEqual([0, 1, 0]);
    expect(offered[0].rows.requestIds).toEqual(['r1', 'r2']);
    expect(inner.rows).toBe(3);
    expect(sink.write(frame(3, [[1, 2, 3]]), source)).toBe(1);
    expect(offered).toHaveLength(1);
    expect(inner.rows).toBe(4);
    sink.end?.({ requestId: 'r1' } as never, source);
    expect(inner.request('r1')?.end).not.toBeNull();
    // Alone (no SAEs): a sink that only projects.
    const alone = projectingSink(undefined, [spec], { offerProjection: (name, rows) => offered.push({ name, rows }) });
    expect(alone.write(frame(4, [[1, 0, 0, 0]]), source)).toBe(0);
    expect(offered).toHaveLength(2);
  });
});

describe('baseline record --projection', () => {
  it('takes --sae or --projection, not both or neither', async () => {
    const common = ['--corpus', path.join(dir, 'c.jsonl'), '--out', path.join(dir, 'b.json')];
    await expectSaegateRejection(() => baselineRecord(common), 'SAEGATE_ERR_CLI_USAGE', '--sae', '--projection', 'one of them');
    await expectSaegateRejection(() => baselineRecord(['--sae', dir, '--projection', `p=${one}`, ...common]), 'SAEGATE_ERR_CLI_USAGE', '--sae', 'one of them');
  });
});
