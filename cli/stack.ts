import { parseArgs } from 'node:util';
import { ClickHouse } from '../lib/clickhouse.ts';
import { loadConfig } from '../lib/config.ts';
import { migrate } from '../lib/migrate.ts';
import { down, status, up } from '../lib/stack.ts';

export async function runUp(): Promise<number> {
  const cfg = loadConfig();
  const r = await up(cfg);
  process.stdout.write(
    `ClickHouse: ${r.clickhouseUrl}\nKafka:      ${r.kafkaBrokers.join(',')}\n` +
      (r.started.length ? `started: ${r.started.join(', ')}\n` : 'already running\n'),
  );
  return 0;
}

export async function runDown(): Promise<number> {
  const stopped = await down(loadConfig());
  process.stdout.write(stopped.length ? `stopped: ${stopped.join(', ')}\n` : 'nothing was running\n');
  return 0;
}

export async function runStatus(): Promise<number> {
  const s = await status(loadConfig());
  process.stdout.write(
    `ClickHouse: ${s.clickhouse.url} pid=${s.clickhouse.pid ?? '-'} ${s.clickhouse.answers ? 'answers' : 'NOT answering'}\n` +
      `Kafka:      ${s.kafka.brokers.join(',') || '-'} pid=${s.kafka.pid ?? '-'} ${s.kafka.running ? 'running' : 'NOT running'}\n`,
  );
  return s.clickhouse.answers && s.kafka.running ? 0 : 1;
}

export function clickhouseFromConfig(cfg = loadConfig()): ClickHouse {
  return new ClickHouse({
    url: cfg.clickhouseUrl,
    database: cfg.WARBLER_CLICKHOUSE_DATABASE,
    username: cfg.WARBLER_CLICKHOUSE_USER,
    password: cfg.WARBLER_CLICKHOUSE_PASSWORD,
    queryTimeoutS: cfg.WARBLER_QUERY_TIMEOUT_S,
  });
}

export async function runMigrate(argv: string[]): Promise<number> {
  parseArgs({ args: argv, options: {} });
  const ch = clickhouseFromConfig();
  try {
    const r = await migrate(ch, { onProgress: (m) => process.stderr.write(`applied ${m}\n`) });
    process.stdout.write(`database ${ch.database}: ${r.applied.length} applied, ${r.skipped.length} already applied\n`);
  } finally {
    await ch.close();
  }
  return 0;
}
