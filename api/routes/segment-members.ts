// The members of a saved segment: streamed exports and snapshots.
import { latestAssignmentsSql } from '../../profiles/clusters-job.ts';
import { currentTagsSql } from '../../profiles/tags.ts';
import { currentTraitsSql, typedTraitValue } from '../../profiles/traits.ts';
import { LIVE_TRAIT_FIELDS } from '../../segments/compile.ts';
import { isReturnableField, prepareSegment } from '../../segments/evaluate.ts';
import { profileField } from '../../segments/fields.ts';
import { getSegment, type SegmentRecord } from '../../segments/saved.ts';
import { isoSeconds } from '../../lib/instant.ts';
import { createSnapshot, getSnapshot, snapshotMembersPage } from '../../segments/snapshots.ts';
import type { ClickHouse } from '../../lib/clickhouse.ts';
import type { AppContext } from '../app.ts';
import { route } from './route.ts';
import { EXPORT_CONTENT_TYPES, membersWithFields, profileColumns, startExport, type FieldCatalog } from '../export.ts';
import { dropLiveRows, liveRowsOfMissing } from '../../profiles/job.ts';
import { notFound, ProblemError } from '../problem.ts';
import {
  ExportQuerySchema,
  SegmentPathSchema,
  SnapshotBodySchema,
  SnapshotPageQuerySchema,
  SnapshotPageSchema,
  SnapshotPathSchema,
  SnapshotSchema,
} from '../schemas.ts';

const catalog: FieldCatalog = {
  profileField: (name) => profileField(name),
  liveTraitFields: LIVE_TRAIT_FIELDS,
  currentTraitsSql: (appId, asOf) => currentTraitsSql(appId, asOf),
  currentTagsSql: (appId) => currentTagsSql(appId),
  clusterAssignmentsSql: latestAssignmentsSql,
  typedTraitValue,
};

async function savedSegment(ch: ClickHouse, appId: string, ref: string): Promise<SegmentRecord> {
  const r = await getSegment(ch, appId, ref);
  if (!r) throw notFound(`segment ${JSON.stringify(ref)}`);
  return r;
}

const encodeCursor = (userId: string) => Buffer.from(userId, 'utf8').toString('base64url');
const utf8 = new TextDecoder('utf-8', { fatal: true });
/** The user_id a cursor of encodeCursor's holds; a 400 for any other text (a mistyped cursor read as the end of the list). */
function decodeCursor(cursor: string): string {
  const bad = () => new ProblemError(400, 'cursor is not one this API handed out', { errors: [{ path: 'query.cursor', message: 'invalid cursor' }] });
  if (!/^[A-Za-z0-9_-]+$/.test(cursor)) throw bad();
  const bytes = Buffer.from(cursor, 'base64url');
  let userId: string;
  try {
    userId = utf8.decode(bytes);
  } catch {
    throw bad();
  }
  if (encodeCursor(userId) !== cursor) throw bad();
  return userId;
}

