-- The transactional outbox and the consumer inbox (ARCHITECTURE §6). The kernel applies these
-- migrations to every service's own schema before the service's migrations, so each service
-- writes events in the same transaction as its state change.

CREATE TABLE outbox (
    id          BIGSERIAL PRIMARY KEY,
    event_id    UUID        NOT NULL UNIQUE,
    topic       TEXT        NOT NULL,
    event_key   TEXT        NOT NULL,
    event_type  TEXT        NOT NULL,
    payload     BYTEA       NOT NULL,
    -- W3C trace context of the transaction that wrote the event, sent as Kafka headers.
    trace_context JSONB     NOT NULL DEFAULT '{}'::jsonb,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at     TIMESTAMPTZ,
    attempts    INTEGER     NOT NULL DEFAULT 0,
    last_error  TEXT
);

-- The relay reads unsent rows in id order; sent rows are never scanned.
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;

CREATE TABLE inbox (
    consumer     TEXT        NOT NULL,
    event_id     TEXT        NOT NULL,
    topic        TEXT        NOT NULL,
    kafka_partition INTEGER  NOT NULL,
    kafka_offset BIGINT      NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
