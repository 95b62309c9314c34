import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 120_000,
    hookTimeout: 180_000,
    // Integration tests share one ClickHouse and one broker on a 2-core machine;
    // a couple of workers keeps the run fast without starving the servers.
    maxWorkers: 2,
    pool: 'forks',
  },
});
