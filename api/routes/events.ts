// POST /v1/events: a thin adapter over ingest/accept.ts, which validates each
// event, answers per item, and produces the accepted ones to Kafka (acks -1)
// before we answer 202.
import { z } from 'zod';
import { acceptEvents, MAX_BATCH_EVENTS, MAX_BODY_BYTES } from '../../ingest/accept.ts';
import { EventSchema, isPlainObject } from '../../ingest/event-schema.ts';
import type { EventProducer } from '../../ingest/producer.ts';
import type { AppContext } from '../app.ts';
import { route } from './route.ts';
import { documentedAs } from '../openapi.ts';
import { ProblemError } from '../problem.ts';

const FieldErrorSchema = z.object({ path: z.string(), message: z.string() });

// Items are validated one by one by the ingest path (a bad item must not sink
// the batch), so the body is only "a JSON object" here; the document shows the real shape.
// z.custom hands the parsed object on as it is: z.record would copy it, and its
// copy turns a "__proto__" key into the copy's prototype — an unknown field
// silently dropped instead of rejected as the event schema rejects it.
const EventsBodySchema = documentedAs(
  z.custom<Record<string, unknown>>(isPlainObject, { error: 'an event object or {"batch": [events]}' }),
  z.union([EventSchema, z.strictObject({ batch: z.array(EventSchema).min(1).max(MAX_BATCH_EVENTS) })]).meta({ id: 'EventsRequest' }),
);

const EventsAcceptedSchema = z
  .object({
    accepted: z.number().int().min(0).meta({ description: 'events produced to Kafka; 0 when every item of a batch was rejected' }),
    rejected: z
      .array(z.object({ index: z.number().int().min(0), errors: z.array(FieldErrorSchema).meta({ description: 'paths relative to the item' }) }))
      .meta({ description: 'every rejected item of the batch, by its index, with its reasons' }),
  })
  .meta({ id: 'EventsAccepted' });

export const KAFKA_UNREACHABLE = 'Kafka is unreachable; events are not accepted; retry';

/** Refuses to produce (503) while the app's Kafka producers have not connected, rather than wait on them. */
function gated(events: EventProducer, connected: () => boolean): EventProducer {
  return {
    topic: events.topic,
    send: (messages) => (connected() ? events.send(messages) : Promise.reject(new ProblemError(503, KAFKA_UNREACHABLE))),
    close: () => events.close(),
  };
}

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
        response: {
          status: 202,
          description:
            'accepted: every valid event was produced to Kafka; a batch lists each rejected item with its reasons (also when none was valid). A single invalid event is a 400 problem.',
          schema: EventsAcceptedSchema,
        },
        problems: [413, 503],
      },
      async ({ appId, body }) => {
        if (!ctx.events) throw new ProblemError(503, 'no Kafka producer for events is configured');
        const producer = ctx.kafkaConnected ? gated(ctx.events, ctx.kafkaConnected) : ctx.events;
        const r = await acceptEvents(producer, appId, body);
        if (r.status === 202) return { accepted: r.accepted, rejected: r.rejected };
        // A body-level problem, or the one event sent is invalid: its errors, at their place in the body.
        const errors = (r.errors ?? r.rejected.flatMap((x) => x.errors)).map((e) => ({ path: e.path ? `body.${e.path}` : 'body', message: e.message }));
        const detail = r.errors ? (r.errors[0]?.message ?? 'invalid body') : `the event is invalid: ${errors[0]?.path}: ${errors[0]?.message}`;
        throw new ProblemError(r.status, detail, { errors });
      },
    ),
  ];
}
