-- The llm service's schema: the model registry snapshot, a record of every call, token
-- budgets, A/B tests with their outcomes, and defaults promoted from A/B winners.

CREATE TABLE models (
    id              TEXT PRIMARY KEY,                 -- "<provider>/<name>"
    provider        TEXT        NOT NULL,
    provider_kind   SMALLINT    NOT NULL,
    name            TEXT        NOT NULL,
    family          TEXT        NOT NULL DEFAULT '',
    parameter_count BIGINT      NOT NULL DEFAULT 0,
    quantization    TEXT        NOT NULL DEFAULT '',
    size_bytes      BIGINT      NOT NULL DEFAULT 0,
    context_length  INTEGER     NOT NULL DEFAULT 0,
    embedding       BOOLEAN     NOT NULL DEFAULT false,
    loaded          BOOLEAN     NOT NULL DEFAULT false,
    digest          TEXT        NOT NULL DEFAULT '',
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    synced_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE usage_records (
    id               UUID PRIMARY KEY,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    caller_kind      SMALLINT    NOT NULL,
    caller_id        TEXT        NOT NULL,
    user_id          TEXT,                            -- the user charged; NULL for a service's own calls
    task_id          TEXT,
    model            TEXT        NOT NULL,
    provider         TEXT        NOT NULL,
    kind             SMALLINT    NOT NULL,
    outcome          SMALLINT    NOT NULL,
    input_tokens     BIGINT      NOT NULL CHECK (input_tokens >= 0),
    output_tokens    BIGINT      NOT NULL CHECK (output_tokens >= 0),
    latency_ms       BIGINT      NOT NULL,
    ttft_ms          BIGINT,
    cost_micros      BIGINT      NOT NULL DEFAULT 0,
    cache_hit        BOOLEAN     NOT NULL DEFAULT false,
    selection_reason SMALLINT    NOT NULL DEFAULT 0,
    ab_test_id       UUID,
    ab_variant_id    TEXT,
    finish_reason    SMALLINT    NOT NULL DEFAULT 0,
    task_type        SMALLINT    NOT NULL DEFAULT 0,
    complexity       SMALLINT    NOT NULL DEFAULT 0,
    language         SMALLINT    NOT NULL DEFAULT 0
);
CREATE INDEX usage_by_user ON usage_records (user_id, created_at DESC);
CREATE INDEX usage_by_time ON usage_records (created_at DESC, id DESC);
CREATE INDEX usage_by_provider ON usage_records (provider, created_at);

CREATE TABLE budgets (
    subject_kind        TEXT        NOT NULL CHECK (subject_kind IN ('user', 'provider')),
    subject             TEXT        NOT NULL,
    monthly_token_limit BIGINT      NOT NULL CHECK (monthly_token_limit >= 0),
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_by          TEXT        NOT NULL,
    PRIMARY KEY (subject_kind, subject)
);

CREATE TABLE ab_tests (
    id                UUID PRIMARY KEY,
    name              TEXT             NOT NULL,
    description       TEXT             NOT NULL DEFAULT '',
    owner             TEXT             NOT NULL,
    request_id        TEXT,
    state             SMALLINT         NOT NULL,
    variants          JSONB            NOT NULL,
    scope             JSONB            NOT NULL,
    alpha             DOUBLE PRECISION NOT NULL,
    min_samples       INTEGER          NOT NULL,
    created_at        TIMESTAMPTZ      NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ      NOT NULL DEFAULT now(),
    stopped_at        TIMESTAMPTZ,
    winner_variant_id TEXT,
    promoted          BOOLEAN          NOT NULL DEFAULT false,
    UNIQUE (owner, request_id)
);
-- Names identify running tests to operators.
CREATE UNIQUE INDEX ab_tests_running_name ON ab_tests (name) WHERE state = 1;

CREATE TABLE ab_outcomes (
    id            BIGSERIAL PRIMARY KEY,
    ab_test_id    UUID             NOT NULL REFERENCES ab_tests (id),
    variant_id    TEXT             NOT NULL,
    subject_id    TEXT             NOT NULL,
    success       BOOLEAN          NOT NULL,
    latency_ms    BIGINT           NOT NULL DEFAULT 0,
    tokens        BIGINT           NOT NULL DEFAULT 0,
    quality_score DOUBLE PRECISION,
    request_key   TEXT,
    created_at    TIMESTAMPTZ      NOT NULL DEFAULT now(),
    UNIQUE (ab_test_id, request_key)
);
CREATE INDEX ab_outcomes_by_test ON ab_outcomes (ab_test_id, variant_id);

-- A model promoted as the default (from an A/B winner), consulted before the hardware default.
CREATE TABLE promoted_defaults (
    scope_key  TEXT PRIMARY KEY,
    model      TEXT        NOT NULL,
    ab_test_id UUID,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Task outcomes per model, from orchestration's TaskSucceeded/TaskFailed events: what the
-- learned selector learns from.
CREATE TABLE model_outcomes (
    task_id     TEXT PRIMARY KEY,
    model       TEXT        NOT NULL,
    task_type   SMALLINT    NOT NULL DEFAULT 0,
    complexity  SMALLINT    NOT NULL DEFAULT 0,
    language    SMALLINT    NOT NULL DEFAULT 0,
    success     BOOLEAN     NOT NULL,
    tokens      BIGINT      NOT NULL DEFAULT 0,
    cost_micros BIGINT      NOT NULL DEFAULT 0,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX model_outcomes_by_bucket ON model_outcomes (task_type, complexity, model);
