-- Orchestration: tasks, their runs and steps (checkpoints), the task log, and the change
-- feed WatchTasks replays. Enum columns hold the proto enum numbers.

CREATE TABLE tasks (
    id                 uuid PRIMARY KEY,
    owner              text NOT NULL,
    title              text NOT NULL,
    text               text NOT NULL,
    labels             text[] NOT NULL DEFAULT '{}',
    -- 1 git_url, 2 local_path, 4 repository_id (the Repository.location field numbers).
    repo_kind          smallint NOT NULL,
    repo_location      text NOT NULL,
    base_branch        text NOT NULL DEFAULT '',
    test_command       text NOT NULL DEFAULT '',
    requested_strategy smallint NOT NULL DEFAULT 0,
    requested_model    text NOT NULL DEFAULT '',
    strategy           smallint NOT NULL DEFAULT 0,
    model              text NOT NULL DEFAULT '',
    -- Per-run budget and the task's total across runs.
    max_tokens         bigint NOT NULL,
    max_iterations     integer NOT NULL,
    max_wall_secs      bigint NOT NULL,
    total_tokens       bigint NOT NULL,
    total_iterations   integer NOT NULL,
    total_wall_secs    bigint NOT NULL,
    state              smallint NOT NULL,
    classification     bytea,
    ab_test_id         text NOT NULL DEFAULT '',
    ab_variant_id      text NOT NULL DEFAULT '',
    origin             bytea NOT NULL,
    failure            bytea,
    pull_request_url   text NOT NULL DEFAULT '',
    pull_request_id    text NOT NULL DEFAULT '',
    current_run_id     uuid,
    run_count          integer NOT NULL DEFAULT 0,
    input_tokens       bigint NOT NULL DEFAULT 0,
    output_tokens      bigint NOT NULL DEFAULT 0,
    iterations         integer NOT NULL DEFAULT 0,
    cost_micros        bigint NOT NULL DEFAULT 0,
    -- The latest log line's seq; writers take the row lock to allocate the next ones.
    last_log_seq       bigint NOT NULL DEFAULT 0,
    -- Classification and model selection after a crash: whoever holds the lease works on it.
    pipeline_lease     timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    started_at         timestamptz,
    ended_at           timestamptz,
    deleted_at         timestamptz,
    purge_at           timestamptz
);
CREATE INDEX tasks_by_owner ON tasks (owner, created_at DESC, id DESC) WHERE deleted_at IS NULL;
CREATE INDEX tasks_by_time ON tasks (created_at DESC, id DESC) WHERE deleted_at IS NULL;
CREATE INDEX tasks_in_pipeline ON tasks (created_at) WHERE state IN (1, 2) AND deleted_at IS NULL;
CREATE INDEX tasks_purge ON tasks (purge_at) WHERE deleted_at IS NOT NULL;

CREATE TABLE runs (
    id               uuid PRIMARY KEY,
    task_id          uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    owner            text NOT NULL,
    attempt          integer NOT NULL,
    state            smallint NOT NULL,
    strategy         smallint NOT NULL,
    model            text NOT NULL,
    max_tokens       bigint NOT NULL,
    max_iterations   integer NOT NULL,
    max_wall_secs    bigint NOT NULL,
    input_tokens     bigint NOT NULL DEFAULT 0,
    output_tokens    bigint NOT NULL DEFAULT 0,
    iterations       integer NOT NULL DEFAULT 0,
    failure          bytea,
    -- The run whose last checkpoint this one continues from (RetryTask resume_from_checkpoint).
    resume_from      uuid,
    worker_id        text NOT NULL DEFAULT '',
    lease_expires_at timestamptz,
    resume_count     integer NOT NULL DEFAULT 0,
    cancel_requested boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    ended_at         timestamptz,
    UNIQUE (task_id, attempt)
);
-- Workers look here for work: queued runs, and running ones whose lease lapsed.
CREATE INDEX runs_claimable ON runs (created_at) WHERE state IN (1, 2);
CREATE INDEX runs_by_owner ON runs (owner, created_at DESC);

CREATE TABLE steps (
    id            uuid PRIMARY KEY,
    run_id        uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    index         integer NOT NULL,
    kind          smallint NOT NULL,
    state         smallint NOT NULL,
    iteration     integer NOT NULL DEFAULT 0,
    summary       text NOT NULL DEFAULT '',
    error_message text NOT NULL DEFAULT '',
    input_tokens  bigint NOT NULL DEFAULT 0,
    output_tokens bigint NOT NULL DEFAULT 0,
    -- The run's progress after the step (JSON), written when it completes: the checkpoint.
    checkpoint    jsonb,
    commit_sha    text NOT NULL DEFAULT '',
    first_log_seq bigint NOT NULL DEFAULT 0,
    last_log_seq  bigint NOT NULL DEFAULT 0,
    started_at    timestamptz NOT NULL DEFAULT now(),
    ended_at      timestamptz,
    UNIQUE (run_id, index)
);

CREATE TABLE log_lines (
    task_id  uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    seq      bigint NOT NULL,
    time     timestamptz NOT NULL DEFAULT now(),
    level    smallint NOT NULL,
    source   smallint NOT NULL,
    run_id   uuid,
    step_id  uuid,
    message  text NOT NULL,
    fields   jsonb,
    search   tsvector GENERATED ALWAYS AS (to_tsvector('simple', message)) STORED,
    PRIMARY KEY (task_id, seq)
);
CREATE INDEX log_lines_search ON log_lines USING gin (search);

-- Every task state change, for WatchTasks replays (kept 24 hours at least).
CREATE TABLE task_changes (
    seq            bigserial PRIMARY KEY,
    task_id        uuid NOT NULL,
    owner          text NOT NULL,
    previous_state smallint NOT NULL,
    state          smallint NOT NULL,
    -- The encoded Task after the change.
    task           bytea NOT NULL,
    -- Who caused it (actor kind:id[ via service]) and why, the audit trail of transitions.
    actor          text NOT NULL,
    reason         text NOT NULL DEFAULT '',
    changed_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX task_changes_by_owner ON task_changes (owner, seq);
