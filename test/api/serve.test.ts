// `warbler serve` as a process: demo key, pid file, the node adapter over a
// real socket (body limit before reading, streaming), and graceful shutdown
// that lets an in-flight export finish.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashKey } from '../../api/auth.ts';
import type { ClickHouse } from '../../lib/clickhouse.ts';
import { REPO_ROOT } from '../../lib/config.ts';
import { sql } from '../../lib/sql.ts';
import { clickhouseUrl, kafkaBrokers, testDatabase } from '../support/env.ts';

let child: ChildProcess;
let home: string;
let url: string;
let key: string;
let exited: Promise<number | null>;
let db: ClickHouse;

beforeAll(async () => {
  const ch = await testDatabase('serve');
  db = ch;
  // 200k users with one view each, straight into the events table.
  await ch.exec(sql`INSERT INTO events (app_id, user_id, ts, event_id, type, event, properties, context, received_at)
    SELECT 'demo', concat('u', toString(100000000 + number)), toDateTime(1760000000 + number), toString(number), 'track', 'view', '{}', '{}', now()
    FROM system.numbers LIMIT 200000`);
  home = mkdtempSync(join(tmpdir(), 'warbler-serve-'));
  child = spawn(process.execPath, ['--import', 'tsx', '-e', "import('./cli/serve.ts').then(m => m.runServe(['--port', '0'])).then(c => process.exit(c))"], {
    cwd: REPO_ROOT,
    env: {
      ...Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'WARBLER_KEYS_FILE' && k !== 'WARBLER_API_KEYS')),
      WARBLER_HOME: home,
      WARBLER_CLICKHOUSE_URL: clickhouseUrl(),
      WARBLER_CLICKHOUSE_DATABASE: ch.database,
      WARBLER_KAFKA_BROKERS: kafkaBrokers().join(','),
      WARBLER_LOG_LEVEL: 'warn',
      WARBLER_PROFILE_INTERVAL_S: '3600',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  for (let i = 0; i < 300 && !/listening on (\S+)/.test(out); i++) {
    if (child.exitCode !== null) throw new Error(`serve exited: ${err}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  url = /listening on (\S+)/.exec(out)?.[1] as string;
  key = /created an admin API key for app "demo": (\S+)/.exec(out)?.[1] as string;
  expect(url).toBeTruthy();
}, 120_000);

afterAll(() => {
  if (child && child.exitCode === null) child.kill('SIGKILL');
});

describe('warbler serve', () => {
  it('creates one demo admin key, stored hashed, plaintext only in a mode-600 file', async () => {
    expect(key).toMatch(/^wbk_/);
    const keyFile = join(home, 'demo-admin-key.txt');
    expect(readFileSync(keyFile, 'utf8').trim()).toBe(key);
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    const keys = JSON.parse(readFileSync(join(home, 'keys.json'), 'utf8'));
    expect(keys).toEqual({ keys: [{ name: expect.any(String), app_id: 'demo', roles: ['admin'], sha256: hashKey(key) }] });
    expect(JSON.stringify(keys)).not.toContain(key);
    expect(readFileSync(join(home, 'api.pid'), 'utf8')).toBe(String(child.pid));
    const res = await fetch(`${url}/v1/stats`, { headers: { authorization: `Bearer ${key}` } });
    expect(await res.json()).toMatchObject({ app_id: 'demo', users: 200_000 });
  });

  it('refuses a body larger than the limit before reading it', async () => {
    const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request(`${url}/v1/segments/evaluate`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'content-length': String(1024 * 1024 * 1024) },
      });
      req.on('response', (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      });
      req.on('error', reject);
      req.write('{');
    });
    expect(status).toBe(413);
    expect(JSON.parse(body)).toMatchObject({ status: 413, errors: [{ path: 'body', message: expect.stringMatching(/exceeds the limit/) }] });
  });

  it('keeps profiles fresh on its schedule: the first run starts with the service', async () => {
    let runs: { state: string; mode: string }[] = [];
    for (let i = 0; i < 600 && !runs.some((r) => r.state === 'complete'); i++) {
      await new Promise((r) => setTimeout(r, 200));
      runs = await db.rows<{ state: string; mode: string }>(sql`SELECT state, mode FROM profile_runs WHERE app_id = 'demo'`);
    }
    expect(runs.filter((r) => r.state === 'complete')).toEqual([{ state: 'complete', mode: 'full' }]);
    const profiles = await db.one<{ n: string }>(sql`SELECT count() AS n FROM profiles WHERE app_id = 'demo'`);
    expect(Number(profiles!.n)).toBe(200_000);
  }, 150_000);

  it('finishes an in-flight export on SIGTERM, then exits and removes its pid file', async () => {
    const seg = (await (
      await fetch(`${url}/v1/segments`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'all', expression: 'did(view)' }),
      })
    ).json()) as { id: string };
    const res = await fetch(`${url}/v1/segments/${seg.id}/users?as_of=2030-01-01T00:00:00Z`, { headers: { authorization: `Bearer ${key}` } });
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    let lines = 0;
    const first = await reader.read();
    for (const b of first.value!) if (b === 10) lines++;
    child.kill('SIGTERM');
    // New connections are refused while the export goes on.
    await new Promise((r) => setTimeout(r, 300));
    await expect(fetch(`${url}/healthz`)).rejects.toThrow();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      for (const b of value) if (b === 10) lines++;
    }
    expect(lines).toBe(200_000);
    expect(await exited).toBe(0);
    expect(existsSync(join(home, 'api.pid'))).toBe(false);
  });
});
