import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ident, literal, quoteString, sql } from '../../lib/sql.ts';
import { testDatabase } from '../support/env.ts';

describe('literal escaping (pure)', () => {
  it('escapes quotes, backslashes and control bytes', () => {
    expect(quoteString("it's")).toBe("'it\\'s'");
    expect(quoteString('a\\b')).toBe("'a\\\\b'");
    expect(quoteString('a\u0000b\n')).toBe("'a\\x00b\\x0a'");
  });
  it('refuses values without a faithful literal', () => {
    expect(() => literal(Number.NaN)).toThrow();
    expect(() => literal(Number.POSITIVE_INFINITY)).toThrow();
    expect(() => literal(new Date(Number.NaN))).toThrow();
    expect(() => ident('x; DROP TABLE y')).toThrow();
  });
  it('keeps negative numbers from fusing into comments', () => {
    expect(sql`SELECT 1-${-1}`.text).toBe('SELECT 1-(-1)');
  });
});

describe('literal escaping against the real ClickHouse', () => {
  it('round-trips arbitrary strings and numbers unchanged', async () => {
    const ch = await testDatabase('sqlrt');
    const samples = fc.sample(fc.string({ unit: 'binary', maxLength: 40 }), 300);
    samples.push("'; DROP TABLE events; --", '\\', "\\'", '\u0000', '💥', '/* x */', '\u2028');
    const q = sql`SELECT ${samples} AS s`;
    const [row] = await ch.rows<{ s: string[] }>(q);
    expect(row?.s).toEqual(samples);
    const nums = [0, -1, 1.5, -2.25, 1e-7, 123456789012, -9007199254740991];
    for (const v of nums) {
      const [n] = await ch.rows<{ n: number | string }>(sql`SELECT ${v} AS n`);
      expect(Number(n?.n)).toBe(v);
    }
  });
});
