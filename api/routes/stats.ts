// GET /v1/stats: what is stored for the key's app, and how far ingest is behind.
import type { Kafka } from 'kafkajs';
import { z } from 'zod';
import { ingestStats } from '../../ingest/stats.ts';
import { raw, sql } from '../../lib/sql.ts';
import type { AppContext } from '../app.ts';
import { route } from './route.ts';

const StatsQuerySchema = z
  .object({
    days: z.coerce
      .number()
      .int()
      .min(1)
      .max(3660)
      .optional()
      .meta({ description: 'narrows events.by_day to the last `days` UTC days, ending today; default: every day that holds stored events' }),
  })
  .strict();

const StatsSchema = z
  .object({
    app_id: z.string(),
    events: z.object({
      total: z.number().int(),
      by_type: z.object({ track: z.number().int(), identify: z.number().int() }),
      by_day: z
        .array(z.object({ day: z.string(), track: z.number().int(), identify: z.number().int() }))
        .meta({ description: 'UTC days with events, oldest first: every such day unless `days` narrows it, so the days add up to `total`' }),
    }),
    users: z.number().int(),
    last_event_at: z.string().nullable().meta({ description: 'greatest event ts' }),
    last_received_at: z.string().nullable().meta({ description: 'when the latest INSERT that stored events of the app ran (events are stamped at each insert attempt)' }),
    ingest_lag: z.object({
      messages: z.number().int().nullable().meta({ description: 'events produced to Kafka but not yet stored (all apps); null when Kafka cannot be asked' }),
      topic: z.string(),
      consumer_group: z.string(),
      error: z.string().optional(),
    }),
    dead_lettered: z.number().int(),
    dead_lettered_by_reason: z.record(z.string(), z.number().int()),
  })
  .meta({ id: 'Stats' });

// DateTime values leave ClickHouse as epoch seconds or explicitly UTC, never
// in the server's zone: an external server need not run on UTC.
const iso = (epochSeconds: string | number) => new Date(Number(epochSeconds) * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');

/** Messages of the events topic beyond the ingest group's committed offsets. */
async function consumerLag(kafka: Kafka | undefined, topic: string, groupId: string): Promise<{ messages: number | null; error?: string }> {
  if (!kafka) return { messages: null, error: 'no Kafka client configured' };
  const admin = kafka.admin();
  let timer: NodeJS.Timeout | undefined;
  try {
    const work = (async () => {
      await admin.connect();
      const [ends, committed] = await Promise.all([admin.fetchTopicOffsets(topic), admin.fetchOffsets({ groupId, topics: [topic] })]);
      const done = new Map((committed[0]?.partitions ?? []).map((p) => [p.partition, Number(p.offset)]));
      let lag = 0;
      for (const p of ends) {
        const c = done.get(p.partition) ?? -1;
        // -1: the group never committed here; everything from the log start is pending.
        lag += Number(p.high) - (c >= 0 ? c : Number(p.low));
      }
      return lag;
    })();
    const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('Kafka did not answer within 3 s')), 3000)));
    return { messages: await Promise.race([work, timeout]) };
  } catch (e) {
    return { messages: null, error: (e as Error).message };
  } finally {
    clearTimeout(timer);
    await admin.disconnect().catch(() => undefined);
  }
}

export function statsRoutes(ctx: AppContext) {
  return [
    route(
      {
        method: 'get',
        path: '/v1/stats',
        operationId: 'getStats',
        summary: 'Events stored (by type and day), users, last event time, ingest lag, dead-lettered count',
        tag: 'stats',
        role: 'read',
        query: StatsQuerySchema,
        response: { status: 200, description: 'the app\'s figures', schema: StatsSchema },
      },
      async ({ ch, appId, query }) => {
        // Every day by default; with `days`, from the first UTC day of that window, at 00:00 UTC.
        const window =
          query.days === undefined ? raw('') : sql`AND ts >= ${new Date((Math.floor(Date.now() / 86_400_000) - (query.days - 1)) * 86_400_000)}`;
        const [totals, days, ingest, lag] = await Promise.all([
          ch.one<{ track: string; identify: string; users: string; last_ts: string; last_received: string; n: string }>(sql`
            SELECT countIf(type = 'track') AS track, countIf(type = 'identify') AS identify, uniqExact(user_id) AS users,
              toUInt32(max(ts)) AS last_ts, toUInt32(max(received_at)) AS last_received, count() AS n
            FROM events WHERE app_id = ${appId}`),
          // Days since 1970-01-01, named here: 18.16 writes day 0 as 0000-00-00.
          ch.rows<{ day: number; track: string; identify: string }>(sql`
            SELECT toUInt16(toDate(ts, 'UTC')) AS day, countIf(type = 'track') AS track, countIf(type = 'identify') AS identify
            FROM events WHERE app_id = ${appId} ${window}
            GROUP BY day ORDER BY day`),
          ingestStats(ch, appId),
          consumerLag(ctx.kafka, ctx.config.WARBLER_EVENTS_TOPIC, ctx.config.WARBLER_CONSUMER_GROUP),
        ]);
        const n = Number(totals?.n ?? 0);
        return {
          app_id: appId,
          events: {
            total: n,
            by_type: { track: Number(totals?.track ?? 0), identify: Number(totals?.identify ?? 0) },
            by_day: days.map((d) => ({ day: new Date(Number(d.day) * 86_400_000).toISOString().slice(0, 10), track: Number(d.track), identify: Number(d.identify) })),
          },
          users: Number(totals?.users ?? 0),
          last_event_at: n > 0 && totals ? iso(totals.last_ts) : null,
          last_received_at: n > 0 && totals ? iso(totals.last_received) : null,
          ingest_lag: { ...lag, topic: ctx.config.WARBLER_EVENTS_TOPIC, consumer_group: ctx.config.WARBLER_CONSUMER_GROUP },
          dead_lettered: ingest.dead_lettered,
          dead_lettered_by_reason: ingest.dead_lettered_by_reason,
        };
      },
    ),
  ];
}
