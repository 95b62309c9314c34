// Segment errors are data: the API turns them into problem+json `errors`, the CLI
// prints them, tests compare them. Text-form errors carry a 1-based line and
// column and an excerpt (the source line with a caret under the column).

export interface SegmentError {
  /** Stable machine-readable kind, e.g. `unknown_operator`, `bad_duration`. */
  code: string;
  /** Human-readable; for text-form errors it ends with "at line L, column C". */
  message: string;
  /** JSON-form path of the offending node or value (zod style). */
  path?: (string | number)[];
  line?: number;
  column?: number;
  /** The source line and a caret under the column, separated by "\n". */
  excerpt?: string;
}

export type SegmentResult<T> = { ok: true; value: T } | { ok: false; errors: SegmentError[] };

/** Thrown by parseSegment / fromJson when the input is not a valid segment. */
export class SegmentSyntaxError extends Error {
  readonly errors: SegmentError[];

  constructor(errors: SegmentError[]) {
    const first = errors[0]?.message ?? 'invalid segment';
    super(errors.length > 1 ? `${first} (and ${errors.length - 1} more)` : first);
    this.name = 'SegmentSyntaxError';
    this.errors = errors;
  }
}

/** At most this many errors are reported for one input; later ones are usually echoes. */
export const MAX_REPORTED_ERRORS = 20;

export interface SourcePosition {
  line: number;
  column: number;
  excerpt: string;
}

const EXCERPT_RADIUS = 40;

/**
 * Line and column (both 1-based) of a UTF-16 offset. Columns count code points, so
 * an emoji before the error moves the caret by one, as an editor would show it.
 * Lines end at \n, \r\n or \r.
 */
export function locate(source: string, offset: number): SourcePosition {
  const at = Math.max(0, Math.min(offset, source.length));
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < at; i++) {
    const c = source.charCodeAt(i);
    if (c === 10 || (c === 13 && source.charCodeAt(i + 1) !== 10)) {
      line++;
      lineStart = i + 1;
    }
  }
  let lineEnd = lineStart;
  while (lineEnd < source.length) {
    const c = source.charCodeAt(lineEnd);
    if (c === 10 || c === 13) break;
    lineEnd++;
  }
  const before = Array.from(source.slice(lineStart, at));
  const after = Array.from(source.slice(at, lineEnd));
  const column = before.length + 1;

  // Long lines (a 16 KiB one-liner) are cut around the caret.
  const shownBefore = before.length > EXCERPT_RADIUS ? ['…', ...before.slice(-EXCERPT_RADIUS)] : before;
  const shownAfter = after.length > EXCERPT_RADIUS ? [...after.slice(0, EXCERPT_RADIUS), '…'] : after;
  const visible = (ch: string): string => (ch === '\t' ? '\t' : /[\u0000-\u001f\u007f]/.test(ch) ? '\ufffd' : ch);
  const text = [...shownBefore, ...shownAfter].map(visible).join('');
  // Tabs are kept under tabs so the caret lines up in a terminal.
  const pad = shownBefore.map((ch) => (ch === '\t' ? '\t' : ' ')).join('');
  return { line, column, excerpt: `${text}\n${pad}^` };
}

/** Adds line, column, excerpt and the "at line L, column C" suffix to an error. */
export function atOffset(error: SegmentError, source: string, offset: number): SegmentError {
  const { line, column, excerpt } = locate(source, offset);
  return { ...error, message: `${error.message} at line ${line}, column ${column}`, line, column, excerpt };
}

/** A short, printable rendering of user text for messages: `'=~'`, `'"ab…'`. */
export function shown(text: string, max = 24): string {
  const cut = Array.from(text);
  const body = (cut.length > max ? cut.slice(0, max).join('') + '…' : text).replace(
    /[\u0000-\u001f\u007f]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
  return `'${body}'`;
}

/** `and[1].where.value[0]` — how paths read inside messages and logs. */
export function formatPath(path: readonly (string | number)[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? part : `.${part}`;
  }
  return out;
}
