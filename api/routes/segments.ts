// Segments: evaluate and explain an expression, and the saved-segment CRUD.
import type { Expr } from '../../segments/ast.ts';
import { fromJson } from '../../segments/json-form.ts';
import { printSegment } from '../../segments/print.ts';
import { formatPath } from '../../segments/errors.ts';
import { isoSeconds } from '../../lib/instant.ts';
import { evaluateSegment, prepareSegment } from '../../segments/evaluate.ts';
import { createSegment, deleteSegment, getSegment, listSegments, updateSegment, type SegmentRecord } from '../../segments/saved.ts';
import type { AppContext } from '../app.ts';
import { route } from './route.ts';
import { notFound } from '../problem.ts';
import { ExplainBodySchema, ExplainResultSchema, EvaluateBodySchema, EvaluateResultSchema, SegmentBodySchema, SegmentListSchema, SegmentPathSchema, SegmentRecordSchema } from '../schemas.ts';

/**
 * A request's expression as the segment modules take it: text as given (the
 * parser reports line and column), an object read strictly as the JSON form.
 * The modules also take an internal AST (any object with a `kind`), which a
 * request must never reach: unknown keys would pass, malformed nodes throw.
 */
export function requestExpression(input: string | Record<string, unknown>): string | Expr {
  return typeof input === 'string' ? input : fromJson(input);
}

export function segmentView(r: SegmentRecord) {
  return {
    id: r.id,
    name: r.name,
    description: r.description,
    expression: r.expression,
    text: printSegment(r.expr),
    updated_at: r.updated_at,
    version: r.version,
  };
}

export function segmentRoutes(ctx: AppContext) {
  return [
    route(
      {
        method: 'post',
        path: '/v1/segments/evaluate',
        operationId: 'evaluateSegment',
        summary: 'Count the members of an expression at as_of and list the first `limit` by user_id',
        tag: 'segments',
        role: 'read',
        body: EvaluateBodySchema,
        response: { status: 200, description: 'count and users', schema: EvaluateResultSchema },
        problems: [504],
      },
      async ({ ch, appId, body }) =>
        evaluateSegment(ch, appId, requestExpression(body.expression), { asOf: body.as_of, limit: body.limit, fields: body.fields, jobClient: ctx.ch }),
    ),
    route(
      {
        method: 'post',
        path: '/v1/segments/explain',
        operationId: 'explainSegment',
        summary: 'The generated ClickHouse query, and how many users of the universe match each node of the expression (the body of evaluate; limit and fields are validated, not used)',
        tag: 'segments',
        role: 'read',
        body: ExplainBodySchema,
        response: { status: 200, description: 'query and per-node counts', schema: ExplainResultSchema },
        problems: [504],
      },
      async ({ ch, appId, body }) => {
        const p = await prepareSegment(ch, appId, requestExpression(body.expression), body.as_of, { jobClient: ctx.ch });
        const row = (await ch.one<Record<string, string | number>>(p.compiled.nodeCounts)) ?? {};
        const nodes = p.compiled.nodes.map((n) => ({
          path: formatPath(n.path) || '$',
          expression: printSegment(n.node),
          count: Number(row[n.column] ?? 0),
        }));
        return {
          as_of: isoSeconds(p.asOf),
          profiles_as_of: p.profilesAsOf ? isoSeconds(p.profilesAsOf) : null,
          expression: printSegment(p.expr),
          universe: Number(row.universe ?? 0),
          count: nodes[0]?.count ?? 0,
          query: p.compiled.members.text,
          nodes,
        };
      },
    ),
    route(
      {
        method: 'post',
        path: '/v1/segments',
        operationId: 'createSegment',
        summary: 'Save a segment (name unique per app)',
        tag: 'segments',
        role: 'admin',
        body: SegmentBodySchema,
        response: { status: 201, description: 'the saved segment', schema: SegmentRecordSchema },
        problems: [409],
      },
      async ({ ch, appId, body }) => segmentView(await createSegment(ch, appId, { ...body, expression: requestExpression(body.expression) })),
    ),
    route(
      {
        method: 'get',
        path: '/v1/segments',
        operationId: 'listSegments',
        summary: 'The app\'s saved segments, by name',
        tag: 'segments',
        role: 'read',
        response: { status: 200, description: 'the segments', schema: SegmentListSchema },
      },
      async ({ ch, appId }) => ({ segments: (await listSegments(ch, appId)).map(segmentView) }),
    ),
    route(
      {
        method: 'get',
        path: '/v1/segments/{id}',
        operationId: 'getSegment',
        summary: 'One saved segment, by id or name',
        tag: 'segments',
        role: 'read',
        params: SegmentPathSchema,
        response: { status: 200, description: 'the segment', schema: SegmentRecordSchema },
        problems: [404],
      },
      async ({ ch, appId, params }) => {
        const r = await getSegment(ch, appId, params.id);
        if (!r) throw notFound(`segment ${JSON.stringify(params.id)}`);
        return segmentView(r);
      },
    ),
    route(
      {
        method: 'put',
        path: '/v1/segments/{id}',
        operationId: 'updateSegment',
        summary:
          'Replace a saved segment\'s name, expression and description, by id or name; a rename is refused (409) while other segments use the old name (a reference by id follows a rename)',
        tag: 'segments',
        role: 'admin',
        params: SegmentPathSchema,
        body: SegmentBodySchema,
        response: { status: 200, description: 'the segment', schema: SegmentRecordSchema },
        problems: [404, 409],
      },
      async ({ ch, appId, params, body }) =>
        segmentView(await updateSegment(ch, appId, params.id, { ...body, expression: requestExpression(body.expression) })),
    ),
    route(
      {
        method: 'delete',
        path: '/v1/segments/{id}',
        operationId: 'deleteSegment',
        summary: 'Delete a saved segment, by id or name (refused with 409 while another segment uses it)',
        tag: 'segments',
        role: 'admin',
        params: SegmentPathSchema,
        response: { status: 204, description: 'deleted' },
        problems: [404, 409],
      },
      async ({ ch, appId, params, c }) => {
        await deleteSegment(ch, appId, params.id);
        return c.body(null, 204);
      },
    ),
  ];
}
