-- The lists of strings of a profile row's state (120_profile_state.sql), packed
-- into one String each. An incremental profile run reads the state of the
-- users it recomputes, and they sit in every granule of the previous run, so
-- it decodes every row's state: an Array(String) costs a length per element,
-- a String one per row. On the benchmark the categories and the traits were
-- about half of that read's CPU (bench/incremental-cpu.ts).
--
--   s_cats_packed: the categories of the row's state (as s_cats was);
--   s_traits_packed: the row's trait_keys, then its trait_values (as many of
--     each as trait_types has elements), which the next run updates;
-- each list packed by profiles/sql.ts (packedList): '' when empty, else each
-- element preceded by a NUL byte, with NUL and \x01 in elements escaped.
--
-- Runs written before this migration have no packed state: their rows stay
-- readable, and the next profile run after one of them is a full run
-- (profile_runs.state_format, 1 since this migration).
ALTER TABLE profiles ADD COLUMN IF NOT EXISTS s_cats_packed String;

ALTER TABLE profiles ADD COLUMN IF NOT EXISTS s_traits_packed String;

ALTER TABLE profiles DROP COLUMN IF EXISTS s_cats;

ALTER TABLE profile_runs ADD COLUMN IF NOT EXISTS state_format UInt8;
