-- verifyd SQLite schema, version 5: a start writes fewer B-tree pages.
--
-- Every commit appends each page it changed to the WAL, fsyncs it, and a checkpoint later
-- copies it back, so what a commit costs is mostly how many distinct pages it changed.
-- Entries keyed by the phone number land on a page of their own; entries keyed by time or
-- insertion order append to a page the whole batch shares. Version 4 wrote five
-- number-keyed entries per start (the pending and identity indexes, the gate, the counter
-- key, and the counters' expiry index, whose ties were ordered by key); this leaves two
-- (the identity index and the counter key), and drops an index from the job table.

-- The identity index finds the pending verification of a number as well (the single writer
-- supersedes it in the same transaction as the insert), so the partial unique index was a
-- second number-keyed page per start.
DROP INDEX verifications_one_pending;

-- Counters get a rowid: the expiry index then orders ties by rowid (insertion order), and
-- the store rounds expiries up to the hour, so new rows append to a few shared pages. Gates
-- move in: one row per gate key with `bucket` 0, `value` the last pass (unix microseconds)
-- and `expires_at` (rounded up) when the gate has opened again. Gate keys start with the
-- number's counter prefix, so a number's gate and counters share a key page.
CREATE TABLE counters_v5 (
    id         INTEGER PRIMARY KEY,
    key        TEXT NOT NULL,
    bucket     INTEGER NOT NULL,        -- bucket start, unix microseconds (0 for a gate)
    value      INTEGER NOT NULL,
    expires_at INTEGER NOT NULL         -- when the bucket leaves every window it serves
);
INSERT INTO counters_v5 (key, bucket, value, expires_at)
    SELECT key, bucket, value, expires_at FROM counters ORDER BY expires_at;
INSERT INTO counters_v5 (key, bucket, value, expires_at)
    SELECT CASE WHEN key LIKE 'gate:%' THEN 'num:' || substr(key, 6) || ':gate' ELSE key END,
           0, last_at, last_at + 86400000000
    FROM gates;
DROP TABLE counters;
DROP TABLE gates;
ALTER TABLE counters_v5 RENAME TO counters;
CREATE UNIQUE INDEX counters_key ON counters (key, bucket);
CREATE INDEX counters_expiry ON counters (expires_at);

-- A finished delivery job is deleted instead of kept as 'done' (its attempts keep the
-- history), so the job table holds only pending jobs and needs no index by verification.
-- Ids stay AUTOINCREMENT: a late completion of a finished job must not hit a new one.
DELETE FROM delivery_jobs WHERE state <> 'pending';
DROP INDEX delivery_jobs_verification;
