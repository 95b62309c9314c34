// The validation fast path (fastParseEvent) must never disagree with the zod
// schema: whatever it accepts, EventSchema accepts with an equal output. It may
// decline anything (then EventSchema decides), so the properties checked are
// "accepted ⇒ zod agrees" on random and adversarial inputs, and "declines
// rarely" on the realistic events the demo generator produces.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { generateEvents } from '../../demo/generate.ts';
import { EventSchema, fastParseEvent, MAX_PROPERTIES_BYTES, parseEvent } from '../../ingest/event-schema.ts';
import { toEventRow } from '../../ingest/normalize.ts';

const NOW = Date.UTC(2026, 10, 28, 12);

function agreesWithZod(raw: unknown): boolean {
  const fast = fastParseEvent(raw, NOW);
  if (fast === undefined) return true;
  const zod = EventSchema.safeParse(raw);
  if (!zod.success) throw new Error(`fast path accepted what zod rejects: ${JSON.stringify(raw)} → ${JSON.stringify(zod.error.issues)}`);
  expect(fast).toStrictEqual(zod.data);
  // The stored row is the same whichever path validated the event (key order included).
  expect(toEventRow(fast, 'app', 0)).toStrictEqual(toEventRow(zod.data, 'app', 0));
  return true;
}

// Values near every rule's edge: lengths 0/1/max/max+1, unicode, odd types.
const edgeString = fc.oneof(
  fc.constantFrom('', 'a', 'x'.repeat(128), 'x'.repeat(129), 'y'.repeat(256), 'y'.repeat(257), '__proto__', 'constructor', 'ü', '😀', 'a b', 'a/b', 'add_to_cart', 'checkout.done', 'a:b-c'),
  fc.string({ maxLength: 20 }),
  fc.string({ unit: 'grapheme', maxLength: 10 }),
);
const scalar = fc.oneof(edgeString, fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.constant(undefined));
const anyValue = fc.oneof(scalar, fc.array(scalar, { maxLength: 3 }), fc.dictionary(edgeString, scalar, { maxKeys: 3 }));
const tsValue = fc.oneof(
  fc.constantFrom('2026-11-01T10:00:00Z', '2026-11-01T10:00:00.123+05:30', '2026-02-29T00:00:00Z', '2024-02-29T23:59:59-01:00', '2026-13-01T00:00:00Z', '2026-11-01 10:00:00', '1969-12-31T23:59:59Z', '2026-11-30T13:00:00Z', '2026-11-29T11:59:59Z'),
  fc.integer({ min: -1e13, max: 2e12 }),
  fc.double(),
  fc.date({ noInvalidDate: true }).map((d) => d.toISOString()),
  scalar,
);
const context = fc.dictionary(fc.oneof(fc.constantFrom('platform', 'app_version', 'country', 'timezone', 'locale'), edgeString), fc.oneof(edgeString, fc.constant(null), scalar), { maxKeys: 6 });
// Mostly valid events with each field sometimes replaced by an edge value, so
// both "accepted" and "declined" happen often (checked in the test).
const mostly = <T,>(valid: fc.Arbitrary<T>, edge: fc.Arbitrary<unknown>) => fc.oneof({ arbitrary: valid, weight: 12 }, { arbitrary: edge, weight: 1 });
const validString = (max: number) => fc.string({ minLength: 1, maxLength: Math.min(max, 12) });
const eventName = fc.stringMatching(/^[A-Za-z0-9_.:\- ]{1,16}$/);
const traitValue = fc.oneof(fc.string({ maxLength: 8 }), fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true }), fc.boolean(), fc.constant(null));
const validTs = fc.oneof(
  fc.integer({ min: 0, max: NOW }),
  fc.integer({ min: 0, max: NOW }).map((ms) => new Date(ms).toISOString()),
  fc.integer({ min: 0, max: NOW - 86_400_000 }).map((ms) => new Date(ms).toISOString().replace('Z', '+01:00')),
);
const validContext = fc.record(
  { platform: fc.oneof(validString(256), fc.constant(null)), country: validString(256), timezone: validString(256), locale: validString(256), app_version: validString(256) },
  { requiredKeys: [] },
);
const common = {
  event_id: mostly(validString(128), scalar),
  app_id: mostly(validString(128), scalar),
  user_id: mostly(validString(256), scalar),
  ts: mostly(validTs, tsValue),
  context: mostly(validContext, fc.oneof(context, anyValue)),
  extra: mostly(fc.constant(undefined), anyValue),
};
const event = fc.oneof(
  fc.record(
    { ...common, type: mostly(fc.constant('track'), scalar), event: mostly(eventName, scalar), properties: mostly(fc.dictionary(fc.string({ maxLength: 8 }), anyValue, { maxKeys: 5 }), anyValue), traits: mostly(fc.constant(undefined), anyValue) },
    { requiredKeys: ['user_id', 'ts', 'event'] },
  ),
  fc.record(
    { ...common, type: mostly(fc.constant('identify'), scalar), traits: mostly(fc.dictionary(fc.string({ maxLength: 8 }), traitValue, { maxKeys: 5 }), anyValue), event: mostly(fc.constant(undefined), scalar), properties: mostly(fc.constant(undefined), anyValue) },
    { requiredKeys: ['type', 'user_id', 'ts'] },
  ),
);

