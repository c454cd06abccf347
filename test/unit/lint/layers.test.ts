import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';
import layers, { LAYERS } from '../../../eslint/layers.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const fixtureRoot = path.join(repoRoot, 'test', 'fixtures', 'layers');

/** Lints fixture files with only the layering rule, rooted at the fixture's own src/. */
async function lintFixture(relative: string): Promise<string[]> {
  const eslint = new ESLint({
    cwd: fixtureRoot,
    overrideConfigFile: true,
    ignore: false,
    overrideConfig: [
      {
        files: ['**/*.ts'],
        languageOptions: { parser: (await import('typescript-eslint')).parser },
        plugins: { saegate: layers },
        rules: { 'saegate/layers': ['error', { srcRoot: 'src' }] },
      },
    ],
  });
  const [result] = await eslint.lintFiles([path.join(fixtureRoot, relative)]);
  return result.messages.map((m) => `${m.line}: ${m.message}`);
}

describe('the layering lint rule', () => {
  it('refuses a wrong-direction import (the online SAE engine importing the model server)', async () => {
    const messages = await lintFixture('src/sae/wrong-direction.ts');
    expect(messages).toEqual([expect.stringMatching(/^2: src\/sae may not import src\/model \('\.\.\/model\/engine\.js'\)/)]);
  });

  it('refuses onnxruntime outside the runtime boundary and worker entry files', async () => {
    expect(await lintFixture('src/sae/ort-in-engine.ts')).toEqual([expect.stringMatching(/^2: 'onnxruntime-node' may be imported only by/)]);
    expect(await lintFixture('src/sae/pool-worker.ts')).toEqual([]);
  });

  it('resolves relative imports against the importing file, so lab may reach down', async () => {
    expect(await lintFixture('src/lab/reaches-down.ts')).toEqual([]);
  });

  it('checks re-exports and type-only import() types too', async () => {
    const messages = await lintFixture('src/common/reaches-up.ts');
    expect(messages).toEqual([
      expect.stringMatching(/^2: src\/common may not import src\/tap/),
      expect.stringMatching(/^3: src\/common may not import src\/proxy/),
    ]);
  });

  it('encodes the layering: no layer imports one listed after it, and the online engine imports neither model nor proxy', () => {
    const order = Object.keys(LAYERS);
    for (const [layer, allowed] of Object.entries(LAYERS)) {
      for (const target of allowed) expect(order.indexOf(target), `${layer} → ${target}`).toBeLessThan(order.indexOf(layer));
    }
    expect(LAYERS.sae).not.toContain('model');
    expect(LAYERS.sae).not.toContain('proxy');
    expect(LAYERS.common).toEqual([]);
  });

  it('is switched on for src/ in the project config, so a wrong import fails npm test', async () => {
    const eslint = new ESLint({ cwd: repoRoot });
    const [result] = await eslint.lintText("import { buildProxyApp } from '../proxy/app.js';\nexport const f = buildProxyApp;\n", {
      filePath: path.join(repoRoot, 'src', 'sae', 'not-a-real-file.ts'),
    });
    expect(result.messages.map((m) => m.ruleId)).toContain('saegate/layers');
    const [cli] = await eslint.lintText("console.log('x');\n", { filePath: path.join(repoRoot, 'src', 'monitor', 'not-a-real-file.ts') });
    expect(cli.messages.map((m) => m.ruleId)).toContain('no-console');
  });
});
