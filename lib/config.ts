// Configuration comes from the environment, validated once at start-up.
// Addresses the local stack chose (the mock broker's ports are random) are read
// from the stack state file when the environment does not name them.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/**
 * WARBLER_CLICKHOUSE_MALLOC_CONF's default: what current ClickHouse builds its
 * own jemalloc with (contrib/jemalloc-cmake).
 */
export const CLICKHOUSE_MALLOC_CONF = 'percpu_arena:percpu,oversize_threshold:0,muzzy_decay_ms:5000,dirty_decay_ms:5000';

const intFrom = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

export const ConfigSchema = z.object({
  WARBLER_HOME: z.string().min(1).default(join(REPO_ROOT, '.warbler')),
  WARBLER_CLICKHOUSE_URL: z.url().optional(),
  WARBLER_CLICKHOUSE_DATABASE: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'a plain identifier').default('warbler'),
  WARBLER_CLICKHOUSE_USER: z.string().default('default'),
  WARBLER_CLICKHOUSE_PASSWORD: z.string().default(''),
  WARBLER_CLICKHOUSE_HTTP_PORT: intFrom(1, 65535).default(18123),
  WARBLER_CLICKHOUSE_TCP_PORT: intFrom(1, 65535).default(19000),
  // jemalloc's options for the ClickHouse server the stack starts (not for one
  // named by WARBLER_CLICKHOUSE_URL). Debian's 18.16 links the system jemalloc
  // with its defaults, under which every allocation of 8 MiB or more (a column
  // of a 1M-row block) takes fresh pages from the kernel, and threads spread
  // over 4 arenas a core reuse each other's freed memory less: each fresh page
  // is a page fault, and they are slow on this machine. ClickHouse's own builds
  // configure their jemalloc against both. Empty: jemalloc's defaults.
  // bench/allocator.ts measures the difference.
  WARBLER_CLICKHOUSE_MALLOC_CONF: z.string().default(CLICKHOUSE_MALLOC_CONF),
  WARBLER_KAFKA_BROKERS: z
    .string()
    .regex(/^[^,\s]+:\d+(,[^,\s]+:\d+)*$/, 'comma-separated host:port list')
    .optional(),
  WARBLER_EVENTS_TOPIC: z.string().min(1).default('events'),
  WARBLER_DLQ_TOPIC: z.string().min(1).default('events.dlq'),
  WARBLER_MEMBERSHIP_TOPIC: z.string().min(1).default('segment-membership'),
  WARBLER_CONSUMER_GROUP: z.string().min(1).default('warbler-ingest'),
  WARBLER_BATCH_MAX_EVENTS: intFrom(1, 1_000_000).default(20_000),
  WARBLER_BATCH_MAX_MS: intFrom(10, 600_000).default(1000),
  WARBLER_API_HOST: z.string().default('127.0.0.1'),
  WARBLER_API_PORT: intFrom(0, 65535).default(8080),
  WARBLER_KEYS_FILE: z.string().optional(),
  WARBLER_PROFILE_INTERVAL_S: intFrom(0, 86_400 * 7).default(300),
  WARBLER_PROFILE_FULL_EVERY_S: intFrom(0, 86_400 * 365).default(86_400),
  WARBLER_PROFILE_STATE_CACHE_MAX_USERS: intFrom(0, 1_000_000_000).default(2_000_000),
  WARBLER_QUERY_TIMEOUT_S: intFrom(1, 3600).default(30),
  WARBLER_LOG_LEVEL: z.enum(['debug', 'info', 'warn', 'error']).default('info'),
});

export type RawConfig = z.infer<typeof ConfigSchema>;

export interface Config extends RawConfig {
  clickhouseUrl: string;
  kafkaBrokers: string[];
  keysFile: string;
  stateFile: string;
}

export interface StackState {
  clickhouse?: { url: string; pid: number; httpPort: number; tcpPort: number; dataDir: string; mallocConf?: string };
  kafka?: { brokers: string[]; pid: number };
}

export function readStackState(home: string): StackState {
  const file = join(home, 'stack.json');
  if (!existsSync(file)) return {};
  return JSON.parse(readFileSync(file, 'utf8')) as StackState;
}

export class ConfigError extends Error {}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const parsed = ConfigSchema.safeParse(env);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`);
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}\nfix the environment variable(s) above and retry`);
  }
  const c = parsed.data;
  const state = readStackState(c.WARBLER_HOME);
  return {
    ...c,
    clickhouseUrl:
      c.WARBLER_CLICKHOUSE_URL ?? state.clickhouse?.url ?? `http://127.0.0.1:${c.WARBLER_CLICKHOUSE_HTTP_PORT}`,
    kafkaBrokers: c.WARBLER_KAFKA_BROKERS ? c.WARBLER_KAFKA_BROKERS.split(',') : (state.kafka?.brokers ?? []),
    keysFile: c.WARBLER_KEYS_FILE ?? join(c.WARBLER_HOME, 'keys.json'),
    stateFile: join(c.WARBLER_HOME, 'stack.json'),
  };
}
