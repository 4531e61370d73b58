-- verifyd SQLite schema, version 4: the delivery job queue and delivery attempts.
CREATE TABLE delivery_jobs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    verification_id BLOB NOT NULL,
    app             TEXT NOT NULL,
    payload         BLOB,                    -- sealed message; NULL once finished
    route_index     INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    state           TEXT NOT NULL,           -- pending | done
    next_attempt_at INTEGER NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX delivery_jobs_due ON delivery_jobs (next_attempt_at) WHERE state = 'pending';
CREATE INDEX delivery_jobs_verification ON delivery_jobs (verification_id);

CREATE TABLE delivery_attempts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    verification_id BLOB NOT NULL,
    route           TEXT NOT NULL,
    channel         TEXT NOT NULL,
    message_id      TEXT,
    outcome         TEXT NOT NULL,
    at              INTEGER NOT NULL
);
CREATE INDEX delivery_attempts_verification ON delivery_attempts (verification_id, id);
CREATE INDEX delivery_attempts_message ON delivery_attempts (channel, message_id)
    WHERE message_id IS NOT NULL;
