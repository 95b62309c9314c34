// The `ts` rules at their edges, on both validation paths (the fast path and
// EventSchema): years 0000–0099 are not 1900–1999, and "more than 24 h in the
// future" is decided on the exact instant, before truncation to the second.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { EventSchema, fastParseEvent, MAX_FUTURE_MS, parseEvent, parseIsoTimestamp } from '../../ingest/event-schema.ts';

const NOW = Date.UTC(2026, 10, 28, 12, 0, 0); // a whole second
const LIMIT = NOW + MAX_FUTURE_MS;
const ev = (ts: unknown) => ({ user_id: 'u', event: 'view', ts });
const iso = (ms: number) => new Date(ms).toISOString().slice(0, 19);

/** Both paths' verdict: the fast path's (accepted or declined) and parseEvent's (stored ms, or the error paths). */
function verdict(ts: unknown): { fast: boolean; result: number | string[] } {
  const fast = fastParseEvent(ev(ts), NOW) !== undefined;
  const r = parseEvent(ev(ts));
  return { fast, result: r.success ? r.data.ts : r.errors.map((e) => e.path) };
}

describe('ts', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(NOW);
  });
  afterEach(() => vi.useRealTimers());

  it('rejects years 0000-0099 as before 1970 instead of reading them as 1900-1999', () => {
    for (const ts of ['0070-01-01T00:00:00Z', '0099-12-31T23:59:59Z', '0000-02-29T12:00:00Z', '0075-06-15T10:00:00+02:00']) {
      expect(parseIsoTimestamp(ts), ts).toBeLessThan(0);
      expect(verdict(ts), ts).toEqual({ fast: false, result: ['ts'] });
    }
    expect(new Date(parseIsoTimestamp('0070-01-01T00:00:00Z')!).toISOString()).toBe('0070-01-01T00:00:00.000Z');
    expect(new Date(parseIsoTimestamp('0000-02-29T12:00:00Z')!).toISOString()).toBe('0000-02-29T12:00:00.000Z');
    expect(verdict('1970-01-01T00:00:00Z')).toEqual({ fast: true, result: 0 });
    expect(verdict('1999-12-31T23:59:59Z')).toEqual({ fast: true, result: Date.UTC(1999, 11, 31, 23, 59, 59) });
  });

  it('checks the 24 h future limit before truncating to the second', () => {
    // At the limit: accepted, on both paths.
    expect(verdict(LIMIT)).toEqual({ fast: true, result: LIMIT });
    expect(verdict(`${iso(LIMIT)}Z`)).toEqual({ fast: true, result: LIMIT });
    expect(verdict(`${iso(LIMIT)}.000Z`)).toEqual({ fast: true, result: LIMIT });
    expect(verdict(`${iso(LIMIT - 1000)}.999999Z`)).toEqual({ fast: true, result: LIMIT - 1000 });
    // Beyond it by 1-999 ms (or less than a millisecond): rejected, though truncation gives the limit.
    for (const ts of [LIMIT + 1, LIMIT + 999, LIMIT + 0.5, `${iso(LIMIT)}.001Z`, `${iso(LIMIT)}.999Z`, `${iso(LIMIT)}.0000001Z`, `${iso(LIMIT + 7_200_000)}.5+02:00`]) {
      expect(verdict(ts), String(ts)).toEqual({ fast: false, result: ['ts'] });
      const r = EventSchema.safeParse(ev(ts));
      expect(r.error?.issues[0]?.message, String(ts)).toBe('ts is more than 24 h in the future');
    }
  });

  it('still stores fractions truncated to the second', () => {
    expect(verdict('2026-11-01T10:00:00.999999999999Z')).toEqual({ fast: true, result: Date.UTC(2026, 10, 1, 10) });
    expect(verdict('2026-11-01T12:00:00,5+02')).toEqual({ fast: true, result: Date.UTC(2026, 10, 1, 10) });
  });
});
