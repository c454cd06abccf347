// The allowed folder-to-folder imports inside src/, as one ESLint rule (`saegate/layers`).
//
// Every top-level folder of src/ is a layer. A file may import its own folder and the folders listed
// for it below; anything else is a wrong-direction import and fails `npm run lint` (and so
// `npm test`). ARCHITECTURE.md explains each edge. Relative imports are resolved against the
// importing file, so `../model/x.js` from `src/lab/train/y.ts` is `src/lab/model/…` (allowed) and
// from `src/sae/y.ts` is `src/model/…` (refused).
//
// The rule also fences the onnxruntime packages: only the runtime boundary (`src/common/ort.ts`)
// and worker entry files (`*worker.ts`) may import them, type-only or not, because a session run
// blocks the thread it runs on and must never run on the event loop.
import path from 'node:path';

/** Layer → the layers it may import (besides itself). Order: lowest first. */
export const LAYERS = {
  common: [],
  tap: ['common'],
  sae: ['common', 'tap'],
  model: ['common', 'tap'],
  steering: ['common', 'tap', 'sae'],
  monitor: ['common', 'tap', 'sae', 'steering'],
  policies: ['common', 'tap', 'sae', 'steering', 'monitor'],
  proxy: ['common', 'tap', 'steering', 'monitor', 'policies'],
  lab: ['common', 'tap', 'sae', 'model', 'steering', 'monitor', 'policies', 'proxy'],
  cli: ['common', 'tap', 'sae', 'model', 'steering', 'monitor', 'policies', 'proxy', 'lab'],
};

const ORT_PACKAGES = new Set(['onnxruntime-node', 'onnxruntime-common', 'onnxruntime-web']);

/** The layer (top-level folder under `srcRoot`) of an absolute path, or undefined outside it. */
function layerOf(srcRoot, absolutePath) {
  const rel = path.relative(srcRoot, absolutePath);
  if (rel.startsWith('..') || path.isAbsolute(rel)) return undefined;
  const [first, ...rest] = rel.split(path.sep);
  return rest.length > 0 ? first : undefined;
}

function isOrtAllowed(srcRoot, filename) {
  const rel = path.relative(srcRoot, filename).split(path.sep).join('/');
  return rel === 'common/ort.ts' || /(^|\/|-)worker\.[cm]?[jt]s$/.test(rel);
}

/** @type {import('eslint').Rule.RuleModule} */
export const layersRule = {
  meta: {
    type: 'problem',
    docs: { description: 'Enforce the folder layering of src/ (ARCHITECTURE.md) and the onnxruntime boundary' },
    schema: [
      {
        type: 'object',
        properties: {
          srcRoot: { type: 'string' },
          layers: { type: 'object' },
        },
        additionalProperties: false,
      },
    ],
    messages: {
      upward: "src/{{from}} may not import src/{{to}} ('{{spec}}'): allowed from {{from}}: {{allowed}}. See ARCHITECTURE.md.",
      unknownLayer: "src/{{from}} is not a known layer; add it to eslint/layers.js and ARCHITECTURE.md.",
      ort: "'{{spec}}' may be imported only by src/common/ort.ts and worker entry files (*worker.ts): onnxruntime blocks the thread it runs on.",
    },
  },
  create(context) {
    const options = context.options[0] ?? {};
    const srcRoot = path.resolve(context.cwd, options.srcRoot ?? 'src');
    const layers = options.layers ?? LAYERS;
    const filename = context.filename;
    const from = layerOf(srcRoot, filename);
    if (from === undefined) return {};

    function check(node, spec) {
      if (typeof spec !== 'string') return;
      const bare = spec.split('/').slice(0, spec.startsWith('@') ? 2 : 1).join('/');
      if (ORT_PACKAGES.has(bare)) {
        if (!isOrtAllowed(srcRoot, filename)) context.report({ node, messageId: 'ort', data: { spec } });
        return;
      }
      if (!spec.startsWith('.')) return;
      const to = layerOf(srcRoot, path.resolve(path.dirname(filename), spec));
      if (to === undefined || to === from) return;
      const allowed = layers[from];
      if (allowed === undefined) {
        context.report({ node, messageId: 'unknownLayer', data: { from } });
        return;
      }
      if (!allowed.includes(to)) {
        context.report({
          node,
          messageId: 'upward',
          data: { from, to, spec, allowed: allowed.length > 0 ? allowed.join(', ') : '(nothing)' },
        });
      }
    }

    return {
      ImportDeclaration: (node) => check(node.source, node.source.value),
      ExportNamedDeclaration: (node) => node.source && check(node.source, node.source.value),
      ExportAllDeclaration: (node) => check(node.source, node.source.value),
      ImportExpression: (node) => node.source.type === 'Literal' && check(node.source, node.source.value),
      TSImportType: (node) => {
        const literal = node.argument?.literal ?? node.argument;
        if (literal?.type === 'Literal') check(literal, literal.value);
      },
    };
  },
};

export default { rules: { layers: layersRule } };