export function segmentMemberRoutes(ctx: AppContext) {
  return [
    route(
      {
        method: 'get',
        path: '/v1/segments/{id}/users',
        operationId: 'exportSegmentUsers',
        summary: 'Every member of a saved segment at as_of, streamed in user_id order (NDJSON, CSV or Arrow IPC stream)',
        tag: 'segments',
        role: 'read',
        params: SegmentPathSchema,
        query: ExportQuerySchema,
        response: {
          status: 200,
          description: 'the members, streamed in constant memory',
          media: {
            [EXPORT_CONTENT_TYPES.ndjson]: { description: 'one JSON object per line: user_id and the requested fields' },
            [EXPORT_CONTENT_TYPES.csv]: { description: 'RFC 4180 CSV with a header row' },
            [EXPORT_CONTENT_TYPES.arrow]: { description: 'Apache Arrow IPC stream, record batches of up to 65,536 rows' },
          },
        },
        problems: [404, 504],
      },
      async ({ ch, appId, params, query }) => {
        const fields = query.fields ?? [];
        fields.forEach((f, i) => {
          if (f !== 'user_id' && !isReturnableField(f)) {
            throw new ProblemError(400, `unknown profile field ${JSON.stringify(f)}`, { errors: [{ path: `query.fields.${i}`, message: 'unknown profile field' }] });
          }
        });
        const seg = await savedSegment(ch, appId, params.id);
        const p = await prepareSegment(ch, appId, seg.expr, query.as_of, { fields, jobClient: ctx.ch });
        const unique = [...new Set(fields)];
        // Members the run does not hold (their first events came after it, or were
        // stored after it was built) get their profile fields computed as GET
        // /v1/users computes them, into a table the export drops when it ends.
        const live =
          p.profileRunId && profileColumns(unique, catalog).length > 0
            ? await liveRowsOfMissing(ctx.ch, appId, { members: p.compiled.members, run: { run_id: p.profileRunId, layer: p.profileLayer }, asOf: p.asOf })
            : undefined;
        const source = membersWithFields(
          { appId, asOf: p.asOf, members: p.compiled.members, profileRunId: p.profileRunId, profileLayer: p.profileLayer, fields: unique, liveRows: live },
          catalog,
        );
        // The app-wide client: the export manages its own query id and kills it if the client leaves.
        const exp = await startExport(ctx.ch, source, query.format, {
          timeoutS: ctx.limits.exportTimeoutS,
          arrowBatchRows: ctx.limits.arrowBatchRows,
          ...(live ? { onEnd: () => dropLiveRows(ctx.ch, live) } : {}),
        });
        return new Response(exp.body, {
          status: 200,
          headers: {
            'content-type': exp.contentType,
            'x-warbler-as-of': isoSeconds(p.asOf),
            'x-warbler-segment-id': seg.id,
            'cache-control': 'no-store',
          },
        });
      },
    ),
    route(
      {
        method: 'post',
        path: '/v1/segments/{id}/snapshots',
        operationId: 'createSnapshot',
        summary: 'Materialise the members at as_of; publish entered/exited against the previous snapshot to Kafka',
        tag: 'snapshots',
        role: 'admin',
        params: SegmentPathSchema,
        body: SnapshotBodySchema,
        optionalBody: true,
        response: { status: 201, description: 'the snapshot with its counts', schema: SnapshotSchema },
        problems: [404, 503],
      },
      async ({ ch, appId, params, body }) => {
        const seg = await savedSegment(ch, appId, params.id);
        const p = await prepareSegment(ch, appId, seg.expr, body.as_of, { jobClient: ctx.ch });
        const s = await createSnapshot(ctx.ch, ctx.producer, {
          appId,
          segmentId: seg.id,
          asOf: p.asOf,
          members: p.compiled.members,
          topic: ctx.config.WARBLER_MEMBERSHIP_TOPIC,
          batchSize: ctx.limits.publishBatch,
          timeoutS: ctx.limits.exportTimeoutS,
        });
        return {
          snapshot_id: s.snapshot_id,
          segment_id: s.segment_id,
          as_of: isoSeconds(s.as_of),
          created_at: isoSeconds(s.created_at),
          count: s.count,
          entered: s.entered,
          exited: s.exited,
          previous_snapshot_id: s.previous_snapshot_id,
        };
      },
    ),
    route(
      {
        method: 'get',
        path: '/v1/segments/{id}/snapshots/{snapshot_id}/users',
        operationId: 'snapshotUsers',
        summary: 'A page of one snapshot\'s members in user_id order; follow next_cursor',
        tag: 'snapshots',
        role: 'read',
        params: SnapshotPathSchema,
        query: SnapshotPageQuerySchema,
        response: { status: 200, description: 'one page', schema: SnapshotPageSchema },
        problems: [404],
      },
      async ({ ch, appId, params, query }) => {
        // A snapshot outlives edits of its segment; look it up by the id given, or by the segment named so.
        const segmentId = (await getSegment(ch, appId, params.id))?.id ?? params.id;
        const snap = await getSnapshot(ch, appId, segmentId, params.snapshot_id);
        if (!snap) throw notFound(`snapshot ${JSON.stringify(params.snapshot_id)} of segment ${JSON.stringify(params.id)}`);
        const after = query.cursor ? decodeCursor(query.cursor) : null;
        const page = await snapshotMembersPage(ch, appId, segmentId, snap.snapshot_id, after, query.limit);
        return {
          snapshot_id: snap.snapshot_id,
          segment_id: segmentId,
          as_of: isoSeconds(snap.as_of),
          count: snap.count,
          users: page.user_ids.map((user_id) => ({ user_id })),
          next_cursor: page.next === null ? null : encodeCursor(page.next),
        };
      },
    ),
  ];
}
