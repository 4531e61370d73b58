-- verifyd SQLite schema, version 3: rate-limit and fraud state shared by every request.
CREATE TABLE counters (
    key        TEXT NOT NULL,
    bucket     INTEGER NOT NULL,        -- bucket start, unix microseconds
    value      INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,        -- when the bucket leaves every window it serves
    PRIMARY KEY (key, bucket)
) WITHOUT ROWID;
CREATE INDEX counters_expiry ON counters (expires_at);

CREATE TABLE gates (
    key     TEXT PRIMARY KEY,
    last_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE token_buckets (
    key        TEXT PRIMARY KEY,
    tokens     REAL NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE blocks (
    key        TEXT PRIMARY KEY,
    until_at   INTEGER NOT NULL,
    reason     TEXT NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX verifications_finished ON verifications (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX events_verification ON events (verification_id);
