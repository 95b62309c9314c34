// The HTTP API as a Hono app, built from its dependencies so tests and the
// server construct the same thing over real services. Every route is declared
// in api/routes/* with zod schemas; this module mounts them: authenticate,
// check the role, validate path/query/body, run the handler, validate the
// answer, and turn every failure into problem+json.
import { randomUUID } from 'node:crypto';
import { Hono, type Context } from 'hono';
import type { Kafka, Producer } from 'kafkajs';
import { z } from 'zod';
import type { ClickHouse } from '../lib/clickhouse.ts';
import type { Config } from '../lib/config.ts';
import { log } from '../lib/log.ts';
import type { Sql } from '../lib/sql.ts';
import { killQuery } from './export.ts';
import { createEventProducer, type EventProducer } from '../ingest/producer.ts';
import { metrics as processMetrics, type Registry } from '../lib/metrics.ts';
import { type ApiKey, hasRole, type KeyStore } from './auth.ts';
import type { Route } from './openapi.ts';
import { allRoutes } from './routes/index.ts';
import { ClusterJobError } from '../profiles/clusters-job.ts';
import { TagInputError } from '../profiles/tags.ts';
import { JobConflictError, JobsStoppedError } from '../lib/jobs.ts';
import { SegmentSyntaxError } from '../segments/errors.ts';
import { SegmentConflictError, SegmentInUseError, SegmentNotFoundError } from '../segments/saved.ts';
import { PROBLEM_CONTENT_TYPE, ProblemError, problemResponse, problemType, validationProblem, type Problem } from './problem.ts';

export interface Limits {
  /** Default cap on request bodies (bytes). */
  maxBodyBytes: number;
  /** Seconds a segment query may run before ClickHouse cancels it. */
  queryTimeoutS: number;
  /** Seconds an export or snapshot query may run (they stream large results). */
  exportTimeoutS: number;
  /** Rows per Arrow record batch in exports. */
  arrowBatchRows: number;
  /** Kafka messages per produce call when publishing snapshot changes. */
  publishBatch: number;
  /**
   * Bytes of large request bodies (past LARGE_BODY_BYTES each) the app reads
   * and holds at once; one more gets 503 until others finish. A parsed body
   * costs several times its text, and the largest valid batch is ~270 MiB.
   * Default: the largest route's cap, plus a quarter.
   */
  largeBodyBudgetBytes?: number;
}

/** Bodies up to this size are never held back by the budget of large ones. */
export const LARGE_BODY_BYTES = 1024 * 1024;

/** The large bodies being read or held by one app: `take` reserves bytes, false when they do not fit. */
export class BodyBudget {
  private used = 0;
  constructor(readonly capacity: number) {}
  take(bytes: number): boolean {
    // A body that is the only one in the budget always fits (its route's cap bounds it).
    if (this.used > 0 && this.used + bytes > this.capacity) return false;
    this.used += bytes;
    return true;
  }
  give(bytes: number): void {
    this.used = Math.max(0, this.used - bytes);
  }
  get inUse(): number {
    return this.used;
  }
}

export interface AppDeps {
  ch: ClickHouse;
  /** A connected producer (acks -1 on every send). */
  producer: Producer;
  /** For reachability checks and the events producer; optional when the caller has only a producer. */
  kafka?: Kafka;
  /** Producer of POST /v1/events (default: one on `kafka` for the configured events topic). */
  events?: EventProducer;
  /**
   * Whether the Kafka producers have connected, when they connect in the
   * background (`warbler serve` starts before Kafka answers): while false,
   * POST /v1/events answers 503 rather than wait on Kafka. Absent: connected.
   */
  kafkaConnected?: () => boolean;
  config: Config;
  keys: KeyStore;
  metrics?: Registry;
  limits?: Partial<Limits>;
}

export interface AppContext extends AppDeps {
  events?: EventProducer;
  limits: Limits;
  metrics: Registry;
  /** Routes of the app (the OpenAPI document is built from them). */
  routes: Route<AppContext>[];
  bodyBudget: BodyBudget;
}

