// Starts (or reuses) the local ClickHouse and broker once per test run and hands
// their addresses to the test files. Each test file makes its own database.
import type { TestProject } from 'vitest/node';
import { loadConfig } from '../lib/config.ts';
import { up } from '../lib/stack.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    clickhouseUrl: string;
    kafkaBrokers: string[];
    runId: string;
  }
}

export default async function setup(project: TestProject): Promise<void> {
  const cfg = loadConfig();
  const stack = await up(cfg);
  project.provide('clickhouseUrl', stack.clickhouseUrl);
  project.provide('kafkaBrokers', stack.kafkaBrokers);
  project.provide('runId', `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`);
}
