// The local stack: a ClickHouse and a Kafka-protocol broker that Warbler starts
// itself, under WARBLER_HOME, with its own config, data and ports. `up` is
// idempotent (it reuses what answers), `down` stops exactly the pids `up` recorded.
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Config, REPO_ROOT, type StackState, readStackState } from './config.ts';
import { log } from './log.ts';

const PACKAGES: Record<string, string> = {
  'clickhouse-server': 'clickhouse-server',
  'clickhouse-client': 'clickhouse-client',
  kcat: 'kcat',
};

function which(cmd: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

export function isAlive(pid: number | undefined): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Installs the Debian packages the stack needs, when missing and when we may. */
export function ensurePackages(): void {
  const missing = Object.keys(PACKAGES).filter((c) => !which(c));
  if (missing.length === 0) return;
  const pkgs = [...new Set(missing.map((c) => PACKAGES[c] as string))];
  const isRoot = process.getuid?.() === 0;
  if (!isRoot) {
    throw new Error(
      `missing ${missing.join(', ')}; install them with: sudo apt-get update && sudo apt-get install -y ${pkgs.join(' ')}`,
    );
  }
  log.info('installing system packages', { packages: pkgs });
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  for (const args of [['update', '-qq'], ['install', '-y', '-qq', ...pkgs]]) {
    const r = spawnSync('apt-get', args, { stdio: ['ignore', 'inherit', 'inherit'], env });
    if (r.status !== 0) throw new Error(`apt-get ${args.join(' ')} failed (exit ${r.status}); run it by hand to see why`);
  }
}

function clickhouseConfig(dir: string, httpPort: number, tcpPort: number): string {
  return `<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>${dir}/log/server.log</log><errorlog>${dir}/log/error.log</errorlog><size>100M</size><count>2</count></logger>
  <http_port>${httpPort}</http_port>
  <tcp_port>${tcpPort}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <max_concurrent_queries>200</max_concurrent_queries>
  <mark_cache_size>1073741824</mark_cache_size>
  <path>${dir}/data/</path>
  <tmp_path>${dir}/tmp/</tmp_path>
  <user_files_path>${dir}/user_files/</user_files_path>
  <format_schema_path>${dir}/format_schemas/</format_schema_path>
  <timezone>UTC</timezone>
  <mlock_executable>false</mlock_executable>
  <profiles><default><max_memory_usage>10000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
`;
}

async function clickhouseAnswers(url: string): Promise<boolean> {
  try {
    const res = await fetch(`${url}/?query=SELECT%201`, { signal: AbortSignal.timeout(2000) });
    return res.ok;
  } catch {
    return false;
  }
}

function saveState(cfg: Config, state: StackState): void {
  mkdirSync(cfg.WARBLER_HOME, { recursive: true });
  writeFileSync(cfg.stateFile, JSON.stringify(state, null, 2));
}

async function startClickHouse(cfg: Config, state: StackState): Promise<StackState['clickhouse']> {
  const httpPort = cfg.WARBLER_CLICKHOUSE_HTTP_PORT;
  const tcpPort = cfg.WARBLER_CLICKHOUSE_TCP_PORT;
  const url = `http://127.0.0.1:${httpPort}`;
  if (state.clickhouse && isAlive(state.clickhouse.pid) && (await clickhouseAnswers(state.clickhouse.url))) {
    if ((state.clickhouse.mallocConf ?? '') !== cfg.WARBLER_CLICKHOUSE_MALLOC_CONF) {
      log.warn('the local ClickHouse was started with other allocator options than WARBLER_CLICKHOUSE_MALLOC_CONF names; `warbler down`, then `warbler up` to apply them', {
        running: state.clickhouse.mallocConf ?? '(not recorded)',
        configured: cfg.WARBLER_CLICKHOUSE_MALLOC_CONF,
      });
    }
    return state.clickhouse;
  }
  if (await clickhouseAnswers(url)) {
    throw new Error(
      `something else already answers on ${url}; stop it, or set WARBLER_CLICKHOUSE_URL to use it, or WARBLER_CLICKHOUSE_HTTP_PORT/TCP_PORT to pick free ports`,
    );
  }
  const dir = join(cfg.WARBLER_HOME, 'clickhouse');
  for (const sub of ['data', 'tmp', 'log', 'user_files', 'format_schemas']) mkdirSync(join(dir, sub), { recursive: true });
  const configFile = join(dir, 'config.xml');
  writeFileSync(configFile, clickhouseConfig(dir, httpPort, tcpPort));
  const out = openSync(join(dir, 'log', 'stdout.log'), 'a');
  const child = spawn(which('clickhouse-server') ?? 'clickhouse-server', [`--config-file=${configFile}`], {
    cwd: dir,
    detached: true,
    stdio: ['ignore', out, out],
    env: { ...process.env, MALLOC_CONF: cfg.WARBLER_CLICKHOUSE_MALLOC_CONF },
  });
  child.unref();
  closeSync(out);
  const pid = child.pid as number;
  for (let i = 0; i < 120; i++) {
    if (await clickhouseAnswers(url)) return { url, pid, httpPort, tcpPort, dataDir: dir, mallocConf: cfg.WARBLER_CLICKHOUSE_MALLOC_CONF };
    if (!isAlive(pid)) break;
    await sleep(500);
  }
  const errLog = join(dir, 'log', 'error.log');
  const tail = existsSync(errLog) ? readFileSync(errLog, 'utf8').split('\n').slice(-5).join('\n') : '';
  throw new Error(`ClickHouse did not start on ${url}; see ${errLog}\n${tail}`);
}

async function startKafka(cfg: Config, state: StackState): Promise<StackState['kafka']> {
  if (state.kafka && isAlive(state.kafka.pid)) return state.kafka;
  const dir = join(cfg.WARBLER_HOME, 'kafka');
  mkdirSync(dir, { recursive: true });
  const errFile = join(dir, 'kcat.stderr.log');
  const err = openSync(errFile, 'w');
  // The mock cluster lives inside this kcat process; the consumer on a dummy
  // topic only keeps it running. Its brokers' ports are random per start.
  const child = spawn(
    which('kcat') ?? 'kcat',
    ['-b', '127.0.0.1:1', '-C', '-t', 'warbler-keepalive', '-X', 'test.mock.num.brokers=3', '-q'],
    { cwd: dir, detached: true, stdio: ['ignore', 'ignore', err] },
  );
  child.unref();
  closeSync(err);
  const pid = child.pid as number;
  for (let i = 0; i < 100; i++) {
    const text = existsSync(errFile) ? readFileSync(errFile, 'utf8') : '';
    const m = /replaced with ([0-9.:,]+)/.exec(text);
    if (m?.[1]) return { brokers: m[1].split(',').filter(Boolean), pid };
    if (!isAlive(pid)) break;
    await sleep(100);
  }
  throw new Error(`the mock Kafka broker (kcat) did not start; see ${errFile}`);
}

export interface UpResult {
  clickhouseUrl: string;
  kafkaBrokers: string[];
  started: string[];
}

/** Starts what is missing. External services named by env vars are used as they are. */
export async function up(cfg: Config): Promise<UpResult> {
  const state = readStackState(cfg.WARBLER_HOME);
  const started: string[] = [];
  const externalCh = Boolean(process.env.WARBLER_CLICKHOUSE_URL);
  const externalKafka = Boolean(process.env.WARBLER_KAFKA_BROKERS);
  if (!externalCh || !externalKafka) ensurePackages();
  if (!externalCh) {
    const before = state.clickhouse?.pid;
    state.clickhouse = await startClickHouse(cfg, state);
    if (state.clickhouse?.pid !== before) started.push('clickhouse');
  }
  if (!externalKafka) {
    const before = state.kafka?.pid;
    state.kafka = await startKafka(cfg, state);
    if (state.kafka?.pid !== before) started.push('kafka');
  }
  saveState(cfg, state);
  return {
    clickhouseUrl: externalCh ? cfg.clickhouseUrl : (state.clickhouse?.url as string),
    kafkaBrokers: externalKafka ? cfg.kafkaBrokers : (state.kafka?.brokers ?? []),
    started,
  };
}

/**
 * Stops the stack's ClickHouse server and starts it again with `cfg` (its
 * WARBLER_CLICKHOUSE_MALLOC_CONF): bench/allocator.ts. Memory tables come back empty.
 */
export async function restartClickHouse(cfg: Config): Promise<NonNullable<StackState['clickhouse']>> {
  if (process.env.WARBLER_CLICKHOUSE_URL) throw new Error('WARBLER_CLICKHOUSE_URL names a ClickHouse server the stack did not start; unset it to restart the stack\'s own');
  const state = readStackState(cfg.WARBLER_HOME);
  if (state.clickhouse?.pid && isAlive(state.clickhouse.pid)) await stopPid(state.clickhouse.pid);
  delete state.clickhouse;
  state.clickhouse = await startClickHouse(cfg, state);
  saveState(cfg, state);
  return state.clickhouse!;
}

async function stopPid(pid: number): Promise<void> {
  if (!isAlive(pid)) return;
  try {
    process.kill(-pid, 'SIGTERM'); // its process group: detached children lead their own
  } catch {
    process.kill(pid, 'SIGTERM');
  }
  for (let i = 0; i < 100 && isAlive(pid); i++) await sleep(100);
  if (isAlive(pid)) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
}

/** The long-running Warbler processes `demo` starts; each records its pid in $WARBLER_HOME/<name>.pid. */
export const DAEMONS = ['api', 'ingest'] as const;
export type Daemon = (typeof DAEMONS)[number];

export function daemonPid(cfg: Config, name: Daemon): number | undefined {
  const f = join(cfg.WARBLER_HOME, `${name}.pid`);
  if (!existsSync(f)) return undefined;
  const pid = Number(readFileSync(f, 'utf8').trim());
  return isAlive(pid) ? pid : undefined;
}

export async function stopDaemon(cfg: Config, name: Daemon): Promise<boolean> {
  const pid = daemonPid(cfg, name);
  if (pid === undefined) return false;
  await stopPid(pid);
  return true;
}

/** Starts `warbler <args>` in the background, detached, logging to $WARBLER_HOME/logs/<name>.log. */
/**
 * Node flags for an ingest consumer process: a capped heap keeps its RSS near
 * 200–250 MB with 20,000-event batches instead of letting V8 grow it to ~350 MB
 * (bench/results/ingest.md). A cap already given in execArgv or NODE_OPTIONS wins.
 */
export function ingestNodeFlags(execArgv: readonly string[] = process.execArgv, nodeOptions = process.env.NODE_OPTIONS ?? ''): string[] {
  return [...execArgv, nodeOptions].some((a) => a.includes('max-old-space-size')) ? [] : ['--max-old-space-size=256'];
}

export function startDaemon(cfg: Config, name: Daemon, args: string[], env: NodeJS.ProcessEnv = {}): number {
  const logDir = join(cfg.WARBLER_HOME, 'logs');
  mkdirSync(logDir, { recursive: true });
  const out = openSync(join(logDir, `${name}.log`), 'a');
  const nodeFlags = name === 'ingest' ? ingestNodeFlags([], env.NODE_OPTIONS ?? process.env.NODE_OPTIONS ?? '') : [];
  const child = spawn(process.execPath, [...nodeFlags, join(REPO_ROOT, 'bin', 'warbler.js'), ...args], {
    detached: true,
    stdio: ['ignore', out, out],
    env: { ...process.env, ...env },
  });
  child.unref();
  closeSync(out);
  const pid = child.pid as number;
  writeFileSync(join(cfg.WARBLER_HOME, `${name}.pid`), String(pid));
  return pid;
}

export async function down(cfg: Config): Promise<string[]> {
  const state = readStackState(cfg.WARBLER_HOME);
  const stopped: string[] = [];
  for (const name of DAEMONS) if (await stopDaemon(cfg, name)) stopped.push(name);
  if (state.kafka?.pid && isAlive(state.kafka.pid)) {
    await stopPid(state.kafka.pid);
    stopped.push('kafka');
  }
  if (state.clickhouse?.pid && isAlive(state.clickhouse.pid)) {
    await stopPid(state.clickhouse.pid);
    stopped.push('clickhouse');
  }
  delete state.kafka;
  delete state.clickhouse;
  saveState(cfg, state);
  return stopped;
}

export interface StackStatus {
  clickhouse: { url: string; pid?: number; running: boolean; answers: boolean };
  kafka: { brokers: string[]; pid?: number; running: boolean };
}

export async function status(cfg: Config): Promise<StackStatus> {
  const state = readStackState(cfg.WARBLER_HOME);
  return {
    clickhouse: {
      url: cfg.clickhouseUrl,
      pid: state.clickhouse?.pid,
      running: isAlive(state.clickhouse?.pid),
      answers: await clickhouseAnswers(cfg.clickhouseUrl),
    },
    kafka: { brokers: cfg.kafkaBrokers, pid: state.kafka?.pid, running: isAlive(state.kafka?.pid) },
  };
}
