import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/unit/**/*.test.ts', 'test/integration/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // 2-core CI machine: run files two at a time so model workers do not starve each other.
    maxWorkers: 2,
    pool: 'forks',
  },
});
