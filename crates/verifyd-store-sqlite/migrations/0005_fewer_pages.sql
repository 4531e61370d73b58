-- verifyd SQLite schema, version 5: a start writes fewer B-tree pages.
--
-- Every commit appends each page it changed to the WAL, fsyncs it, and a checkpoint later
-- copies it back, so what a commit costs is mostly how many distinct pages it changed.
-- Entries keyed by the phone number land on a page of their own; entries keyed by time or
-- insertion order append to a page the whole batch shares. Version 4 wrote a start's rows
-- into eight B-trees, five of them at a number-keyed spot (the pending and identity
-- indexes, the gate, the counter key, and the counters' expiry index, whose ties on
-- `expires_at` were ordered by key). This leaves one: the identity index.

-- The identity index finds the pending verification of a number as well (the single writer
-- supersedes it in the same transaction as the insert), so the partial unique index was a
-- second number-keyed page per start.
DROP INDEX verifications_one_pending;

-- Counters lose their expiry index: the purge walks the counters a slice of keys at a time
-- instead. Gates move into the counters table (one row per gate key with `bucket` 0,
-- `value` the last pass in unix microseconds, `expires_at` when it has opened again). The
-- server no longer keeps a gate or counters per number for starts: it counts the number's
-- verifications in the identity index instead.
DROP INDEX counters_expiry;
INSERT INTO counters (key, bucket, value, expires_at)
    SELECT key, 0, last_at, last_at + 86400000000 FROM gates WHERE true
    ON CONFLICT (key, bucket) DO NOTHING;
DROP TABLE gates;

-- A finished delivery job is deleted instead of kept as 'done' (its attempts keep the
-- history), so the job table holds only pending jobs and needs no index by verification.
-- Ids stay AUTOINCREMENT: a late completion of a finished job must not hit a new one.
DELETE FROM delivery_jobs WHERE state <> 'pending';
DROP INDEX delivery_jobs_verification;
