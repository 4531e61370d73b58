-- verifyd PostgreSQL schema, version 1 (mirrors the SQLite schema, version 1).
-- Timestamps are timestamptz (microsecond precision, like the SQLite microseconds);
-- unsigned 32-bit counters are bigint so every u32 fits.
CREATE TABLE applications (
    key          text PRIMARY KEY,
    name         text NOT NULL,
    secret       text NOT NULL,
    callback_url text,
    min_auth     text NOT NULL,
    created_at   timestamptz NOT NULL
);

CREATE TABLE server_keys (
    name  text PRIMARY KEY,
    value bytea NOT NULL
);

CREATE TABLE verifications (
    id                   uuid PRIMARY KEY,
    app                  text NOT NULL,
    method               text NOT NULL,
    endpoint             text NOT NULL,             -- E.164
    country_code         integer NOT NULL,
    region               text,
    status               text NOT NULL,
    reason               text,
    reference            text,
    custom               text,
    secret_hash          bytea NOT NULL,            -- HMAC-SHA256; never the code itself
    code_type            text,
    attempts             bigint NOT NULL,
    max_attempts         bigint NOT NULL,
    created_at           timestamptz NOT NULL,
    expires_at           timestamptz NOT NULL,
    finished_at          timestamptz,
    source               text,
    price_currency       text,
    price_amount         double precision,
    has_call             boolean NOT NULL,
    call_result          text,
    call_complete        boolean NOT NULL DEFAULT false,
    billable_duration    bigint NOT NULL DEFAULT 0,
    termination_currency text,
    termination_amount   double precision,
    locale               text,
    version              bigint NOT NULL
);

-- A reference is unique per application. The store maps a violation of this index, by its
-- name, to `Conflict { constraint: "reference" }`.
CREATE UNIQUE INDEX verifications_reference ON verifications (app, reference)
    WHERE reference IS NOT NULL;
-- At most one PENDING verification per application, method and number (supersession).
-- The store retries a start that loses a race on this index.
CREATE UNIQUE INDEX verifications_one_pending ON verifications (app, method, endpoint)
    WHERE status = 'PENDING';
CREATE INDEX verifications_identity ON verifications (app, method, endpoint, created_at);
CREATE INDEX verifications_due ON verifications (expires_at) WHERE status = 'PENDING';
