-- verifyd PostgreSQL schema, version 4: the delivery job queue and delivery attempts.
CREATE TABLE delivery_jobs (
    id              bigserial PRIMARY KEY,
    verification_id uuid NOT NULL,
    app             text NOT NULL,
    payload         bytea,                   -- sealed message; NULL once finished
    route_index     bigint NOT NULL DEFAULT 0,
    attempts        bigint NOT NULL DEFAULT 0,
    state           text NOT NULL,           -- pending | done
    next_attempt_at timestamptz NOT NULL,
    created_at      timestamptz NOT NULL
);
CREATE INDEX delivery_jobs_due ON delivery_jobs (next_attempt_at, id) WHERE state = 'pending';
CREATE INDEX delivery_jobs_verification ON delivery_jobs (verification_id);

CREATE TABLE delivery_attempts (
    id              bigserial PRIMARY KEY,
    verification_id uuid NOT NULL,
    route           text NOT NULL,
    channel         text NOT NULL,
    message_id      text,
    outcome         text NOT NULL,
    at              timestamptz NOT NULL
);
CREATE INDEX delivery_attempts_verification ON delivery_attempts (verification_id, id);
CREATE INDEX delivery_attempts_message ON delivery_attempts (channel, message_id)
    WHERE message_id IS NOT NULL;
