// The zod schemas of every request and answer of the API. Handlers are typed
// by them, the app validates with them, and api/openapi.ts publishes them, so
// the contract is written once. Event and segment shapes come from their own
// modules (ingest/event-schema.ts, segments/json-form.ts) rather than being
// redefined here.
import { z } from 'zod';
import { isPlainObject, parseIsoTimestamp } from '../ingest/event-schema.ts';
import { isReturnableField } from '../segments/evaluate.ts';
import { PropJsonSchema, SegmentJsonSchema } from '../segments/json-form.ts';
import { isStorableInstant } from '../lib/instant.ts';
import { documentedAs } from './openapi.ts';

const INSTANT_DESCRIPTION =
  'ISO 8601 instant with an offset or Z, in any of its forms: 2026-11-20T12:00:00Z, 2026-11-20T14:00:00+02:00 (+0200 and +02 too), ' +
  'basic 20261120T120000Z, ordinal 2026-324T12:00:00Z, week 2026-W47-5T12:00:00Z, minute or hour precision (2026-11-20T12:00Z, 2026-11-20T12Z), ' +
  'a fraction of the last unit given (2026-11-20T12.5Z is 12:30), 24:00 for the end of a day, lowercase t and z; ' +
  'fractions of a second are dropped (instants are whole seconds); ' +
  'from 1970-01-01T00:00:00Z to 2106-02-07T06:28:15Z, the range ClickHouse stores';


/**
 * An instant: ISO 8601 with an offset or `Z` (spec: requests accept any such
 * instant). Read by the event `ts` parser, so the API and events agree on
 * what an instant is; truncated to the second, as everything is stored.
 * Documented as a plain string: RFC 3339 `date-time` would refuse forms taken here.
 */
export const InstantSchema = z
  .string()
  .max(64)
  .transform((s, ctx) => {
    const ms = parseIsoTimestamp(s);
    if (ms === undefined) {
      ctx.addIssue({ code: 'custom', message: 'expected an ISO 8601 instant with an offset or Z, e.g. 2026-11-20T12:00:00Z' });
      return z.NEVER;
    }
    if (!isStorableInstant(ms)) {
      ctx.addIssue({ code: 'custom', message: 'expected an instant from 1970-01-01T00:00:00Z to 2106-02-07T06:28:15Z, the range ClickHouse stores' });
      return z.NEVER;
    }
    return new Date(ms);
  })
  .meta({ description: INSTANT_DESCRIPTION, examples: ['2026-11-20T12:00:00Z'] });

/** Timestamps in answers: ISO 8601 UTC at second precision. */
export const IsoUtcSchema = z.string().regex(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/, 'ISO 8601 UTC, seconds');

export const UserIdSchema = z.string().min(1).max(256);
export const TagSchema = z.string().min(1).max(128).meta({ description: 'a tag name (1..128 chars)' });
// An id or a name (SegmentRequest's name: up to 200 characters).
export const SegmentIdSchema = z.string().min(1).max(200);
export const SnapshotIdSchema = z.string().min(1).max(64);
export const JobIdSchema = z.string().min(1).max(128);

export const UserPathSchema = z.object({ user_id: UserIdSchema }).strict();
export const UserTagPathSchema = z.object({ user_id: UserIdSchema, tag: TagSchema }).strict();
export const TagPathSchema = z.object({ tag: TagSchema }).strict();
export const SegmentPathSchema = z.object({ id: SegmentIdSchema }).strict();
export const SnapshotPathSchema = z.object({ id: SegmentIdSchema, snapshot_id: SnapshotIdSchema }).strict();
export const JobPathSchema = z.object({ job_id: JobIdSchema }).strict();

// ---- clusters ----

export const ClusterModelSchema = z
  .object({
    version: z.number().int(),
    created_at: IsoUtcSchema,
    profile_run_id: z.string(),
    as_of: IsoUtcSchema.meta({ description: 'as_of of the profile run the model was trained on' }),
    k: z.number().int(),
    features: z.array(z.string()),
    centroids: z.array(z.array(z.number())).meta({ description: 'cluster c (1-based) is row c-1, in the features\' own units' }),
    sizes: z.array(z.number().int()),
    labels: z.array(z.string()),
    quality: z.object({
      inertia: z.number(),
      silhouette: z.number(),
      sample_size: z.number().int(),
      k_selection: z.array(z.object({ k: z.number().int(), silhouette: z.number() }).loose()).nullable(),
    }),
  })
  .meta({ id: 'ClusterModel' });

// ---- jobs ----

export const JobAcceptedSchema = z.object({ job_id: z.string() }).meta({ id: 'JobAccepted' });

export const ProfileJobBodySchema = z
  .object({ as_of: InstantSchema.optional(), mode: z.enum(['full', 'incremental']).optional() })
  .strict()
  .meta({ id: 'ProfileJobRequest' });

export const ClusterJobBodySchema = z
  .object({
    k: z.union([z.number().int().min(2).max(50), z.literal('auto')]).optional(),
    features: z.array(z.string().min(1)).min(1).max(32).optional(),
    as_of: InstantSchema.optional(),
  })
  .strict()
  .meta({ id: 'ClusterJobRequest' });

