// POST /v1/events: a thin adapter over ingest/accept.ts, which validates each
// event, answers per item, and produces the accepted ones to Kafka (acks -1)
// before we answer 202.
import { z } from 'zod';
import { acceptEvents, MAX_BATCH_EVENTS, MAX_BODY_BYTES } from '../../ingest/accept.ts';
import { EventSchema } from '../../ingest/event-schema.ts';
import type { AppContext } from '../app.ts';
import { route } from './route.ts';
import { documentedAs } from '../openapi.ts';
import { ProblemError } from '../problem.ts';

const FieldErrorSchema = z.object({ path: z.string(), message: z.string() });

// Items are validated one by one by the ingest path (a bad item must not sink
// the batch), so the body is only "a JSON object" here; the document shows the real shape.
const EventsBodySchema = documentedAs(
  z.record(z.string(), z.unknown(), { error: 'an event object or {"batch": [events]}' }),
  z.union([EventSchema, z.strictObject({ batch: z.array(EventSchema).min(1).max(MAX_BATCH_EVENTS) })]).meta({ id: 'EventsRequest' }),
);

const EventsAcceptedSchema = z
  .object({
    accepted: z.number().int().min(1),
    rejected: z.array(z.object({ index: z.number().int(), errors: z.array(FieldErrorSchema) })),
  })
  .meta({ id: 'EventsAccepted' });

export function eventRoutes(ctx: AppContext) {
  return [
    route(
      {
        method: 'post',
        path: '/v1/events',
        operationId: 'sendEvents',
        summary: `Send one event or {"batch": [...]} of up to ${MAX_BATCH_EVENTS}; answered once produced to Kafka`,
        tag: 'events',
        role: 'ingest',
        body: EventsBodySchema,
        bodyLimit: MAX_BODY_BYTES,
        response: { status: 202, description: 'accepted (rejected items listed with their reasons)', schema: EventsAcceptedSchema },
        problems: [413, 503],
      },
      async ({ appId, body }) => {
        if (!ctx.events) throw new ProblemError(503, 'no Kafka producer for events is configured');
        const r = await acceptEvents(ctx.events, appId, body);
        if (r.status === 202) return { accepted: r.accepted, rejected: r.rejected };
        const errors = r.errors
          ? r.errors.map((e) => ({ path: e.path ? `body.${e.path}` : 'body', message: e.message }))
          : r.rejected.flatMap((x) => x.errors.map((e) => ({ path: `body${Array.isArray((body as { batch?: unknown }).batch) ? `.batch.${x.index}` : ''}${e.path ? '.' + e.path : ''}`, message: e.message })));
        const detail = r.errors ? (r.errors[0]?.message ?? 'invalid body') : `no event accepted: ${r.rejected.length} rejected`;
        throw new ProblemError(r.status, detail, { errors: errors.slice(0, 100) });
      },
    ),
  ];
}
