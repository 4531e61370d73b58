-- verifyd SQLite schema, version 6: the identity index leads with the number.
--
-- A start reads every verification of its number for the application (all methods: the
-- per-number start limits count them) before it inserts. With `(app, method, endpoint,
-- created_at)` that read was one B-tree descent per method; leading with the number makes
-- it one descent and a short scan. The lookups by app, method and number use the same
-- index as before (all three columns are equalities).
DROP INDEX verifications_identity;
CREATE INDEX verifications_identity ON verifications (endpoint, app, method, created_at);