describe('validation fast path', () => {
  it('accepts only what EventSchema accepts, with an equal output (random and edge inputs)', () => {
    let accepted = 0;
    let declined = 0;
    // Round-trip through JSON so inputs look like what the HTTP and Kafka paths parse.
    fc.assert(
      fc.property(event, (e) => {
        const raw = JSON.parse(JSON.stringify(e)) as unknown;
        if (fastParseEvent(raw, NOW) === undefined) declined++;
        else accepted++;
        return agreesWithZod(raw);
      }),
      { numRuns: 5000 },
    );
    // Both outcomes must be exercised, or the property says nothing.
    expect(accepted).toBeGreaterThan(500);
    expect(declined).toBeGreaterThan(500);
  });

  it('agrees with EventSchema on objects that are not plain JSON', () => {
    for (const raw of [null, 1, 'x', [], new Date(), Object.create({ user_id: 'u' }), { __proto__: { ts: 1 } }, JSON.parse('{"__proto__":{"a":1},"user_id":"u","ts":1,"event":"e"}')]) {
      expect(agreesWithZod(raw)).toBe(true);
    }
    const traitsProto = JSON.parse('{"type":"identify","user_id":"u","ts":1000,"traits":{"__proto__":"x","a":1}}');
    expect(fastParseEvent(traitsProto, NOW)).toBeUndefined();
    // Refused with its reason, not accepted with the trait silently lost.
    expect(parseEvent(traitsProto)).toEqual({ success: false, errors: [{ path: 'traits.__proto__', message: expect.stringMatching(/cannot be named __proto__/) }] });
  });

  it('leaves the properties byte limit to EventSchema near the limit', () => {
    const big = { user_id: 'u', event: 'e', ts: 1000, properties: { s: 'é'.repeat(MAX_PROPERTIES_BYTES / 2) } };
    expect(fastParseEvent(big, NOW)).toBeUndefined();
    const r = parseEvent(big);
    expect(r.success).toBe(false);
  });

  it('takes the fast path for nearly every realistic event, and agrees on all of them', () => {
    let valid = 0;
    let fast = 0;
    for (const rec of generateEvents({ seed: 'fast-path', users: 300, end: NOW - 86_400_000, appId: 'a1' })) {
      let raw: unknown;
      try {
        raw = JSON.parse(rec.line);
      } catch {
        continue;
      }
      agreesWithZod(raw);
      if (EventSchema.safeParse(raw).success) valid++;
      if (fastParseEvent(raw, NOW) !== undefined) fast++;
    }
    expect(valid).toBeGreaterThan(5000);
    expect(fast).toBe(valid);
  });

  it('declines a purchase whose amount is not a finite number >= 0, and EventSchema rejects it', () => {
    const purchase = (amount: unknown) => ({ user_id: 'u', event: 'purchase', ts: 1000, properties: { amount, currency: 'USD' } });
    for (const bad of [-0.01, -5, '12', true, null, { v: 1 }, [1]]) {
      expect(fastParseEvent(purchase(bad), NOW), JSON.stringify(bad)).toBeUndefined();
      const r = parseEvent(purchase(bad));
      expect(r.success ? [] : r.errors.map((e) => e.path), JSON.stringify(bad)).toEqual(['properties.amount']);
    }
    for (const good of [0, 0.01, 1e6]) expect(agreesWithZod(purchase(good)) && fastParseEvent(purchase(good), NOW) !== undefined).toBe(true);
    expect(fastParseEvent({ user_id: 'u', event: 'purchase', ts: 1000, properties: { currency: 'USD' } }, NOW)).toBeDefined();
  });

  it('parseEvent reports zod errors with paths when the fast path declines', () => {
    const r = parseEvent({ user_id: '', event: 'e', ts: 'yesterday', color: 'red' });
    expect(r.success).toBe(false);
    if (!r.success) expect(r.errors.map((e) => e.path).sort()).toEqual(['color', 'ts', 'user_id']);
  });
});
