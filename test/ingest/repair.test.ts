// The pure half of ingest/repair.ts: reading a view's definition back from
// ClickHouse's create_table_query, as 18.16 and current versions print it, and
// the INSERT that re-derives stored events through it.
// test/ingest/faults.test.ts runs the repair against ClickHouse and Kafka.
import { describe, expect, it } from 'vitest';
import { parseEventsView, repairSql } from '../../ingest/repair.ts';
import type { EventRow } from '../../ingest/normalize.ts';

const V18 =
  'CREATE MATERIALIZED VIEW warbler.user_traits_mv TO warbler.user_traits ( app_id String,  user_id String,  key String,  value String,  value_type UInt8,  ts DateTime,  event_id String) AS SELECT app_id, user_id, key, value, value_type, ts, event_id FROM warbler.events  ARRAY JOIN trait_keys AS key, trait_values AS value, trait_types AS value_type';
const CURRENT = `CREATE MATERIALIZED VIEW warbler.app_users_mv TO warbler.app_users
(
    \`app_id\` String,
    \`user_id\` String,
    \`first_ts\` DateTime,
    \`first_ts_rev\` UInt32
)
AS SELECT
    app_id,
    user_id,
    min(ts) AS first_ts,
    toUInt32(4294967295 - toUInt32(min(ts))) AS first_ts_rev
FROM warbler.events
GROUP BY
    app_id,
    user_id`;

const row = (user_id: string, ts: number, event_id: string) => ({ app_id: 'a', user_id, ts, event_id }) as EventRow;

describe('ingest repair: views on events', () => {
  it('reads the target and the SELECT of a view as 18.16 and current ClickHouse print it', () => {
    expect(parseEventsView('user_traits_mv', V18, 'warbler', ['app_id'])).toMatchObject({ target: 'user_traits', select: expect.stringMatching(/^SELECT app_id, user_id, key, .* ARRAY JOIN trait_keys AS key/) });
    expect(parseEventsView('app_users_mv', CURRENT, 'warbler', ['app_id'])).toMatchObject({ target: 'app_users', select: expect.stringMatching(/^SELECT\n\s+app_id,[\s\S]*GROUP BY/) });
  });

  it('leaves out views of other tables, and refuses a view that reads events twice', () => {
    expect(parseEventsView('x_mv', 'CREATE MATERIALIZED VIEW warbler.x_mv TO warbler.x ( a String) AS SELECT a FROM warbler.events_archive', 'warbler', ['a'])).toBeUndefined();
    expect(parseEventsView('x_mv', 'CREATE MATERIALIZED VIEW warbler.x_mv TO warbler.x ( a String) AS SELECT a FROM warbler.other', 'warbler', ['a'])).toBeUndefined();
    expect(() =>
      parseEventsView('x_mv', 'CREATE MATERIALIZED VIEW warbler.x_mv TO warbler.x ( a String) AS SELECT a FROM warbler.events WHERE a IN (SELECT a FROM warbler.events)', 'warbler', ['a']),
    ).toThrow(/reads events more than once/);
  });

  it("runs the view's SELECT over exactly the given stored rows, into the view's columns of its table", () => {
    const view = parseEventsView('user_traits_mv', V18, 'warbler', ['app_id', 'user_id', 'key'])!;
    const q = repairSql(view, 'warbler', "o'app", [row('u1', 100, 'e1'), row('u2', 200, "e'2"), row('u1', 100, 'e1')]).text;
    expect(q).toMatch(/^INSERT INTO `user_traits` \(`app_id`, `user_id`, `key`\) SELECT app_id, user_id, key, value, value_type, ts, event_id FROM \(SELECT \* FROM events/);
    expect(q).toContain("app_id = 'o\\'app'");
    expect(q).toContain("user_id IN (SELECT arrayJoin(['u1', 'u2']))");
    expect(q).toContain("IN (SELECT arrayJoin(['100\\x00e1', '200\\x00e\\'2']))");
    expect(q).toMatch(/\) AS events {2}ARRAY JOIN trait_keys AS key/);
    expect(q).not.toContain('warbler.events');
  });
});
