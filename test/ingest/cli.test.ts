// `warbler ingest --workers 2`: two consumer processes in one group store
// every event once, the pid file names the supervisor, SIGTERM stops all cleanly.
import { existsSync, readFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { expect, it } from 'vitest';
import { clickhouseUrl, testDatabase, uniqueName } from '../support/env.ts';
import { countEvents, produceRaw, spawnIngest, testKafka, trackEvent, waitFor } from './support.ts';

it('runs N workers, stores each event once, and stops on SIGTERM', async () => {
  const ch = await testDatabase('ingest_cli');
  const kafka = testKafka();
  const topic = uniqueName('cli');
  const { child, home, stderr } = spawnIngest('cli/ingest.ts', ['--workers', '2', '--topic', topic, '--group', `${topic}-g`, '--batch-ms', '300', '--session-timeout-ms', '6000'], ch);
  let step = 'start';
  try {
    const pidFile = join(home, 'ingest.pid');
    expect(await waitFor(async () => existsSync(pidFile), 30_000)).toBe(true);
    step = 'running';
    expect(Number(readFileSync(pidFile, 'utf8'))).toBe(child.pid);
    const messages = Array.from({ length: 3000 }, (_, i) => ({ value: JSON.stringify({ ...trackEvent(i), app_id: 'cli' }) }));
    await produceRaw(kafka, topic, messages.slice(0, 1500));
    await sleep(2000);
    await produceRaw(kafka, topic, messages.slice(1500));
    expect(await waitFor(async () => (await countEvents(ch, 'cli')).rows >= 3000, 50_000)).toBe(true);
    await sleep(1000);
    expect(await countEvents(ch, 'cli')).toEqual({ rows: 3000, ids: 3000 });
    step = 'stopping';
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    child.kill('SIGTERM');
    expect(await Promise.race([exited, sleep(30_000).then(() => 'still running')])).toBe(0);
    expect(existsSync(pidFile)).toBe(false);
  } catch (err) {
    // The workers' logs explain a failure better than a timeout does; without
    // their Kafka heartbeat lines, which fill any tail during a rebalance.
    const lines = stderr().split('\n').filter((l) => !l.includes('Heartbeat'));
    process.stderr.write(`ingest CLI failed at step ${step}; its stderr:\n${lines.join('\n').slice(-30_000)}\n`);
    throw err;
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
});

it('waits for an unreachable ClickHouse at start instead of exiting, then consumes', async () => {
  const ch = await testDatabase('ingest_cli_wait');
  const kafka = testKafka();
  const topic = uniqueName('cliwait');
  // A port held by this test (a freed one could be taken by another test meanwhile):
  // it cuts every connection until it is told to pass them on to ClickHouse.
  const target = Number(new URL(clickhouseUrl()).port);
  let up = false;
  const open = new Set<Socket>();
  const gate = createServer((client) => {
    if (!up) return void client.destroy();
    open.add(client);
    const upstream = connect(target, '127.0.0.1');
    client.on('error', () => upstream.destroy()).on('close', () => upstream.destroy());
    upstream.on('error', () => client.destroy()).on('close', () => client.destroy());
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((r) => gate.listen(0, '127.0.0.1', () => r()));
  const { child, stderr } = spawnIngest('cli/ingest.ts', ['--topic', topic, '--group', `${topic}-g`, '--batch-ms', '300', '--session-timeout-ms', '6000'], ch, {
    WARBLER_CLICKHOUSE_URL: `http://127.0.0.1:${(gate.address() as AddressInfo).port}`,
  });
  try {
    expect(await waitFor(async () => stderr().includes('ClickHouse is unreachable'), 30_000)).toBe(true);
    expect(child.exitCode).toBeNull();
    up = true;
    await produceRaw(kafka, topic, Array.from({ length: 100 }, (_, i) => ({ value: JSON.stringify({ ...trackEvent(i), app_id: 'wait' }) })));
    expect(await waitFor(async () => (await countEvents(ch, 'wait')).rows >= 100, 60_000)).toBe(true);
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    child.kill('SIGTERM');
    expect(await Promise.race([exited, sleep(30_000).then(() => 'still running')])).toBe(0);
  } catch (err) {
    process.stderr.write(`ingest CLI (waiting for ClickHouse) failed; its stderr:\n${stderr().slice(-20_000)}\n`);
    throw err;
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    for (const sock of open) sock.destroy();
    await new Promise<void>((r) => gate.close(() => r()));
  }
}, 120_000);
