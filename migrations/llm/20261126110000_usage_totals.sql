-- Month-to-date tokens per budget subject, kept with every usage record, so a budget check is
-- one indexed lookup instead of a sum over the month's records.
CREATE TABLE usage_totals (
    subject_kind TEXT   NOT NULL CHECK (subject_kind IN ('user', 'provider')),
    subject      TEXT   NOT NULL,
    period       DATE   NOT NULL,                 -- first day of the month (UTC)
    tokens       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (subject_kind, subject, period)
);

INSERT INTO usage_totals (subject_kind, subject, period, tokens)
SELECT 'user', user_id, date_trunc('month', created_at AT TIME ZONE 'UTC')::date, SUM(input_tokens + output_tokens)
FROM usage_records WHERE user_id IS NOT NULL AND NOT cache_hit GROUP BY 2, 3;

INSERT INTO usage_totals (subject_kind, subject, period, tokens)
SELECT 'provider', provider, date_trunc('month', created_at AT TIME ZONE 'UTC')::date, SUM(input_tokens + output_tokens)
FROM usage_records WHERE NOT cache_hit GROUP BY 2, 3;