export const JobSchema = z
  .object({
    job_id: z.string(),
    kind: z.string(),
    state: z.enum(['queued', 'running', 'succeeded', 'failed']),
    progress: z.number().min(0).max(1),
    error: z.string().optional(),
    result: z.unknown().optional(),
    params: z.unknown().optional(),
    created_at: IsoUtcSchema,
  })
  .meta({ id: 'Job' });

// ---- snapshots and exports ----

export const SnapshotSchema = z
  .object({
    snapshot_id: z.string(),
    segment_id: z.string(),
    as_of: IsoUtcSchema,
    created_at: IsoUtcSchema,
    count: z.number().int().min(0),
    entered: z.number().int().min(0),
    exited: z.number().int().min(0),
    previous_snapshot_id: z.string().nullable(),
  })
  .meta({ id: 'Snapshot' });

export const SnapshotBodySchema = z.object({ as_of: InstantSchema.optional() }).strict().meta({ id: 'SnapshotRequest' });

export const PAGE_MAX = 10_000;

export const SnapshotPageQuerySchema = z
  .object({
    cursor: z.string().max(1024).optional().meta({ description: 'next_cursor of the previous page' }),
    limit: z.coerce.number().int().min(1).max(PAGE_MAX).default(1000),
  })
  .strict();

export const SnapshotPageSchema = z
  .object({
    snapshot_id: z.string(),
    segment_id: z.string(),
    as_of: IsoUtcSchema,
    count: z.number().int(),
    users: z.array(z.object({ user_id: z.string() })),
    next_cursor: z.string().nullable().meta({ description: 'pass as `cursor` for the next page; null on the last page' }),
  })
  .meta({ id: 'SnapshotPage' });

/** `fields=a,b,c` in a query string. */
export const FieldListSchema = z
  .string()
  .max(2000)
  .transform((s) => s.split(',').map((x) => x.trim()).filter(Boolean))
  .meta({ description: 'comma-separated profile fields' });

export const ExportQuerySchema = z
  .object({
    format: z.enum(['ndjson', 'csv', 'arrow']).default('ndjson'),
    as_of: InstantSchema.optional(),
    fields: FieldListSchema.optional(),
  })
  .strict();

// ---- segments ----

// The JSON form's recursive schemas get stable names in the document.
if (!z.globalRegistry.has(SegmentJsonSchema)) z.globalRegistry.add(SegmentJsonSchema, { id: 'SegmentJson' });
if (!z.globalRegistry.has(PropJsonSchema)) z.globalRegistry.add(PropJsonSchema, { id: 'PropJson' });

/** The longest segment text, in UTF-8 bytes (segments.md: 16 KiB); the segment parser enforces it. */
export const MAX_EXPRESSION_BYTES = 16 * 1024;

/**
 * A segment in either form. Validated here only as "text or object": the
 * segment reader checks the rest and reports paths, and line/column for text —
 * an empty or blank text and one over MAX_EXPRESSION_BYTES included, which it
 * measures in bytes as segments.md does (a length check here would count
 * UTF-16 units and answer without a position). The request stays bounded by
 * the route's body limit. The JSON form is handed on as parsed (z.custom, not
 * z.record, whose copy turns a "__proto__" key into a prototype the reader
 * would never see), so an unknown key there is rejected too.
 */
export const ExpressionSchema = documentedAs(
  z.union([z.string(), z.custom<Record<string, unknown>>(isPlainObject)], {
    error: 'a segment expression: text (string) or JSON form (object)',
  }),
  z
    .union([
      z
        .string()
        .min(1)
        .max(MAX_EXPRESSION_BYTES)
        .meta({ description: `text form, at most ${MAX_EXPRESSION_BYTES} UTF-8 bytes, e.g. did(purchase, within 30d) and country = "CN"` }),
      SegmentJsonSchema,
    ])
    .meta({ description: 'a segment expression in the text form or the JSON form (segments.md)' }),
);

export const FieldNameSchema = z
  .string()
  .min(1)
  .max(200)
  .refine(isReturnableField, { error: (iss) => `unknown profile field ${JSON.stringify(iss.input)}` });

export const EvaluateBodySchema = z
  .object({
    expression: ExpressionSchema,
    as_of: InstantSchema.optional(),
    limit: z.number().int().min(0).max(10_000).default(100),
    fields: z.array(FieldNameSchema).max(64).optional().meta({ description: 'profile fields to return with each user' }),
  })
  .strict()
  .meta({ id: 'EvaluateRequest' });

/** The contract: explain takes the same body as evaluate (limit and fields are validated, then not used). */
export const ExplainBodySchema = EvaluateBodySchema;

