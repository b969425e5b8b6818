//! Rows to contract messages.

use crate::store::logs::LineRow;
use crate::store::runs::{RunRow, StepRow};
use crate::store::tasks::{Budget, TaskRow};
use codingagent_proto::codingagent::common::v1 as common;
use codingagent_proto::codingagent::orchestration::v1 as pb;
use codingagent_proto::codingagent::orchestration::v1::repository::Location;
use codingagent_proto::helpers::timestamp;
use prost::Message;

pub(crate) const REPO_GIT_URL: i16 = 1;
pub(crate) const REPO_LOCAL_PATH: i16 = 2;
pub(crate) const REPO_GITHUB: i16 = 4;

pub(crate) fn repository(kind: i16, location: &str, base_branch: &str) -> pb::Repository {
    let location = match kind {
        REPO_LOCAL_PATH => Location::LocalPath(location.to_owned()),
        REPO_GITHUB => Location::RepositoryId(location.to_owned()),
        _ => Location::GitUrl(location.to_owned()),
    };
    pb::Repository { location: Some(location), base_branch: base_branch.to_owned() }
}

pub(crate) fn budget(b: Budget) -> pb::TaskBudget {
    pb::TaskBudget {
        max_tokens: b.tokens,
        max_iterations: b.iterations,
        max_wall_time: Some(prost_types::Duration { seconds: b.wall_secs, nanos: 0 }),
    }
}

pub(crate) fn usage(input_tokens: i64, output_tokens: i64) -> common::TokenUsage {
    common::TokenUsage { input_tokens, output_tokens }
}

pub(crate) fn task(row: &TaskRow) -> pb::Task {
    pb::Task {
        id: row.id.to_string(),
        owner: row.owner.clone(),
        create_time: Some(timestamp(row.created_at)),
        update_time: Some(timestamp(row.updated_at)),
        text: row.text.clone(),
        repository: Some(repository(row.repo_kind, &row.repo_location, &row.base_branch)),
        state: i32::from(row.state),
        classification: row.classification(),
        strategy: i32::from(row.strategy),
        model: row.model.clone(),
        budget: Some(budget(Budget {
            tokens: row.max_tokens,
            iterations: row.max_iterations,
            wall_secs: row.max_wall_secs,
        })),
        pull_request_url: row.pull_request_url.clone(),
        token_usage: Some(usage(row.input_tokens, row.output_tokens)),
        iterations: row.iterations,
        failure: row.failure.as_deref().and_then(|b| pb::TaskFailure::decode(b).ok()),
        origin: pb::TaskOrigin::decode(row.origin.as_slice()).ok(),
        current_run_id: row.current_run_id.map(|id| id.to_string()).unwrap_or_default(),
        run_count: row.run_count,
        start_time: row.started_at.map(timestamp),
        end_time: row.ended_at.map(timestamp),
        cost: Some(common::Money { currency_code: "USD".into(), micros: row.cost_micros }),
        branch: format!("codingagent/{}", row.id),
        test_command: row.test_command.clone(),
        title: row.title.clone(),
        labels: row.labels.clone(),
        total_budget: Some(budget(Budget {
            tokens: row.total_tokens,
            iterations: row.total_iterations,
            wall_secs: row.total_wall_secs,
        })),
        pull_request_id: row.pull_request_id.clone(),
        ab_test_id: row.ab_test_id.clone(),
        ab_variant_id: row.ab_variant_id.clone(),
    }
}

pub(crate) fn run(row: &RunRow) -> pb::Run {
    pb::Run {
        id: row.id.to_string(),
        task_id: row.task_id.to_string(),
        attempt: row.attempt,
        state: i32::from(row.state),
        create_time: Some(timestamp(row.created_at)),
        update_time: Some(timestamp(row.updated_at)),
        start_time: row.started_at.map(timestamp),
        end_time: row.ended_at.map(timestamp),
        worker_id: row.worker_id.clone(),
        lease_expire_time: row.lease_expires_at.map(timestamp),
        resume_count: row.resume_count,
        strategy: i32::from(row.strategy),
        model: row.model.clone(),
        budget: Some(budget(row.budget())),
        token_usage: Some(usage(row.input_tokens, row.output_tokens)),
        iterations: row.iterations,
        failure: row.failure(),
        steps: Vec::new(),
        plan_items: Vec::new(),
    }
}

pub(crate) fn step(row: &StepRow) -> pb::Step {
    let checkpoint = row.checkpoint.as_ref().map(|state| pb::Checkpoint {
        commit_sha: row.commit_sha.clone(),
        create_time: row.ended_at.map(timestamp),
        state: Some(json_struct(state)),
    });
    pb::Step {
        id: row.id.to_string(),
        run_id: row.run_id.to_string(),
        index: row.index,
        kind: i32::from(row.kind),
        state: i32::from(row.state),
        iteration: row.iteration,
        start_time: Some(timestamp(row.started_at)),
        end_time: row.ended_at.map(timestamp),
        summary: row.summary.clone(),
        token_usage: Some(usage(row.input_tokens, row.output_tokens)),
        checkpoint,
        first_log_seq: row.first_log_seq,
        last_log_seq: row.last_log_seq,
        error_message: row.error_message.clone(),
    }
}

pub(crate) fn line(row: &LineRow) -> pb::LogLine {
    pb::LogLine {
        seq: row.seq,
        time: Some(timestamp(row.time)),
        level: i32::from(row.level),
        run_id: row.run_id.map(|id| id.to_string()).unwrap_or_default(),
        step_id: row.step_id.map(|id| id.to_string()).unwrap_or_default(),
        source: i32::from(row.source),
        message: row.message.clone(),
        fields: row.fields.as_ref().map(json_struct),
    }
}

/// A JSON object as a `google.protobuf.Struct` (anything else is wrapped as `{"value": …}`).
pub(crate) fn json_struct(value: &serde_json::Value) -> prost_types::Struct {
    match json_value(value).kind {
        Some(prost_types::value::Kind::StructValue(s)) => s,
        other => prost_types::Struct {
            fields: [("value".to_owned(), prost_types::Value { kind: other })].into_iter().collect(),
        },
    }
}

fn json_value(value: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    use serde_json::Value;
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => {
            Kind::ListValue(prost_types::ListValue { values: items.iter().map(json_value).collect() })
        }
        Value::Object(map) => Kind::StructValue(prost_types::Struct {
            fields: map.iter().map(|(k, v)| (k.clone(), json_value(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}
