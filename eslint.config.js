import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import layers from './eslint/layers.js';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'coverage/**', '.bench/**', 'scratch/**', 'test/fixtures/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    plugins: { saegate: layers },
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      // Library code logs through the logger it is given; only the CLI prints.
      'no-console': 'error',
    },
  },
  {
    // The layering of src/ (ARCHITECTURE.md): no folder imports one above it; onnxruntime only at
    // the runtime boundary and in worker entry files.
    files: ['src/**/*.ts'],
    rules: { 'saegate/layers': 'error' },
  },
  {
    files: ['src/cli/**', 'test/**', 'eslint/**', '*.config.*'],
    rules: { 'no-console': 'off' },
  },
);
