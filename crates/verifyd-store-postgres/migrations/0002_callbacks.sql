-- verifyd PostgreSQL schema, version 2: callback settings and the transactional outbox.
ALTER TABLE applications ADD COLUMN allow_private_callbacks boolean NOT NULL DEFAULT false;
ALTER TABLE applications ADD COLUMN callback_fail_open boolean NOT NULL DEFAULT false;

CREATE TABLE events (
    id              bigserial PRIMARY KEY,
    app             text NOT NULL,
    verification_id uuid NOT NULL,
    kind            text NOT NULL,           -- result | sms_delivered:ok | sms_delivered:failed
    state           text NOT NULL,           -- pending | delivered | dead
    attempts        bigint NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL,
    retry_from      timestamptz NOT NULL,
    next_attempt_at timestamptz NOT NULL,
    last_error      text,
    delivered_at    timestamptz
);
CREATE INDEX events_due ON events (next_attempt_at, id) WHERE state = 'pending';
CREATE INDEX events_by_state ON events (state, id);
