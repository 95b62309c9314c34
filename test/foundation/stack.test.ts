import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { CLICKHOUSE_MALLOC_CONF, loadConfig, readStackState } from '../../lib/config.ts';
import { isAlive } from '../../lib/stack.ts';

describe('the local ClickHouse server', () => {
  it('takes its allocator options from WARBLER_CLICKHOUSE_MALLOC_CONF: ClickHouse builds\' own by default, empty for jemalloc\'s', () => {
    expect(loadConfig({}).WARBLER_CLICKHOUSE_MALLOC_CONF).toBe(CLICKHOUSE_MALLOC_CONF);
    expect(CLICKHOUSE_MALLOC_CONF).toContain('oversize_threshold:0');
    expect(loadConfig({ WARBLER_CLICKHOUSE_MALLOC_CONF: '' }).WARBLER_CLICKHOUSE_MALLOC_CONF).toBe('');
  });

  it.skipIf(Boolean(process.env.WARBLER_CLICKHOUSE_URL))('runs with them: MALLOC_CONF in its environment', () => {
    const cfg = loadConfig();
    const server = readStackState(cfg.WARBLER_HOME).clickhouse;
    expect(server && isAlive(server.pid), 'the test run starts the local stack (test/global-setup.ts)').toBe(true);
    const environ = readFileSync(`/proc/${server!.pid}/environ`, 'utf8').split('\0');
    const conf = environ.find((e) => e.startsWith('MALLOC_CONF='))?.slice('MALLOC_CONF='.length);
    expect(conf, 'a server started before WARBLER_CLICKHOUSE_MALLOC_CONF (or with another value) keeps its options: `warbler down`, then run the tests again').toBe(
      cfg.WARBLER_CLICKHOUSE_MALLOC_CONF,
    );
    expect(server!.mallocConf).toBe(cfg.WARBLER_CLICKHOUSE_MALLOC_CONF);
  });
});
