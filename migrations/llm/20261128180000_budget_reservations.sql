-- Tokens held for calls in flight. A call reserves its estimated tokens before it reaches a
-- provider and gives them back once its real usage is in usage_totals, so parallel calls
-- cannot all pass a nearly spent budget. Reservations are admitted one at a time per subject
-- (under the lock of the subject's usage_totals row). One left behind by a process that died
-- expires instead of holding the budget for the rest of the month.
CREATE TABLE budget_reservations (
    id           UUID PRIMARY KEY,
    subject_kind TEXT        NOT NULL CHECK (subject_kind IN ('user', 'provider')),
    subject      TEXT        NOT NULL,
    tokens       BIGINT      NOT NULL CHECK (tokens >= 0),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX budget_reservations_by_subject ON budget_reservations (subject_kind, subject, expires_at);
CREATE INDEX budget_reservations_by_expiry ON budget_reservations (expires_at);
