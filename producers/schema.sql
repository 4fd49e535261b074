-- The API's own record of accepted requests: quota usage is counted here, in the same
-- transaction that accepts a request, so a burst cannot overshoot a quota while the
-- projection catches up; GET /servers/{id} falls back to it for a server just accepted.

CREATE TABLE IF NOT EXISTS accepted_instances (
    uuid           text PRIMARY KEY,
    project_id     text        NOT NULL,
    user_id        text        NOT NULL,
    name           text        NOT NULL,
    reservation_id text        NOT NULL,
    vcpus          int         NOT NULL,
    memory_mb      int         NOT NULL,
    flavor         jsonb       NOT NULL,
    image_id       text,
    request_id     text        NOT NULL,
    created_at     timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS accepted_by_project ON accepted_instances (project_id);
-- A DELETE accepted for the instance (in the transaction that queues its event), so the
-- conductor, seeing a placement after it, never dispatches a build the user deleted.
ALTER TABLE accepted_instances ADD COLUMN IF NOT EXISTS delete_request_id text;
ALTER TABLE accepted_instances ADD COLUMN IF NOT EXISTS delete_requested_at timestamptz;

-- The API's transactional outbox: a request's events are committed with its accepted rows,
-- then published; whatever a crash leaves here is published by the relay (same event ids).
CREATE TABLE IF NOT EXISTS outbox (
    event_id   text PRIMARY KEY,
    topic      text        NOT NULL,
    key        bytea       NOT NULL,
    value      bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    seq        bigserial  -- insertion order: a fact goes out before the command it leads to
);
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS seq bigserial;

-- Identity: revoked tokens (until they would have expired anyway) and failed logins
-- (brute-force lockout); shared by every API replica.
CREATE TABLE IF NOT EXISTS revoked_tokens (
    token_id   text PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS auth_failures (
    username  text        NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS auth_failures_by_user ON auth_failures (username, failed_at);
