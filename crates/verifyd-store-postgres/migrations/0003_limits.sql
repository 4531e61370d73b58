-- verifyd PostgreSQL schema, version 3: rate-limit and fraud state shared by every node.
CREATE TABLE counters (
    key        text NOT NULL,
    bucket     bigint NOT NULL,         -- bucket start, unix microseconds (aligned to its width)
    value      bigint NOT NULL,
    expires_at bigint NOT NULL,         -- unix microseconds: when it leaves every window it serves
    PRIMARY KEY (key, bucket)
);
CREATE INDEX counters_expiry ON counters (expires_at);

CREATE TABLE gates (
    key     text PRIMARY KEY,
    last_at timestamptz NOT NULL
);

CREATE TABLE token_buckets (
    key        text PRIMARY KEY,
    tokens     double precision NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE TABLE blocks (
    key        text PRIMARY KEY,
    until_at   timestamptz NOT NULL,
    reason     text NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE INDEX verifications_finished ON verifications (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX events_verification ON events (verification_id);
