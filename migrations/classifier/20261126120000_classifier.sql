-- The classifier's data: classifications and their corrections, training samples and the
-- immutable snapshots runs train on, model versions with their ONNX artifacts, and training
-- jobs. Enum columns hold the contract's numeric values.

CREATE TABLE classifications (
    id            uuid PRIMARY KEY,
    -- The user the classification belongs to (the user a service acted for).
    owner         text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    task_id       text,
    task_type     smallint NOT NULL,
    complexity    smallint NOT NULL,
    decided_by    smallint NOT NULL,
    model_version text,
    -- The codingagent.classifier.v1.Classification as returned, without feedback.
    body          bytea NOT NULL
);
CREATE INDEX classifications_task ON classifications (task_id) WHERE task_id IS NOT NULL;

CREATE TABLE feedback (
    id                   uuid PRIMARY KEY,
    classification_id    uuid NOT NULL REFERENCES classifications (id) ON DELETE CASCADE,
    owner                text NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    corrected_task_type  smallint NOT NULL,
    corrected_complexity smallint NOT NULL,
    comment              text NOT NULL DEFAULT ''
);
CREATE INDEX feedback_latest ON feedback (classification_id, created_at DESC);

-- Samples are never updated, only superseded, so a snapshot keeps meaning what it trained on.
CREATE TABLE samples (
    id            bigserial PRIMARY KEY,
    source        smallint NOT NULL,
    -- What produced the sample: `package@version` for seed rows, the feedback id, the task id.
    -- Unique per source, which makes every producer exactly-once.
    origin        text NOT NULL,
    -- Samples sharing a key replace each other: the latest correction of a classification wins.
    supersede_key text,
    text          text NOT NULL,
    task_type     smallint NOT NULL,
    complexity    smallint NOT NULL,
    -- Stable mark in [0, 1): the sample is held out when below the run's holdout fraction.
    split         double precision NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    superseded_at timestamptz
);
CREATE UNIQUE INDEX samples_origin ON samples (source, origin);
CREATE UNIQUE INDEX samples_current ON samples (supersede_key)
    WHERE superseded_at IS NULL AND supersede_key IS NOT NULL;

CREATE TABLE snapshots (
    id           uuid PRIMARY KEY,
    created_at   timestamptz NOT NULL DEFAULT now(),
    sample_count bigint NOT NULL
);

CREATE TABLE snapshot_samples (
    snapshot_id uuid NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,
    sample_id   bigint NOT NULL REFERENCES samples (id),
    PRIMARY KEY (snapshot_id, sample_id)
);

CREATE TABLE training_jobs (
    id                 uuid PRIMARY KEY,
    state              smallint NOT NULL,
    requested_by_kind  smallint NOT NULL,
    requested_by       text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    finished_at        timestamptz,
    snapshot_id        uuid REFERENCES snapshots (id),
    sample_count       bigint NOT NULL DEFAULT 0,
    candidate_model_id uuid,
    promoted           boolean NOT NULL DEFAULT false,
    failure_reason     text NOT NULL DEFAULT ''
);
-- One training run at a time across replicas: PENDING (1) or RUNNING (2).
CREATE UNIQUE INDEX training_jobs_one_active ON training_jobs ((true)) WHERE state IN (1, 2);

CREATE TABLE models (
    id                    uuid PRIMARY KEY,
    version               bigserial UNIQUE,
    status                smallint NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    feature_version       text NOT NULL,
    training_sample_count bigint NOT NULL,
    snapshot_id           uuid REFERENCES snapshots (id),
    training_job_id       uuid REFERENCES training_jobs (id),
    artifact              bytea NOT NULL,
    artifact_sha256       text NOT NULL,
    -- codingagent.classifier.v1.ModelMetrics, encoded.
    metrics               bytea NOT NULL,
    baseline_metrics      bytea,
    baseline_model_id     uuid,
    rejection_reason      text NOT NULL DEFAULT '',
    promoted_at           timestamptz,
    retired_at            timestamptz,
    promoted_by_kind      smallint,
    promoted_by           text
);
-- Exactly one model serves (status SERVING = 1).
CREATE UNIQUE INDEX models_one_serving ON models ((true)) WHERE status = 1;
CREATE INDEX models_status ON models (status, version DESC);
