/**
 * The monitor's part of `serve`, in process: flags that need `--sae` or `--record-baseline` are
 * refused naming the flag, watched-feature labels come from the SAE directory's features.yaml, the
 * watch cap and the rules file stop start-up with their typed errors.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Registry } from 'prom-client';
import { afterAll, describe, expect, it } from 'vitest';
import { createMonitor, policyMonitoring, unexportedWatches } from '../../../src/cli/serve-monitor.js';
import type { CompiledPolicy } from '../../../src/policies/compile.js';
import type { SaeWeights } from '../../../src/sae/types.js';
import { expectSaegateError } from '../../helpers/errors.js';
import { seededStandardSae } from '../../helpers/sae.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'saegate-serve-monitor-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function sae(): SaeWeights {
  const saeDir = path.join(dir, 'res-sae');
  fs.mkdirSync(saeDir, { recursive: true });
  fs.writeFileSync(path.join(saeDir, 'features.yaml'), '7: negation\n9: {label: dialogue, notes: quotes}\n');
  const weights = seededStandardSae({ dIn: 8, dSae: 32, hook: 'blocks.0.hook_resid_post', seed: 1, scales: { W_enc: 1, b_enc: 0.1, W_dec: 1, b_dec: 0.1 } });
  return { ...weights, config: { ...weights.config, source: saeDir } };
}

describe('serve --baseline/--watch/--alert-rules/--record-baseline', () => {
  it('refuses monitor flags without --sae, and --duration without --record-baseline', () => {
    expectSaegateError(() => createMonitor([], { baseline: ['b.json'] }, new Registry()), 'SAEGATE_ERR_CONFIG', '--baseline', 'give --sae DIR too');
    expectSaegateError(() => createMonitor([], { alertRules: 'r.yaml' }, new Registry()), 'SAEGATE_ERR_CONFIG', '--alert-rules');
    expectSaegateError(() => createMonitor([sae()], { duration: 60_000 }, new Registry()), 'SAEGATE_ERR_CONFIG', '--duration', '--record-baseline');
    expect(createMonitor([], { baseline: [] }, new Registry())).toBeUndefined();
  });

  it("labels watched features from the SAE's features.yaml and exports them", async () => {
    const watch = path.join(dir, 'watch.yaml');
    fs.writeFileSync(watch, 'features:\n  - {sae: res-sae, index: 7}\n  - {sae: res-sae, index: 9}\n  - {sae: res-sae, index: 11, label: own}\n');
    const registry = new Registry();
    const monitor = createMonitor([sae()], { watch }, registry)!;
    expect(monitor.saes[0]).toMatchObject({ sae: 'res-sae', model: 'unknown', watched: [{ feature: 7, label: 'negation' }, { feature: 9, label: 'dialogue' }, { feature: 11, label: 'own' }] });
    monitor.assess();
    expect(await registry.metrics()).toContain('saegate_feature_firing_rate{model="unknown",sae="res-sae",hook="blocks.0.hook_resid_post",feature="9",label="dialogue",window="1m"} 0');
    await monitor.close();
  });

  it('stops start-up past --max-watched-features and on an invalid rules file', () => {
    const watch = path.join(dir, 'watch3.yaml');
    fs.writeFileSync(watch, 'features:\n  - {sae: res-sae, index: 1}\n  - {sae: res-sae, index: 2}\n  - {sae: res-sae, index: 3}\n');
    expectSaegateError(() => createMonitor([sae()], { watch, maxWatchedFeatures: 2 }, new Registry()), 'SAEGATE_ERR_WATCH_FILE', '3 watched features exceed --max-watched-features (2)');
    const rules = path.join(dir, 'rules.yaml');
    fs.writeFileSync(rules, 'rules:\n  - {name: X, sae: res-sae, signal: {featureRate: 4}, threshold: 0.1}\n');
    expectSaegateError(() => createMonitor([sae()], { alertRules: rules }, new Registry()), 'SAEGATE_ERR_ALERT_RULES', `${rules}:2:`, 'feature 4 of SAE \'res-sae\' is not watched');
  });

  it("watches the policies' monitor features beside the file's, with one alert per policy threshold, within the cap", async () => {
    const policy = (name: string, watches: CompiledPolicy['watches']): CompiledPolicy => ({ name, qualifiedName: `${name}@1`, priority: 100, failClosed: false, match: {}, steers: [], watches, flags: [], aborts: [], file: `${name}.yaml` });
    const monitoring = policyMonitoring([
      policy('tenant-a', [{ sae: 'res-sae', index: 7, label: 'negation', alertFiringRateAbove: 0.05 }, { sae: 'res-sae', index: 12, label: 'twelve', alertMeanActivationAbove: 3 }]),
      policy('tenant-b', [{ sae: 'res-sae', index: 7, label: 'negation' }]),
    ]);
    expect(monitoring.watched.get('res-sae')).toEqual([{ feature: 7, label: 'negation' }, { feature: 12, label: 'twelve' }]);
    expect(monitoring.rules.map((r) => [r.name, r.signal, r.threshold])).toEqual([
      ['policy_tenant_a_res_sae_7_rate', { featureRate: 7 }, 0.05],
      ['policy_tenant_a_res_sae_12_mean', { featureMeanActivation: 12 }, 3],
    ]);
    const watch = path.join(dir, 'watch-policy.yaml');
    fs.writeFileSync(watch, 'features:\n  - {sae: res-sae, index: 9}\n  - {sae: res-sae, index: 7, label: from-file}\n');
    const registry = new Registry();
    const monitor = createMonitor([sae()], { watch }, registry, monitoring)!;
    expect(monitor.saes[0].watched).toEqual([{ feature: 9, label: 'dialogue' }, { feature: 7, label: 'from-file' }, { feature: 12, label: 'twelve' }]);
    monitor.assess();
    const text = await registry.metrics();
    expect(text).toContain('saegate_feature_mean_activation{model="unknown",sae="res-sae",hook="blocks.0.hook_resid_post",feature="12",label="twelve",window="5m"} 0');
    expect(text).toMatch(/saegate_alert_firing\{[^}]*alert="policy_tenant_a_res_sae_12_mean"[^}]*\} 0/);
    // A later set watching a feature not exported is reported (it needs a restart).
    expect(unexportedWatches(policyMonitoring([policy('late', [{ sae: 'res-sae', index: 20, label: 'x' }])]), monitor.watched())).toEqual(['res-sae#20']);
    await monitor.close();
    expectSaegateError(() => createMonitor([sae()], { watch, maxWatchedFeatures: 2 }, new Registry(), monitoring), 'SAEGATE_ERR_CONFIG', '3 features, more than the cap of 2');
  });
});
