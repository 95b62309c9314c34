// lib/instant.ts: every ISO 8601 form of a date and time with an offset or Z
// names the instant the extended calendar form does; what is not an instant
// (no offset, no such date or time, leap seconds) is refused. The expected
// instants are written out as extended-form strings read by Date.parse.
import { describe, expect, it } from 'vitest';
import { parseIsoInstant } from '../../lib/instant.ts';
import { parseIsoTimestamp } from '../../ingest/event-schema.ts';
import { parseInstant } from '../../segments/check.ts';

const at = (iso: string) => Date.parse(iso) / 1000;

describe('parseIsoInstant', () => {
  const same: [form: string, instant: string][] = [
    ['2026-11-29T10:30:15Z', '2026-11-29T10:30:15Z'],
    ['20261129T103015Z', '2026-11-29T10:30:15Z'],
    ['2026-11-29t10:30:15z', '2026-11-29T10:30:15Z'],
    ['2026-333T10:30:15Z', '2026-11-29T10:30:15Z'], // 29 November is day 333 of 2026
    ['2026333T103015Z', '2026-11-29T10:30:15Z'],
    ['2024-366T00:00:00Z', '2024-12-31T00:00:00Z'],
    ['2026-W48-7T10:30:15Z', '2026-11-29T10:30:15Z'], // a Sunday of ISO week 48
    ['2026W487T103015Z', '2026-11-29T10:30:15Z'],
    ['2026-W01-1T00:00Z', '2025-12-29T00:00:00Z'], // week 1 of 2026 starts in 2025
    ['2020-W53-5T00:00Z', '2021-01-01T00:00:00Z'], // 2020 has 53 weeks
    ['2026-W53-7T00:00Z', '2027-01-03T00:00:00Z'],
    ['2026-11-29T10:30Z', '2026-11-29T10:30:00Z'],
    ['2026-11-29T10Z', '2026-11-29T10:00:00Z'],
    ['2026-11-29T10.5Z', '2026-11-29T10:30:00Z'],
    ['2026-11-29T10:30.25Z', '2026-11-29T10:30:15Z'],
    ['2026-11-29T24:00Z', '2026-11-30T00:00:00Z'],
    ['2026-12-31T24:00:00Z', '2027-01-01T00:00:00Z'],
    ['2026-11-29T12:30:15+02:00', '2026-11-29T10:30:15Z'],
    ['2026-11-29T12:30:15+0200', '2026-11-29T10:30:15Z'],
    ['2026-11-29T12:30:15+02', '2026-11-29T10:30:15Z'],
    ['2026-11-29T05:00:15-05:30', '2026-11-29T10:30:15Z'],
    ['1970-01-01T00:00:00Z', '1970-01-01T00:00:00Z'],
  ];
  it.each(same)('%s is %s', (form, instant) => {
    expect(parseIsoInstant(form)?.seconds).toBe(at(instant));
  });

  it('keeps the fraction of a second as written, and converts one of an hour or minute', () => {
    expect(parseIsoInstant('2026-11-29T10:30:15,250Z')).toEqual({ seconds: at('2026-11-29T10:30:15Z'), fraction: '250' });
    expect(parseIsoInstant('2026-11-29T10:30:15.123456789123Z')?.fraction).toBe('123456789123');
    expect(parseIsoInstant('2026-11-29T10:30.001Z')).toEqual({ seconds: at('2026-11-29T10:30:00Z'), fraction: '06' });
    expect(parseIsoInstant('2026-11-29T10:00.3333333333Z')).toEqual({ seconds: at('2026-11-29T10:00:19Z'), fraction: '999999998' });
    // A fraction of an hour as long as a request allows: only its first digits are computed with, and whether any other is not 0.
    expect(parseIsoInstant(`2026-11-29T10.5${'0'.repeat(200_000)}1Z`)).toEqual({ seconds: at('2026-11-29T10:30:00Z'), fraction: '0000000001' });
    expect(parseIsoInstant(`2026-11-29T10.5${'0'.repeat(200_000)}Z`)).toEqual({ seconds: at('2026-11-29T10:30:00Z'), fraction: '' });
    // 6e-10 s: past the nanosecond, which a tenth digit says.
    expect(parseIsoInstant('2026-11-29T10:00.00000000001Z')).toEqual({ seconds: at('2026-11-29T10:00:00Z'), fraction: '0000000001' });
  });

  it('counts years before 100 as themselves, not as 19xx', () => {
    // Date.parse reads the 4-digit year of the extended form literally.
    expect(parseIsoInstant('0070-01-01T00:00:00Z')?.seconds).toBe(at('0070-01-01T00:00:00Z'));
    expect(parseIsoInstant('0070001T00Z')?.seconds).toBe(at('0070-01-01T00:00:00Z'));
    expect(at('0070-01-01T00:00:00Z')).toBeLessThan(at('1900-01-01T00:00:00Z'));
  });

  it('refuses what is not an instant', () => {
    for (const s of [
      '2026-11-29T10:30:15', // no offset
      '2026-11-29', // no time
      '2026-11-29 10:30:15Z', // a space for the T
      '2026-02-29T00:00Z', // 2026 is not a leap year
      '2026-366T00:00Z',
      '2025-W53-1T00:00Z', // 2025 has 52 weeks (2026, starting on a Thursday, has 53)
      '2026-W48-8T00:00Z',
      '2026-13-01T00:00Z',
      '2026-11-29T25:00Z',
      '2026-11-29T24:00:01Z',
      '2026-11-29T24:00.5Z',
      '2026-11-29T23:59:60Z', // a leap second
      '2026-11-29T10:60Z',
      '2026-11-29T10:30:15+24:00',
      '2026-11-29T10:30:15.Z',
      '+02026-11-29T10:30:15Z',
      // Basic and extended forms mixed inside a date or a time.
      '2026-1129T10:00Z',
      '202611-29T10:00Z',
      '2026-W487T00Z',
      '2026W48-7T00Z',
      '2026-11-29T10:3015Z',
      '2026-11-29T1030:15Z',
      '',
    ]) {
      expect(parseIsoInstant(s), s).toBeUndefined();
    }
  });

  it('is what events, request instants and segment timestamps read', () => {
    for (const [form, instant] of same) {
      expect(parseIsoTimestamp(form), form).toBe(at(instant) * 1000);
      expect(parseInstant(form), form).toEqual({ seconds: at(instant), nanos: 0 });
    }
    // Segments compare to the nanosecond: a finer fraction is refused there.
    expect(parseInstant('2026-11-29T10:30:15.123456789Z')).toEqual({ seconds: at('2026-11-29T10:30:15Z'), nanos: 123_456_789 });
    expect(parseInstant('2026-11-29T10:30:15.1234567891Z')).toBeUndefined();
  });
});
