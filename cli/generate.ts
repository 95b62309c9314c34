// `warbler generate`: realistic demo events to an NDJSON file, Kafka or ClickHouse.
import { parseArgs } from 'node:util';
import { loadConfig } from '../lib/config.ts';
import { log } from '../lib/log.ts';
import { migrate } from '../lib/migrate.ts';
import { generateEvents, GenerateOptionsError, resolveOptions, type DemoRecord, type GenerateOptions } from '../demo/generate.ts';
import { ClickHouseSink, KafkaSink, NdjsonSink, type EventSink } from '../demo/sinks.ts';
import { createEventProducer } from '../ingest/producer.ts';
import { createKafka } from '../lib/kafka.ts';
import type { Admin } from 'kafkajs';
import { clickhouseFromConfig } from './stack.ts';

const USAGE = `usage: warbler generate [options] (--out FILE.ndjson | --clickhouse | --kafka)

  --users N          number of users (default 100000)
  --seed S           any string; same seed and options give identical output (default 1)
  --days D           length of the span in days (default 90)
  --end ISO          the instant the span ends at (default: the current hour, printed at the end)
  --app-id ID        tenant of the events (default demo)
  --duplicates X     share of records that redeliver an earlier event (default 0.01)
  --invalid X        share of records that break the event contract (default 0.005)
  --event-ids X      share of events carrying a client event_id (default 0.9)
  --out FILE         write NDJSON to FILE ('-' for stdout), duplicates and invalid lines included
  --clickhouse       insert valid events straight into the configured database (benchmark set-up;
                     duplicates and invalid records are dropped, as ingest would)
  --kafka            produce every record to the events topic (WARBLER_EVENTS_TOPIC), keyed by app and user
  --max-lag N        with --kafka: pause while the ingest group (WARBLER_CONSUMER_GROUP) lags more than N
                     messages (default 150000; the local mock broker drops what a lagging consumer has not
                     read); 0 disables the check
`;

