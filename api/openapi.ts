// Routes are declared once, as data: method, path, role and the zod schemas of
// their parameters, body and answers. The app mounts them (validating with the
// same schemas) and this module turns the same declarations into the OpenAPI
// 3.1 document, so the document cannot drift from what the server enforces.
import type { Context } from 'hono';
import { z } from 'zod';
import type { ClickHouse } from '../lib/clickhouse.ts';
import type { ApiKey, Role } from './auth.ts';
import { PROBLEM_CONTENT_TYPE, ProblemSchema } from './problem.ts';

export type Method = 'get' | 'post' | 'put' | 'delete';

export interface ResponseSpec {
  status: number;
  description: string;
  /** JSON body schema; absent for non-JSON or empty answers. */
  schema?: z.ZodType;
  /** Other media types this answer can take (streaming exports), with a description each. */
  media?: Record<string, { description: string; schema?: Record<string, unknown> }>;
}

export interface RouteSpec<
  P extends z.ZodType = z.ZodType,
  Q extends z.ZodType = z.ZodType,
  B extends z.ZodType = z.ZodType,
> {
  method: Method;
  /** OpenAPI-style path: `/v1/users/{user_id}`. */
  path: string;
  operationId: string;
  summary: string;
  tag: string;
  /** The role a key needs; 'any' = any valid key; null = no key (only the health check). */
  role: Role | 'any' | null;
  params?: P;
  query?: Q;
  body?: B;
  /** An absent or empty body reads as `{}`. */
  optionalBody?: boolean;
  /** Largest accepted body in bytes (default: the app's). */
  bodyLimit?: number;
  response: ResponseSpec;
  /** Other non-problem answers (e.g. the health check's 503 carries the health object). */
  otherResponses?: ResponseSpec[];
  /** Error statuses worth documenting besides the generic 400/401/403/500. */
  problems?: number[];
}

type Out<S> = S extends z.ZodType ? z.output<S> : undefined;

export interface HandlerInput<P, Q, B, D> {
  params: Out<P>;
  query: Out<Q>;
  body: Out<B>;
  /** The authenticated key (undefined only on routes with role null). */
  key: ApiKey;
  /** The app of the key: every read and write is scoped to it. */
  appId: string;
  /** Aborted when the client goes away. */
  signal: AbortSignal;
  /** ClickHouse for this request: queries are time-limited and killed when the client goes away. */
  ch: ClickHouse;
  c: Context;
  deps: D;
}

export type Handler<P, Q, B, D> = (input: HandlerInput<P, Q, B, D>) => Promise<unknown> | unknown;

export interface Route<D = unknown> {
  spec: RouteSpec;
  handler: Handler<any, any, any, D>;
}

/** A `route` declarer for handlers whose `deps` are D; each route's input is typed by its spec's schemas. */
export function routeFor<D>() {
  return <P extends z.ZodType | undefined = undefined, Q extends z.ZodType | undefined = undefined, B extends z.ZodType | undefined = undefined>(
    spec: Omit<RouteSpec, 'params' | 'query' | 'body'> & { params?: P; query?: Q; body?: B },
    handler: Handler<P, Q, B, D>,
  ): Route<D> => ({ spec: spec as RouteSpec, handler: handler as Handler<any, any, any, D> });
}

/**
 * Schemas that validate loosely (so a richer validator downstream can report
 * better errors, e.g. segment text with line and column) but are documented
 * as a precise schema.
 */
const documented = new WeakMap<z.ZodType, z.ZodType>();
export function documentedAs<S extends z.ZodType>(schema: S, doc: z.ZodType): S {
  documented.set(schema, doc);
  return schema;
}

let anonymous = 0;

function jsonSchema(schema: z.ZodType, io: 'input' | 'output', defs: Record<string, unknown>): Record<string, unknown> {
  const doc = z.toJSONSchema(schema, {
    io,
    unrepresentable: 'any',
    target: 'draft-2020-12',
    override: (c) => {
      const replacement = documented.get(c.zodSchema as unknown as z.ZodType);
      if (!replacement) return;
      const js = jsonSchema(replacement, io, defs);
      for (const k of Object.keys(c.jsonSchema)) delete (c.jsonSchema as Record<string, unknown>)[k];
      Object.assign(c.jsonSchema, js);
    },
  }) as Record<string, unknown>;
  delete doc.$schema;
  const local = (doc.$defs as Record<string, unknown> | undefined) ?? {};
  delete doc.$defs;
  // Named schemas (`.meta({id})`) become shared components; unnamed recursive
  // ones (zod's __schemaN) get names unique in the document.
  const names = new Map<string, string>();
  for (const name of Object.keys(local)) names.set(name, name.startsWith('__schema') ? `Anonymous${++anonymous}` : name);
  const rewrite = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(rewrite);
    if (v && typeof v === 'object') {
      const o: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) {
        if (k === '$ref' && typeof x === 'string' && x.startsWith('#/$defs/')) {
          const name = x.slice('#/$defs/'.length);
          o[k] = `#/components/schemas/${names.get(name) ?? name}`;
        } else o[k] = rewrite(x);
      }
      return o;
    }
    return v;
  };
  for (const [name, s] of Object.entries(local)) defs[names.get(name) as string] ??= rewrite(s);
  return rewrite(doc) as Record<string, unknown>;
}

