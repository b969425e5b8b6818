-- Events a consumer can never apply (a payload that does not decode, a message its handler
-- calls permanently wrong). They are set aside here, with the reason, instead of blocking
-- their partition forever; the consumer moves on. An operator lists and replays them with
-- `codingagent dead-letters`.
CREATE TABLE dead_letters (
    id              BIGSERIAL   PRIMARY KEY,
    consumer        TEXT        NOT NULL,
    event_id        TEXT        NOT NULL,
    topic           TEXT        NOT NULL,
    kafka_partition INTEGER     NOT NULL,
    kafka_offset    BIGINT      NOT NULL,
    event_type      TEXT        NOT NULL,
    event_key       TEXT,
    payload         BYTEA       NOT NULL,
    headers         JSONB       NOT NULL DEFAULT '{}'::jsonb,
    reason          TEXT        NOT NULL,
    failed_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    replayed_at     TIMESTAMPTZ,
    UNIQUE (consumer, event_id)
);
CREATE INDEX dead_letters_by_age ON dead_letters (failed_at);
