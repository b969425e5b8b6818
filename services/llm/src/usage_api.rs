//! Usage and budget RPCs. Users see their own usage and budget; other users' and providers'
//! need the operator role.

use crate::convert;
use crate::convert::usage_record;
use crate::engine::Engine;
use crate::error::LlmError;
use crate::request::texts;
use crate::store::{self, Aggregate, Subject, UsageFilter};
use codingagent_kernel::error::permission_denied;
use codingagent_kernel::idempotency::{self, Key};
use codingagent_kernel::identity::Caller;
use codingagent_kernel::pagination;
use codingagent_kernel::validate;
use codingagent_proto::codingagent::common::v1::TokenUsage;
use codingagent_proto::codingagent::llm::v1 as pb;
use std::time::Duration;
use tonic::Status;
use uuid::Uuid;

type Time = chrono::DateTime<chrono::Utc>;

/// The user whose data a request reads: empty means the caller; another user (or `*`, all
/// users) needs the operator role.
fn user_scope(caller: &Caller, requested: &str) -> Result<Option<String>, Status> {
    let own = caller.user_id().map(str::to_owned);
    match requested {
        "" if own.is_some() => Ok(own),
        "" | "*" if caller.is_operator() => Ok(None),
        user if own.as_deref() == Some(user) => Ok(own),
        user if caller.is_operator() && user != "*" => Ok(Some(user.to_owned())),
        _ => Err(permission_denied(
            "OPERATOR_REQUIRED",
            "reading other users' usage requires the operator role",
        )),
    }
}

fn time_range(
    start: Option<&prost_types::Timestamp>,
    end: Option<&prost_types::Timestamp>,
) -> Result<(Option<Time>, Option<Time>), Status> {
    let start = start
        .map(|t| convert::from_timestamp(t).ok_or_else(|| LlmError::invalid("start_time", "out of range")))
        .transpose()?;
    let end = end
        .map(|t| convert::from_timestamp(t).ok_or_else(|| LlmError::invalid("end_time", "out of range")))
        .transpose()?;
    if let (Some(start), Some(end)) = (start, end)
        && start >= end
    {
        return Err(LlmError::invalid("end_time", "must be after start_time").into());
    }
    Ok((start, end))
}

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

pub(crate) async fn list(
    engine: &Engine,
    caller: &Caller,
    r: pb::ListUsageRequest,
) -> Result<pb::ListUsageResponse, Status> {
    let invalid = texts(&[
        ("user_id", &r.user_id),
        ("model", &r.model),
        ("provider", &r.provider),
        ("task_id", &r.task_id),
    ]);
    if !invalid.is_empty() {
        return Err(LlmError::Invalid(invalid).into());
    }
    let limit = pagination::page_size(r.page_size, 100, 1_000)?;
    let after: Option<(chrono::DateTime<chrono::Utc>, Uuid)> = pagination::decode(&r.page_token)?;
    let (start, end) = time_range(r.start_time.as_ref(), r.end_time.as_ref())?;
    let filter = UsageFilter {
        user_id: user_scope(caller, &r.user_id)?,
        model: non_empty(&r.model),
        provider: non_empty(&r.provider),
        task_id: non_empty(&r.task_id),
        start,
        end,
    };
    let rows = store::list_usage(&engine.pool, &filter, after, limit + 1).await.map_err(LlmError::from)?;
    let (rows, next_page_token) = pagination::page(rows, limit, |u| (u.created_at, u.id));
    Ok(pb::ListUsageResponse { records: rows.iter().map(usage_record).collect(), next_page_token })
}

fn aggregate(a: &Aggregate) -> pb::UsageAggregate {
    pb::UsageAggregate {
        call_count: a.calls,
        error_count: a.errors,
        cache_hit_count: a.cache_hits,
        usage: Some(TokenUsage { input_tokens: a.input_tokens, output_tokens: a.output_tokens }),
        cost: Some(convert::usd(a.cost_micros)),
        mean_latency: Some(convert::duration(Duration::from_secs_f64(a.mean_latency_ms.max(0.0) / 1000.0))),
        p95_latency: Some(convert::duration(Duration::from_secs_f64(a.p95_latency_ms.max(0.0) / 1000.0))),
    }
}

pub(crate) async fn summary(
    engine: &Engine,
    caller: &Caller,
    r: pb::GetUsageSummaryRequest,
) -> Result<pb::GetUsageSummaryResponse, Status> {
    let invalid = texts(&[("user_id", &r.user_id), ("provider", &r.provider)]);
    if !invalid.is_empty() {
        return Err(LlmError::Invalid(invalid).into());
    }
    let (start, end) = time_range(r.start_time.as_ref(), r.end_time.as_ref())?;
    let filter = UsageFilter {
        user_id: user_scope(caller, &r.user_id)?,
        provider: non_empty(&r.provider),
        start,
        end,
        ..UsageFilter::default()
    };
    // Grouping expressions are fixed here; nothing from the request reaches the SQL text.
    let group = match pb::UsageGroupBy::try_from(r.group_by) {
        Ok(pb::UsageGroupBy::Unspecified) => None,
        Ok(pb::UsageGroupBy::Model) => Some("model"),
        Ok(pb::UsageGroupBy::Provider) => Some("provider"),
        Ok(pb::UsageGroupBy::User) => Some("COALESCE(user_id, caller_id)"),
        Ok(pb::UsageGroupBy::Day) => Some("to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"),
        Err(_) => return Err(LlmError::invalid("group_by", "unknown grouping").into()),
    };
    let total = store::summarize(&engine.pool, &filter, "''").await.map_err(LlmError::from)?;
    let groups = match group {
        Some(group) => store::summarize(&engine.pool, &filter, group).await.map_err(LlmError::from)?,
        None => Vec::new(),
    };
    Ok(pb::GetUsageSummaryResponse {
        total: Some(total.first().map(aggregate).unwrap_or_else(|| aggregate(&Aggregate::default()))),
        groups: groups
            .iter()
            .map(|g| pb::UsageGroup { key: g.key.clone(), aggregate: Some(aggregate(g)) })
            .collect(),
    })
}

