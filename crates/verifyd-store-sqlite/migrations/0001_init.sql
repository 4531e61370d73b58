-- verifyd SQLite schema, version 1.
CREATE TABLE applications (
    key          TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    secret       TEXT NOT NULL,
    callback_url TEXT,
    min_auth     TEXT NOT NULL,
    created_at   INTEGER NOT NULL            -- unix microseconds
);

CREATE TABLE server_keys (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

CREATE TABLE verifications (
    id                 BLOB PRIMARY KEY,     -- 16-byte UUID
    app                TEXT NOT NULL,
    method             TEXT NOT NULL,
    endpoint           TEXT NOT NULL,        -- E.164
    country_code       INTEGER NOT NULL,
    region             TEXT,
    status             TEXT NOT NULL,
    reason             TEXT,
    reference          TEXT,
    custom             TEXT,
    secret_hash        BLOB NOT NULL,        -- HMAC-SHA256; never the code itself
    code_type          TEXT,
    attempts           INTEGER NOT NULL,
    max_attempts       INTEGER NOT NULL,
    created_at         INTEGER NOT NULL,
    expires_at         INTEGER NOT NULL,
    finished_at        INTEGER,
    source             TEXT,
    price_currency     TEXT,
    price_amount       REAL,
    has_call           INTEGER NOT NULL,
    call_result        TEXT,
    call_complete      INTEGER NOT NULL DEFAULT 0,
    billable_duration  INTEGER NOT NULL DEFAULT 0,
    termination_currency TEXT,
    termination_amount REAL,
    locale             TEXT,
    version            INTEGER NOT NULL
) WITHOUT ROWID;

-- A reference is unique per application.
CREATE UNIQUE INDEX verifications_reference ON verifications (app, reference)
    WHERE reference IS NOT NULL;
-- At most one PENDING verification per application, method and number (supersession).
CREATE UNIQUE INDEX verifications_one_pending ON verifications (app, method, endpoint)
    WHERE status = 'PENDING';
CREATE INDEX verifications_identity ON verifications (app, method, endpoint, created_at);
CREATE INDEX verifications_due ON verifications (expires_at) WHERE status = 'PENDING';
