// Liveness, metrics and the OpenAPI document. Only the health check needs no
// key (load balancers probe it); the document takes any valid key, and the
// metrics an admin key, since their counters span every app.
import { z } from 'zod';
import type { AppContext } from '../app.ts';
import { route } from './route.ts';
import { openApiDocument } from '../openapi.ts';

const HealthSchema = z
  .object({
    status: z.enum(['ok', 'degraded']),
    clickhouse: z.object({ ok: z.boolean(), error: z.string().optional() }),
    kafka: z.object({ ok: z.boolean(), error: z.string().optional() }),
  })
  .meta({ id: 'Health' });

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

async function kafkaReachable(ctx: AppContext): Promise<{ ok: boolean; error?: string }> {
  if (!ctx.kafka) return { ok: false, error: 'no Kafka client configured' };
  const admin = ctx.kafka.admin();
  try {
    await withTimeout(
      (async () => {
        await admin.connect();
        const cluster = await admin.describeCluster();
        if (cluster.brokers.length === 0) throw new Error('no brokers in the cluster metadata');
      })(),
      3000,
      'Kafka',
    );
    return { ok: true };
  } catch (e) {
    return { ok: false, error: (e as Error).message };
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
}

export function systemRoutes(ctx: AppContext) {
  let doc: Record<string, unknown> | undefined;
  return [
    route(
      {
        method: 'get',
        path: '/healthz',
        operationId: 'health',
        summary: 'Liveness and ClickHouse/Kafka reachability (503 with the same object when either is unreachable)',
        tag: 'system',
        role: null,
        response: { status: 200, description: 'both reachable', schema: HealthSchema },
        otherResponses: [{ status: 503, description: 'ClickHouse or Kafka unreachable (status "degraded"; each part says which)', schema: HealthSchema }],
      },
      async ({ c }) => {
        const [chOk, kafka] = await Promise.all([
          withTimeout(ctx.ch.ping(), 3000, 'ClickHouse').then(
            (ok) => (ok ? { ok } : { ok, error: 'ping failed' }),
            (e: Error) => ({ ok: false, error: e.message }),
          ),
          kafkaReachable(ctx),
        ]);
        const body = HealthSchema.parse({ status: chOk.ok && kafka.ok ? 'ok' : 'degraded', clickhouse: chOk, kafka });
        return c.json(body, body.status === 'ok' ? 200 : 503);
      },
    ),
    route(
      {
        method: 'get',
        path: '/metrics',
        operationId: 'metrics',
        summary: 'Prometheus text metrics (request latency per route, ingest, jobs) of the whole process, every app: needs an admin key',
        tag: 'system',
        role: 'admin',
        response: { status: 200, description: 'Prometheus text format 0.0.4', media: { 'text/plain; version=0.0.4': { description: 'metrics' } } },
      },
      ({ c }) => c.body(ctx.metrics.render(), 200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' }),
    ),
    route(
      {
        method: 'get',
        path: '/openapi.json',
        operationId: 'openapi',
        summary: 'This API as an OpenAPI 3.1 document, generated from the schemas that validate requests (any valid key)',
        tag: 'system',
        role: 'any',
        response: { status: 200, description: 'the document', media: { 'application/json': { description: 'OpenAPI 3.1' } } },
      },
      ({ c }) => {
        doc ??= openApiDocument(ctx.routes, { title: 'Warbler API', version: '1.0.0' });
        return c.json(doc);
      },
    ),
  ];
}
