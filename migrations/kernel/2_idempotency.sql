-- Responses of mutations that carried a `request_id`, so a retry returns the first result
-- instead of acting twice (STYLE §8). Kept for 24 hours by the services' purge.
CREATE TABLE idempotency_keys (
    caller     TEXT        NOT NULL,
    method     TEXT        NOT NULL,
    request_id TEXT        NOT NULL,
    response   BYTEA       NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (caller, method, request_id)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