export function defaultLimits(cfg: Config): Limits {
  return {
    maxBodyBytes: 64 * 1024 * 1024,
    queryTimeoutS: cfg.WARBLER_QUERY_TIMEOUT_S,
    exportTimeoutS: Math.max(600, cfg.WARBLER_QUERY_TIMEOUT_S),
    arrowBatchRows: 65_536,
    publishBatch: 5000,
  };
}

type Env = { Variables: { key?: ApiKey } };

const honoPath = (p: string) => p.replace(/\{([A-Za-z_][A-Za-z0-9_]*)\}/g, ':$1');
/** An OpenAPI path template as a whole-path pattern: each `{param}` is one non-empty segment. */
const pathPattern = (p: string) =>
  new RegExp('^' + p.split(/\{[A-Za-z_][A-Za-z0-9_]*\}/).map((lit) => lit.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('[^/]+') + '$');

// Segment errors name paths inside the expression, except for these request fields.
const REQUEST_FIELDS = new Set(['as_of', 'limit', 'fields', 'id', 'name', 'description']);

/**
 * Refuses a path whose percent-escapes are not UTF-8 (`%FF`): the router would
 * hand the id over undecoded, as the literal text "%FF".
 */
function checkPathEscapes(url: string): void {
  const path = url.replace(/^[a-z][a-z0-9+.-]*:\/\/[^/]*/i, '').replace(/[?#].*$/s, '');
  for (const segment of path.split('/')) {
    try {
      decodeURIComponent(segment);
    } catch {
      throw new ProblemError(400, `the path segment ${JSON.stringify(segment)} has a percent-escape that is not UTF-8`, {
        errors: [{ path: 'path', message: 'percent-escapes must encode UTF-8' }],
      });
    }
  }
}

/** A segment error as a problem: paths into the body, and the text position of the first positioned error. */
export function segmentProblem(err: SegmentSyntaxError): Problem {
  const errors = err.errors.map((e) => {
    const path = e.path ?? [];
    const head = path[0];
    const full = typeof head === 'string' && REQUEST_FIELDS.has(head) ? ['body', ...path] : ['body', 'expression', ...path];
    return { path: full.join('.'), message: e.message };
  });
  const positioned = err.errors.find((e) => typeof e.line === 'number' && typeof e.column === 'number');
  const notFound = err.errors.every((e) => e.code === 'unknown_segment');
  // A request field's error (a segment's name, as_of, limit…) is not about the expression.
  const aboutRequest = err.errors.every((e) => typeof e.path?.[0] === 'string' && REQUEST_FIELDS.has(e.path[0]));
  return new ProblemError(400, err.message, {
    type: problemType(notFound ? 'unknown-segment' : aboutRequest ? 'invalid-request' : 'invalid-segment'),
    title: aboutRequest ? 'Invalid request' : 'Invalid segment expression',
    errors,
    ...(positioned ? { line: positioned.line, column: positioned.column } : {}),
  }).problem;
}

/** Maps anything thrown by a handler to a problem. */
export function toProblem(err: unknown): Problem {
  if (err instanceof ProblemError) return err.problem;
  if (err instanceof z.ZodError) return validationProblem(err).problem;
  if (err instanceof SegmentSyntaxError) return segmentProblem(err);
  if (err instanceof TagInputError || err instanceof ClusterJobError) {
    return new ProblemError(400, err.message, { errors: err.errors.map((i) => ({ path: `body.${i.path}`.replace(/^body\.tag$/, 'path.tag').replace(/^body\.user_id$/, 'path.user_id'), message: i.message })) }).problem;
  }
  if (err instanceof SegmentNotFoundError) return new ProblemError(404, err.message).problem;
  if (err instanceof SegmentConflictError) return new ProblemError(409, err.message, { errors: [{ path: 'body.name', message: err.message }] }).problem;
  // Deleting a segment others use: the segment in the path is the conflict; renaming one used by name: the new name.
  if (err instanceof SegmentInUseError) {
    return new ProblemError(409, err.message, { errors: [{ path: err.action === 'delete' ? 'path.id' : 'body.name', message: err.message }] }).problem;
  }
  if (err instanceof JobConflictError) return new ProblemError(409, err.message).problem;
  if (err instanceof JobsStoppedError) return new ProblemError(503, err.message).problem;
  const e = err as { name?: string; message?: string; code?: string | number };
  // The client parses ClickHouse error codes only from newer servers' messages; 18.16 says `Code: 159, …`.
  const code = e?.code !== undefined ? String(e.code) : (/^Code: (\d+)/.exec(e?.message ?? '')?.[1] ?? '');
  // ClickHouse: 159 TIMEOUT_EXCEEDED (max_execution_time), 394 QUERY_WAS_CANCELLED.
  if (code === '159') return new ProblemError(504, 'the query ran past its time limit and was cancelled in ClickHouse').problem;
  if (code === '394') return new ProblemError(499, 'the query was cancelled').problem;
  // kafkajs refuses a send on a producer that has not connected (yet) with a plain KafkaJSError.
  const kafkaDisconnected = e?.name === 'KafkaJSError' && /disconnected/.test(e?.message ?? '');
  if (code === 'ECONNREFUSED' || code === 'ECONNRESET' || kafkaDisconnected || /KafkaJSConnectionError|KafkaJSNumberOfRetriesExceeded/.test(e?.name ?? '')) {
    return new ProblemError(503, `a backing service is unreachable: ${e.message ?? code}`).problem;
  }
  return new ProblemError(500, 'internal error; see the server log').problem;
}

/** What a route that declares no body reads: nothing, or `{}` (an unknown field is rejected, not ignored). */
const NO_BODY = z.strictObject({});
/** Bytes a route without a body reads before answering 413: room for `{}` and any whitespace a client adds. */
const NO_BODY_LIMIT = 64 * 1024;

const tooLarge = (detail: string) => new ProblemError(413, detail, { errors: [{ path: 'body', message: detail }] });

/**
 * Reads and parses a JSON body of at most `limit` bytes: a larger declared
 * Content-Length is refused before reading, and reading stops at the first
 * chunk past the limit, so no more than `limit` bytes are ever held.
 * `optional`: an absent or blank body reads as `{}`. `noBody`: the route takes
 * no body; the media type is only checked when one is sent.
 */
/** What a request holds of the large-body budget, given back when it ends. */
interface BodyHold {
  budget: BodyBudget;
  bytes: number;
}

const budgetFull = () =>
  new ProblemError(503, 'the server is reading or holding other large request bodies; retry in a moment (or send smaller batches)', {
    errors: [{ path: 'body', message: 'retry later' }],
  });

async function readBody(c: Context, limit: number, optional = false, noBody = false, hold?: BodyHold): Promise<unknown> {
  // A large body reserves its bytes of the app's budget as they arrive past
  // LARGE_BODY_BYTES (not its declared length: an idle connection declaring a
  // huge body would hold the budget without sending anything).
  const reserve = (total: number) => {
    if (!hold || total <= LARGE_BODY_BYTES || total <= hold.bytes) return;
    if (!hold.budget.take(total - hold.bytes)) throw budgetFull();
    hold.bytes = total;
  };
  const type = c.req.header('content-type') ?? '';
  const checkType = () => {
    if (type && !/^application\/([a-z.+-]*\+)?json\b/i.test(type)) {
      const detail = `send the body as application/json (got ${type})`;
      throw new ProblemError(415, detail, { errors: [{ path: 'body', message: detail }] });
    }
  };
  if (!noBody) checkType();
  const declared = Number(c.req.header('content-length') ?? 0);
  if (declared > limit) throw tooLarge(`request body of ${declared} bytes exceeds the limit of ${limit} bytes for this route`);
  const body = c.req.raw.body;
  if (!body && optional) return {};
  if (!body) throw new ProblemError(400, 'a JSON body is required', { errors: [{ path: 'body', message: 'required' }] });
  const reader = body.getReader();
  // Strict, as on Kafka: invalid bytes would otherwise become U+FFFD and could merge distinct ids.
  // Decoded chunk by chunk, so the raw bytes are not held beside the text.
  const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  const parts: string[] = [];
  let size = 0;
  const notUtf8 = () => new ProblemError(400, 'the body is not valid UTF-8', { errors: [{ path: 'body', message: 'not valid UTF-8' }] });
  for (;;) {
    let chunk: Awaited<ReturnType<typeof reader.read>>;
    try {
      chunk = await reader.read();
    } catch (err) {
      // The server's own cap on every body (api/node-server.ts) ends the stream with this error.
      if (/^request body exceeds \d+ bytes/.test((err as Error)?.message ?? '')) throw tooLarge(`request body exceeds the limit of ${limit} bytes for this route`);
      throw err;
    }
    const { value, done } = chunk;
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel();
      throw tooLarge(`request body exceeds the limit of ${limit} bytes for this route`);
    }
    try {
      reserve(size);
    } catch (e) {
      await reader.cancel();
      throw e;
    }
    try {
      parts.push(decoder.decode(value, { stream: true }));
    } catch {
      await reader.cancel();
      throw notUtf8();
    }
  }
  let text: string;
  try {
    parts.push(decoder.decode());
    text = parts.join('');
  } catch {
    throw notUtf8();
  }
  parts.length = 0;
  if (text.trim() === '' && optional) return {};
  if (text.trim() === '') throw new ProblemError(400, 'a JSON body is required', { errors: [{ path: 'body', message: 'required' }] });
  if (noBody) checkType();
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ProblemError(400, `the body is not valid JSON: ${(e as Error).message}`, { errors: [{ path: 'body', message: 'not valid JSON' }] });
  }
}

function authenticate(c: Context, keys: KeyStore): ApiKey {
  const header = c.req.header('authorization') ?? '';
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (!m) throw new ProblemError(401, 'send `Authorization: Bearer <key>`');
  const key = keys.verify(m[1] as string);
  if (!key) throw new ProblemError(401, 'unknown API key');
  return key;
}

/** Query parameters given a value: `?limit=` reads as no `limit` (its default), never as an empty value. */
export function presentQuery(q: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(q).filter(([, v]) => v !== ''));
}