function parameters(schema: z.ZodType | undefined, where: 'path' | 'query', defs: Record<string, unknown>): unknown[] {
  if (!schema) return [];
  const js = jsonSchema(schema, 'input', defs);
  const props = (js.properties ?? {}) as Record<string, Record<string, unknown>>;
  const required = new Set((js.required as string[] | undefined) ?? []);
  return Object.entries(props).map(([name, s]) => {
    const { description, ...rest } = s;
    return { name, in: where, required: where === 'path' || required.has(name), ...(description ? { description } : {}), schema: rest };
  });
}

const GENERIC_PROBLEMS: Record<number, string> = {
  400: 'invalid input (problem+json with `errors`)',
  401: 'missing or unknown API key',
  403: 'the key lacks the required role',
  404: 'not found in the key\'s app',
  409: 'conflict',
  413: 'body too large (past the route\'s limit, or the server\'s)',
  415: 'a body that is not JSON (its Content-Type is not application/json)',
  500: 'server error',
  501: 'not available in this build',
  503: 'a backing service is unreachable',
  504: 'the query ran past its time limit and was cancelled in ClickHouse',
};

export function openApiDocument(routes: readonly Route<any>[], info: { title: string; version: string }): Record<string, unknown> {
  const defs: Record<string, unknown> = {};
  const paths: Record<string, Record<string, unknown>> = {};
  for (const { spec } of routes) {
    const op: Record<string, unknown> = {
      operationId: spec.operationId,
      summary: spec.summary,
      tags: [spec.tag],
      ...(spec.role ? { security: [{ bearer: [] }], 'x-warbler-role': spec.role } : { security: [] }),
      parameters: [...parameters(spec.params, 'path', defs), ...parameters(spec.query, 'query', defs)],
    };
    if (spec.body) {
      op.requestBody = { required: !spec.optionalBody, content: { 'application/json': { schema: jsonSchema(spec.body, 'input', defs) } } };
    }
    const responses: Record<string, unknown> = {};
    for (const r of [spec.response, ...(spec.otherResponses ?? [])]) {
      const content: Record<string, unknown> = {};
      if (r.schema) content['application/json'] = { schema: jsonSchema(r.schema, 'output', defs) };
      for (const [type, m] of Object.entries(r.media ?? {})) {
        content[type] = { ...(m.schema ? { schema: m.schema } : {}), 'x-description': m.description };
      }
      responses[String(r.status)] = { description: r.description, ...(Object.keys(content).length ? { content } : {}) };
    }
    // Every route but a GET reads a body, if only to refuse one that says something (api/app.ts).
    const bodyProblems = spec.method === 'get' ? [] : [400, 413, 415];
    const statuses = new Set<number>([...(spec.body || spec.query || spec.params ? [400] : []), ...bodyProblems, ...(spec.role ? [401, 403] : []), ...(spec.problems ?? []), 500]);
    for (const s of [...statuses].sort()) {
      if (responses[String(s)]) continue;
      responses[String(s)] = {
        description: GENERIC_PROBLEMS[s] ?? 'error',
        content: { [PROBLEM_CONTENT_TYPE]: { schema: { $ref: '#/components/schemas/Problem' } } },
      };
    }
    op.responses = responses;
    (paths[spec.path] ??= {})[spec.method] = op;
  }
  const problem = z.toJSONSchema(ProblemSchema, { target: 'draft-2020-12' }) as Record<string, unknown>;
  delete problem.$schema;
  const problemDef = (problem.$defs as Record<string, unknown> | undefined)?.Problem ?? problem;
  return {
    openapi: '3.1.0',
    info: { ...info, description: 'Warbler: segmentation and user profiling for targeted push notifications.' },
    jsonSchemaDialect: 'https://json-schema.org/draft/2020-12/schema',
    servers: [{ url: '/' }],
    paths,
    components: {
      schemas: { ...defs, Problem: problemDef },
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'an API key; it belongs to one app and holds roles ingest, read or admin' } },
    },
  };
}