export const EvaluateResultSchema = z
  .object({
    count: z.number().int().min(0),
    as_of: IsoUtcSchema,
    profiles_as_of: IsoUtcSchema.nullable().meta({
      description:
        'as_of of the profile run the profile fields come from. When the expression or the requested fields read a profile field: the request as_of when one is given (the run at that instant, built when missing), else the latest run (built at now when the app has none). Otherwise the latest run at or before as_of, or null when there is none',
    }),
    users: z.array(z.object({ user_id: z.string() }).catchall(z.unknown())).meta({ description: 'sorted by user_id' }),
  })
  .meta({ id: 'EvaluateResult' });

export const ExplainResultSchema = z
  .object({
    as_of: IsoUtcSchema,
    profiles_as_of: IsoUtcSchema.nullable(),
    expression: z.string().meta({ description: 'the canonical text form' }),
    universe: z.number().int().meta({ description: 'users of the app with an event at or before as_of' }),
    count: z.number().int().meta({ description: 'members (the root node)' }),
    query: z.string().meta({ description: 'the ClickHouse query that lists the members' }),
    nodes: z
      .array(z.object({ path: z.string(), expression: z.string(), count: z.number().int() }))
      .meta({ description: 'every node of the expression, root first ($), with the users of the universe it matches' }),
  })
  .meta({ id: 'ExplainResult' });

export const SegmentBodySchema = z
  .object({
    name: z.string().min(1).max(200),
    expression: ExpressionSchema,
    description: z.string().max(2000).optional(),
  })
  .strict()
  .meta({ id: 'SegmentRequest' });

export const SegmentRecordSchema = z
  .object({
    id: z.string(),
    name: z.string(),
    description: z.string(),
    expression: documentedAs(z.unknown(), SegmentJsonSchema).meta({ description: 'the canonical JSON form' }),
    text: z.string().meta({ description: 'the canonical text form' }),
    updated_at: IsoUtcSchema,
    version: z.number().int(),
  })
  .meta({ id: 'Segment' });

export const SegmentListSchema = z.object({ segments: z.array(SegmentRecordSchema) }).meta({ id: 'SegmentList' });

// ---- users, profiles, tags ----

const nullableNumber = z.number().nullable();
const nullableString = z.string().nullable();

export const TraitValueSchema = z.union([z.string(), z.number(), z.boolean()]);
const NamedTraitSchema = TraitValueSchema.nullable().meta({ description: 'the current trait of that name, typed as in `traits`; null when unset' });

export const ProfileSchema = z
  .object({
    user_id: z.string(),
    as_of: IsoUtcSchema.meta({ description: 'the instant the profile was computed at' }),
    first_seen: IsoUtcSchema,
    last_seen: IsoUtcSchema,
    events_total: z.number().int(),
    events_7d: z.number().int(),
    events_30d: z.number().int(),
    active_days_30d: z.number().int(),
    views_30d: z.number().int(),
    clicks_30d: z.number().int(),
    purchases_30d: z.number().int(),
    purchases_total: z.number().int(),
    revenue_total: z.number(),
    revenue_30d: z.number(),
    avg_order_value: nullableNumber,
    last_purchase_at: IsoUtcSchema.nullable(),
    recency_days: z.number().int().nullable(),
    r_score: z.number().int().min(1).max(5).nullable(),
    f_score: z.number().int().min(1).max(5).nullable(),
    m_score: z.number().int().min(1).max(5).nullable(),
    rfm_segment: nullableString,
    top_category: nullableString,
    best_hour: z.number().int().min(0).max(23).nullable(),
    // "the current trait of that name": as typed as in traits (identify may store a number or a boolean there).
    platform: NamedTraitSchema,
    country: NamedTraitSchema,
    timezone: NamedTraitSchema,
    locale: NamedTraitSchema,
    app_version: NamedTraitSchema,
    traits: z.record(z.string(), TraitValueSchema),
    tags: z.array(z.string()),
    cluster: z.number().int().nullable(),
    cluster_label: nullableString,
    random_bucket: z.number().int().min(0).max(9999),
  })
  .meta({ id: 'Profile' });

export const TagChangeSchema = z
  .object({ user_id: z.string(), tag: z.string(), present: z.boolean() })
  .meta({ id: 'TagChange' });

export const MAX_TAG_USERS = 100_000;

/**
 * The body limit POST /v1/tags/{tag}/users needs to take any valid body:
 * MAX_TAG_USERS ids of up to 256 UTF-16 units, each written by a JSON encoder
 * in at most 6 bytes (a control character as \u001f; other characters take at
 * most 3 bytes raw, or 6 escaped as \uXXXX), with quotes and a comma, in
 * `{"user_ids":[]}` — about 147 MiB. Reading stops there, so a body never
 * holds more.
 */
export const TAG_USERS_MAX_BODY_BYTES = MAX_TAG_USERS * (2 + 6 * 256 + 1) + '{"user_ids":[]}'.length;

export const TagUsersBodySchema = z
  .object({ user_ids: z.array(UserIdSchema).max(MAX_TAG_USERS) })
  .strict()
  .meta({ id: 'TagUsersRequest' });

export const TagUsersResultSchema = z.object({ tag: z.string(), users: z.number().int() }).meta({ id: 'TagUsersResult' });