export async function runGenerate(argv: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        users: { type: 'string' },
        seed: { type: 'string', default: '1' },
        days: { type: 'string' },
        end: { type: 'string' },
        'app-id': { type: 'string' },
        duplicates: { type: 'string' },
        invalid: { type: 'string' },
        'event-ids': { type: 'string' },
        out: { type: 'string' },
        clickhouse: { type: 'boolean', default: false },
        kafka: { type: 'boolean', default: false },
        'max-lag': { type: 'string', default: '150000' },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
    }));
  } catch (err) {
    process.stderr.write(`warbler generate: ${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const targets = [values.out !== undefined, values.clickhouse, values.kafka].filter(Boolean).length;
  if (targets !== 1) {
    process.stderr.write(`warbler generate: choose exactly one of --out, --clickhouse, --kafka\n\n${USAGE}`);
    return 2;
  }

  const problems: string[] = [];
  const num = (name: string, text: string | undefined): number | undefined => {
    if (text === undefined) return undefined;
    const n = Number(text);
    if (text.trim() === '' || !Number.isFinite(n)) problems.push(`--${name}: not a number: ${JSON.stringify(text)}`);
    return n;
  };
  let end = Math.floor(Date.now() / 3_600_000) * 3_600_000;
  if (values.end !== undefined) {
    end = Date.parse(values.end);
    if (!Number.isFinite(end) || !/(Z|[+-]\d\d:?\d\d)$/i.test(values.end)) problems.push(`--end: not an ISO 8601 instant with Z or an offset: ${JSON.stringify(values.end)}`);
  }
  const maxLagArg = num('max-lag', values['max-lag']);
  if (maxLagArg !== undefined && !(Number.isInteger(maxLagArg) && maxLagArg >= 0)) problems.push('--max-lag: a whole number >= 0');
  const options: GenerateOptions = {
    seed: values.seed,
    users: num('users', values.users),
    days: num('days', values.days),
    end,
    appId: values['app-id'],
    duplicateShare: num('duplicates', values.duplicates),
    invalidShare: num('invalid', values.invalid),
    eventIdShare: num('event-ids', values['event-ids']),
  };
  let resolved;
  try {
    if (problems.length === 0) resolved = resolveOptions(options);
  } catch (err) {
    if (!(err instanceof GenerateOptionsError)) throw err;
    problems.push(err.message);
  }
  if (problems.length > 0 || !resolved) {
    process.stderr.write(`warbler generate: ${problems.join('\n')}\n`);
    return 2;
  }

  let sink: EventSink;
  let closeClient: (() => Promise<void>) | undefined;
  if (values.kafka) {
    const cfg = loadConfig();
    const kafka = createKafka(cfg.kafkaBrokers, 'warbler-generate');
    const admin = kafka.admin();
    await admin.connect();
    const maxLag = maxLagArg!;
    const throttle = new LagThrottle(admin, cfg.WARBLER_CONSUMER_GROUP, cfg.WARBLER_EVENTS_TOPIC, maxLag);
    const producer = createEventProducer(kafka, cfg.WARBLER_EVENTS_TOPIC);
    sink = new KafkaSink(producer, {
      appId: resolved.appId,
      afterBatch: (sent) => (maxLag > 0 && sent % 50_000 < 5000 ? throttle.waitForRoom() : Promise.resolve()),
    });
    // Also on failure: an open producer connection would keep the process alive.
    closeClient = async () => {
      await producer.close().catch(() => undefined);
      await admin.disconnect();
    };
  } else if (values.clickhouse) {
    const ch = clickhouseFromConfig(loadConfig());
    await migrate(ch);
    sink = new ClickHouseSink(ch);
    closeClient = () => ch.close();
  } else {
    sink = NdjsonSink.toFile(values.out!);
  }

  const progress = new Progress(resolved.users);
  const counts = { valid: 0, duplicate: 0, invalid: 0 };
  const started = performance.now();
  try {
    for (const rec of generateEvents(options)) {
      const wait = sink.write(rec);
      if (wait) await wait;
      counts[rec.kind]++;
      progress.tick(rec);
    }
    await sink.close();
  } finally {
    progress.done();
    await closeClient?.();
  }
  const seconds = (performance.now() - started) / 1000;
  const records = counts.valid + counts.duplicate + counts.invalid;
  log.info('generate done', {
    seed: resolved.seed,
    users: resolved.users,
    days: resolved.days,
    end: new Date(resolved.endMs).toISOString(),
    app_id: resolved.appId,
    target: values.clickhouse ? 'clickhouse' : values.kafka ? 'kafka' : values.out,
    records,
    ...counts,
    seconds: +seconds.toFixed(2),
    records_per_s: Math.round(records / seconds),
  });
  return 0;
}

/** A progress line on stderr about once a second (rewritten in place on a terminal). */
class Progress {
  private records = 0;
  private readonly start = performance.now();
  private last = this.start;
  private readonly tty = process.stderr.isTTY === true;

  constructor(private readonly users: number) {}

  private user = 0;

  tick(rec: DemoRecord): void {
    this.user = rec.user + 1;
    if ((++this.records & 0x3fff) !== 0) return;
    const now = performance.now();
    if (now - this.last < (this.tty ? 1000 : 5000)) return;
    this.last = now;
    this.print(this.user, now);
  }

  done(): void {
    this.print(this.user, performance.now());
    if (this.tty) process.stderr.write('\n');
  }

  private print(user: number, now: number): void {
    const rate = Math.round(this.records / ((now - this.start) / 1000 || 1));
    const line = `generate: ${this.records.toLocaleString('en-US')} records, user ${user.toLocaleString('en-US')}/${this.users.toLocaleString('en-US')}, ${rate.toLocaleString('en-US')}/s`;
    process.stderr.write(this.tty ? `\r${line}` : `${line}\n`);
  }
}

/**
 * Pauses production while the ingest consumer group lags more than `maxLag`
 * messages behind the topic. Gives up with a clear error when the lag does
 * not move for a minute: nobody is consuming, and producing on would only
 * make a small broker drop data.
 */
class LagThrottle {
  constructor(
    private readonly admin: Admin,
    private readonly group: string,
    private readonly topic: string,
    private readonly maxLag: number,
  ) {}

  async lag(): Promise<number> {
    const [ends, committed] = await Promise.all([
      this.admin.fetchTopicOffsets(this.topic),
      this.admin.fetchOffsets({ groupId: this.group, topics: [this.topic] }),
    ]);
    const done = new Map((committed[0]?.partitions ?? []).map((p) => [p.partition, Number(p.offset)]));
    let lag = 0;
    for (const p of ends) lag += Number(p.high) - Math.max(done.get(p.partition) ?? -1, Number(p.low));
    return lag;
  }

  async waitForRoom(): Promise<void> {
    let lag = await this.lag();
    let last = lag;
    let stuckSince = performance.now();
    while (lag > this.maxLag) {
      await new Promise((r) => setTimeout(r, 250));
      lag = await this.lag();
      if (lag < last) {
        last = lag;
        stuckSince = performance.now();
      } else if (performance.now() - stuckSince > 60_000) {
        throw new Error(
          `consumer group ${this.group} is not draining ${this.topic} (lag ${lag}); start \`warbler ingest\`, or pass --max-lag 0 to produce without waiting`,
        );
      }
    }
  }
}
