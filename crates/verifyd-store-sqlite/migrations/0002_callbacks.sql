-- verifyd SQLite schema, version 2: callback settings and the transactional outbox.
ALTER TABLE applications ADD COLUMN allow_private_callbacks INTEGER NOT NULL DEFAULT 0;
ALTER TABLE applications ADD COLUMN callback_fail_open INTEGER NOT NULL DEFAULT 0;

CREATE TABLE events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    app             TEXT NOT NULL,
    verification_id BLOB NOT NULL,
    kind            TEXT NOT NULL,           -- result | sms_delivered:ok | sms_delivered:failed
    state           TEXT NOT NULL,           -- pending | delivered | dead
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,        -- unix microseconds
    retry_from      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    delivered_at    INTEGER
);
CREATE INDEX events_due ON events (next_attempt_at) WHERE state = 'pending';
CREATE INDEX events_by_state ON events (state, id);