function parseWith<S extends z.ZodType>(schema: S, value: unknown, where: string): z.output<S> {
  const r = schema.safeParse(value);
  if (!r.success) throw validationProblem(r.error, where);
  return r.data;
}

/** The API over its dependencies: every route of api/routes unless `routeSets` narrows it. */
export function createApp(deps: AppDeps, routeSets: ((ctx: AppContext) => Route<AppContext>[])[] = allRoutes): { app: Hono<Env>; ctx: AppContext } {
  const ctx: AppContext = {
    ...deps,
    limits: { ...defaultLimits(deps.config), ...deps.limits },
    metrics: deps.metrics ?? processMetrics,
    events: deps.events ?? (deps.kafka ? createEventProducer(deps.kafka, deps.config.WARBLER_EVENTS_TOPIC) : undefined),
    routes: [],
    bodyBudget: new BodyBudget(0),
  };
  for (const make of routeSets) ctx.routes.push(...make(ctx));
  const largestCap = Math.max(ctx.limits.maxBodyBytes, ...ctx.routes.map((r) => r.spec.bodyLimit ?? 0));
  ctx.bodyBudget = new BodyBudget(ctx.limits.largeBodyBudgetBytes ?? Math.ceil(largestCap * 1.25));

  const duration = ctx.metrics.histogram('warbler_http_request_duration_seconds', 'HTTP request latency by route, method and status');
  const requests = ctx.metrics.counter('warbler_http_requests_total', 'HTTP requests by route, method and status');

  const app = new Hono<Env>();

  app.onError((err, c) => {
    const problem = toProblem(err);
    if (problem.status >= 500) log.error('request failed', { method: c.req.method, path: c.req.path, error: err, stack: (err as Error)?.stack });
    return problemResponse(problem, problem.status === 401 ? { 'www-authenticate': 'Bearer' } : {});
  });
  // A path that exists under other methods answers 405 with Allow (RFC 9110), not 404.
  const templates = ctx.routes.map((r) => ({ method: r.spec.method.toUpperCase(), re: pathPattern(r.spec.path) }));
  app.notFound((c) => {
    const allowed = [...new Set(templates.filter((t) => t.re.test(c.req.path)).map((t) => t.method))];
    if (allowed.length > 0) {
      if (allowed.includes('GET')) allowed.push('HEAD');
      const allow = allowed.join(', ');
      return problemResponse(new ProblemError(405, `${c.req.method} is not allowed on ${c.req.path}; allowed: ${allow}`).problem, { allow });
    }
    return problemResponse(new ProblemError(404, `no route for ${c.req.method} ${c.req.path}`).problem);
  });

  for (const r of ctx.routes) {
    const { spec, handler } = r;
    app.on(spec.method.toUpperCase(), honoPath(spec.path), async (c) => {
      const started = performance.now();
      let status = 500;
      const hold: BodyHold = { budget: ctx.bodyBudget, bytes: 0 };
      try {
        let key: ApiKey | undefined;
        if (spec.role) {
          key = authenticate(c, ctx.keys);
          c.set('key', key);
          if (spec.role !== 'any' && !hasRole(key, spec.role)) {
            throw new ProblemError(403, `this needs a key with the '${spec.role}' role (this key has: ${[...key.roles].join(', ')})`);
          }
        }
        if (spec.params) checkPathEscapes(c.req.url);
        const params = spec.params ? parseWith(spec.params, c.req.param(), 'path') : undefined;
        const query = spec.query ? parseWith(spec.query, presentQuery(c.req.query()), 'query') : undefined;
        const body = spec.body ? parseWith(spec.body, await readBody(c, spec.bodyLimit ?? ctx.limits.maxBodyBytes, spec.optionalBody, false, hold), 'body') : undefined;
        // A route without a body still rejects one that says something (unknown fields are never ignored).
        if (!spec.body) parseWith(NO_BODY, await readBody(c, NO_BODY_LIMIT, true, true), 'body');
        const out = await handler({
          params,
          query,
          body,
          key: key as ApiKey,
          appId: key?.appId as string,
          signal: c.req.raw.signal,
          ch: requestClickHouse(ctx.ch, c.req.raw.signal, ctx.limits.queryTimeoutS),
          c,
          deps: ctx,
        });
        if (out instanceof Response) {
          status = out.status;
          return out;
        }
        let payload = out;
        if (spec.response.schema) {
          const checked = spec.response.schema.safeParse(out);
          if (!checked.success) {
            // Our answer broke our own contract: a bug, never the client's fault.
            log.error('response failed its schema', { route: spec.path, issues: checked.error.issues.slice(0, 5) });
            throw new ProblemError(500, 'the server produced an answer that breaks its own schema; see the server log');
          }
          payload = checked.data;
        }
        status = spec.response.status;
        return c.json(payload as object, status as 200);
      } catch (err) {
        status = toProblem(err).status;
        throw err;
      } finally {
        ctx.bodyBudget.give(hold.bytes);
        const labels = { route: spec.path, method: spec.method.toUpperCase(), status: String(status) };
        const seconds = (performance.now() - started) / 1000;
        duration.observe(seconds, labels);
        requests.inc(labels);
        log.debug('request', { ...labels, app_id: c.get('key')?.appId, ms: Math.round(seconds * 1000) });
      }
    });
  }

  return { app, ctx };
}

export { PROBLEM_CONTENT_TYPE };

/**
 * A view of `ch` for one request: each query gets a query_id, and when the
 * client goes away the queries still running are killed inside ClickHouse
 * (closing the HTTP connection alone does not stop a query on every version).
 * Each query is also bounded by max_execution_time (the client's queryTimeoutS).
 */
export function requestClickHouse(ch: ClickHouse, signal: AbortSignal, timeoutS: number): ClickHouse {
  const running = new Set<string>();
  const kill = () => {
    for (const id of running) void killQuery(ch, id);
  };
  if (signal.aborted) throw new ProblemError(499, 'the client closed the request');
  signal.addEventListener('abort', kill, { once: true });
  const view = Object.create(ch) as ClickHouse;
  view.rows = async <T>(q: Sql, opts: { timeoutS?: number; queryId?: string } = {}): Promise<T[]> => {
    const queryId = opts.queryId ?? `api-${randomUUID()}`;
    running.add(queryId);
    try {
      return await ch.rows<T>(q, { timeoutS: opts.timeoutS ?? timeoutS, queryId });
    } finally {
      running.delete(queryId);
    }
  };
  return view;
}