/// The subject a budget request names; unset means the caller's own user budget.
fn subject(caller: &Caller, subject: Option<&pb::BudgetSubject>, reading: bool) -> Result<Subject, Status> {
    use pb::budget_subject::Subject as S;
    let own = caller.user_id();
    let wanted = match subject.and_then(|s| s.subject.as_ref()) {
        None => Subject::User(
            own.ok_or_else(|| LlmError::invalid("subject", "a service must name the budget"))?.to_owned(),
        ),
        Some(S::UserId(user)) if user.is_empty() => {
            return Err(LlmError::invalid("subject.user_id", "must not be empty").into());
        }
        Some(S::Provider(provider)) if provider.is_empty() => {
            return Err(LlmError::invalid("subject.provider", "must not be empty").into());
        }
        Some(S::UserId(user)) if let Err(violation) = validate::text("subject.user_id", user) => {
            return Err(LlmError::Invalid(vec![violation]).into());
        }
        Some(S::Provider(provider)) if let Err(violation) = validate::text("subject.provider", provider) => {
            return Err(LlmError::Invalid(vec![violation]).into());
        }
        Some(S::UserId(user)) => Subject::User(user.clone()),
        Some(S::Provider(provider)) => Subject::Provider(provider.clone()),
    };
    let own_budget = matches!(&wanted, Subject::User(user) if Some(user.as_str()) == own);
    if (reading && own_budget) || caller.is_operator() {
        Ok(wanted)
    } else {
        Err(permission_denied("OPERATOR_REQUIRED", "this budget needs the operator role"))
    }
}

async fn budget(
    engine: &Engine,
    db: impl sqlx::PgExecutor<'_>,
    subject: &Subject,
) -> Result<pb::Budget, Status> {
    let default = match subject {
        Subject::User(_) => engine.config.budgets.default_user_monthly_tokens,
        Subject::Provider(_) => engine.config.budgets.default_provider_monthly_tokens,
    };
    let (start, end) = store::month(chrono::Utc::now());
    let row = store::budget(db, subject, default, start).await.map_err(LlmError::from)?;
    let used = row.used;
    let proto_subject = match subject {
        Subject::User(user) => pb::budget_subject::Subject::UserId(user.clone()),
        Subject::Provider(provider) => pb::budget_subject::Subject::Provider(provider.clone()),
    };
    Ok(pb::Budget {
        subject: Some(pb::BudgetSubject { subject: Some(proto_subject) }),
        monthly_token_limit: row.limit,
        used_tokens: used,
        period_start_time: Some(convert::timestamp(start)),
        period_end_time: Some(convert::timestamp(end)),
        is_default: row.is_default,
        create_time: row.created_at.map(convert::timestamp),
        update_time: row.updated_at.map(convert::timestamp),
        updated_by: row.updated_by,
    })
}

pub(crate) async fn get_budget(
    engine: &Engine,
    caller: &Caller,
    r: pb::GetBudgetRequest,
) -> Result<pb::GetBudgetResponse, Status> {
    let subject = subject(caller, r.subject.as_ref(), true)?;
    Ok(pb::GetBudgetResponse { budget: Some(budget(engine, &engine.pool, &subject).await?) })
}

pub(crate) async fn set_budget(
    engine: &Engine,
    caller: &Caller,
    r: pb::SetBudgetRequest,
) -> Result<pb::SetBudgetResponse, Status> {
    caller.require_operator()?;
    if r.subject.as_ref().and_then(|s| s.subject.as_ref()).is_none() {
        return Err(LlmError::invalid("subject", "name a user or a provider").into());
    }
    let subject = subject(caller, r.subject.as_ref(), false)?;
    if r.monthly_token_limit < 0 {
        return Err(LlmError::invalid("monthly_token_limit", "must not be negative").into());
    }
    idempotency::validate("request_id", &r.request_id).map_err(|v| LlmError::Invalid(vec![v]))?;
    let key = Key::new(caller, "SetBudget", &r.request_id, &r);
    let mut tx = engine.pool.begin().await.map_err(LlmError::from)?;
    if let Some(first) = key.replay(&mut tx).await.map_err(LlmError::from)? {
        return Ok(first);
    }
    store::set_budget(&mut *tx, &subject, r.monthly_token_limit, &caller.subject)
        .await
        .map_err(LlmError::from)?;
    let response = pb::SetBudgetResponse { budget: Some(budget(engine, &mut *tx, &subject).await?) };
    key.remember(&mut tx, &response).await.map_err(LlmError::from)?;
    tx.commit().await.map_err(LlmError::from)?;
    Ok(response)
}
