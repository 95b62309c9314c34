// RFC 9457 problem details: every error the API answers is one of these, so
// clients parse a single shape. Handlers throw `ProblemError`; the app's error
// handler turns it (and zod errors, segment parse errors, anything unexpected)
// into an `application/problem+json` response.
import { z } from 'zod';

export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

export interface ProblemIssue {
  path: string;
  message: string;
}

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  errors?: ProblemIssue[];
  /** Segment text errors: 1-based position of the problem in the expression. */
  line?: number;
  column?: number;
}

const TITLES: Record<number, [slug: string, title: string]> = {
  400: ['invalid-request', 'Invalid request'],
  401: ['unauthorized', 'Missing or unknown API key'],
  403: ['forbidden', 'The API key lacks the role this needs'],
  404: ['not-found', 'Not found'],
  405: ['method-not-allowed', 'Method not allowed'],
  409: ['conflict', 'Conflict'],
  413: ['payload-too-large', 'Request body too large'],
  415: ['unsupported-media-type', 'Unsupported media type'],
  422: ['unprocessable', 'Unprocessable request'],
  499: ['client-closed', 'Client closed the request'],
  500: ['internal', 'Internal server error'],
  501: ['not-implemented', 'Not implemented'],
  503: ['unavailable', 'Service unavailable'],
  504: ['query-timeout', 'Query timed out'],
};

/** The problem `type` URI for a kind of error (a URN: stable, and resolvable by nothing we do not control). */
export function problemType(slug: string): string {
  return `urn:warbler:problem:${slug}`;
}

export class ProblemError extends Error {
  readonly problem: Problem;
  constructor(status: number, detail: string, extra: Partial<Omit<Problem, 'status' | 'detail'>> = {}) {
    super(detail);
    const [slug, title] = TITLES[status] ?? ['error', 'Error'];
    this.problem = { type: problemType(slug), title, status, detail, ...extra };
  }
}

export const notFound = (what: string) => new ProblemError(404, `${what} not found`);
export const badRequest = (detail: string, errors?: ProblemIssue[]) => new ProblemError(400, detail, errors ? { errors } : {});

/** `a.b.0.c` — the path of a zod issue, relative to `prefix` (e.g. `body`, `query`). */
export function issuePath(path: readonly PropertyKey[], prefix?: string): string {
  const parts = path.map((p) => String(p));
  return [prefix, ...parts].filter((p) => p !== undefined && p !== '').join('.');
}

export function zodIssues(err: z.ZodError, prefix?: string): ProblemIssue[] {
  return err.issues.map((i) => {
    const path = issuePath(i.path, prefix);
    // Unknown keys are reported on the object; name them so the client sees which.
    if (i.code === 'unrecognized_keys') {
      return { path, message: `unknown field(s): ${i.keys.map((k) => JSON.stringify(k)).join(', ')}` };
    }
    return { path, message: i.message };
  });
}

export function validationProblem(err: z.ZodError, prefix?: string): ProblemError {
  const errors = zodIssues(err, prefix);
  const first = errors[0];
  const detail = first ? `${first.path || prefix || 'request'}: ${first.message}` : 'invalid input';
  return new ProblemError(400, errors.length > 1 ? `${detail} (and ${errors.length - 1} more)` : detail, { errors });
}

export function problemResponse(p: Problem, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(p), {
    status: p.status,
    headers: { 'content-type': PROBLEM_CONTENT_TYPE, ...headers },
  });
}

export const ProblemSchema = z
  .object({
    type: z.string(),
    title: z.string(),
    status: z.number().int(),
    detail: z.string(),
    errors: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
    line: z.number().int().min(1).optional(),
    column: z.number().int().min(1).optional(),
  })
  .meta({ id: 'Problem', description: 'RFC 9457 problem details' });
