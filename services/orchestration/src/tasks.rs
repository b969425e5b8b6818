//! Task RPCs: create, get, list, update, delete, cancel and retry. Everything that changes a
//! task goes through [`lifecycle`] inside the kernel's idempotent `mutate`.

use crate::access::{self, Action};
use crate::convert::{self, REPO_GIT_URL, REPO_GITHUB, REPO_LOCAL_PATH};
use crate::engine::Engine;
use crate::error::{OrchestrationError, Result};
use crate::lifecycle;
use crate::logs::{self, Line};
use crate::quota;
use crate::store::runs;
use crate::store::tasks::{self, Change, Filter, NewTask};
use crate::validate::{self, TaskChecks};
use codingagent_kernel::idempotency::{Key, mutate};
use codingagent_kernel::identity::Caller;
use codingagent_kernel::pagination;
use codingagent_kernel::validate::Violations;
use codingagent_proto::codingagent::events::v1 as events;
use codingagent_proto::codingagent::orchestration::v1 as pb;
use codingagent_proto::codingagent::orchestration::v1::repository::Location;
use codingagent_proto::helpers::{now, timestamp, to_chrono};
use std::sync::Arc;
use uuid::Uuid;

pub(crate) async fn create(
    engine: &Arc<Engine>,
    caller: &Caller,
    request: pb::CreateTaskRequest,
) -> Result<pb::CreateTaskResponse> {
    let owner = if request.on_behalf_of.is_empty() {
        caller.require_user()?.to_owned()
    } else if caller.is_service() {
        request.on_behalf_of.clone()
    } else {
        return Err(OrchestrationError::Denied(
            "SERVICE_REQUIRED",
            "only services may create tasks on behalf of another user".into(),
        ));
    };
    let config = &engine.config;
    let mut v = Violations::default();
    v.task_text("text", &request.text);
    v.title("title", &request.title);
    v.labels("labels", &request.labels);
    v.test_command("test_command", &request.test_command);
    v.model("model", &request.model);
    v.strategy("strategy", request.strategy);
    v.request_id(&request.request_id);
    if !request.on_behalf_of.is_empty() {
        v.text("on_behalf_of", &request.on_behalf_of, 200);
    }
    let (run_defaults, run_max) = validate::run_limits(&config.budgets);
    let budget = v.budget("budget", request.budget.as_ref(), run_defaults, run_max);
    let (task_defaults, task_max) = validate::task_limits(&config.budgets);
    let total = v.budget("total_budget", request.total_budget.as_ref(), task_defaults, task_max);
    let total = tasks::Budget {
        tokens: total.tokens.max(budget.tokens),
        iterations: total.iterations.max(budget.iterations),
        wall_secs: total.wall_secs.max(budget.wall_secs),
    };
    if let Some(asked) = &request.total_budget {
        for (field, asked, run) in [
            ("total_budget.max_tokens", asked.max_tokens, budget.tokens),
            ("total_budget.max_iterations", i64::from(asked.max_iterations), i64::from(budget.iterations)),
        ] {
            if asked > 0 && asked < run {
                v.add(field, "must be at least the per-run budget's");
            }
        }
    }
    let origin = request.origin.clone().unwrap_or_default();
    if pb::TaskOriginKind::try_from(origin.kind).is_err() {
        v.add("origin.kind", "must be a TaskOriginKind value");
    }
    v.text("origin.reference_id", &origin.reference_id, 200);
    let repository = request.repository.clone().unwrap_or_default();
    v.branch("repository.base_branch", &repository.base_branch);
    let (repo_kind, location) = match &repository.location {
        None => {
            v.add("repository", "a git_url, local_path or repository_id is required");
            (0, String::new())
        }
        Some(Location::GitUrl(url)) => {
            v.git_url("repository.git_url", url);
            (REPO_GIT_URL, url.clone())
        }
        Some(Location::LocalPath(path)) => (REPO_LOCAL_PATH, path.clone()),
        Some(Location::RepositoryId(id)) => (REPO_GITHUB, id.clone()),
    };
    v.finish()?;
    match repo_kind {
        REPO_LOCAL_PATH => check_local_path(config.allow_local_repositories, &location)?,
        REPO_GITHUB => {
            return Err(OrchestrationError::precondition(
                "GITHUB_NOT_CONNECTED",
                "repositories of the github service need the github service, which this installation does not run; \
                 use git_url",
            ));
        }
        _ => {}
    }
    if !request.model.is_empty() {
        check_model(engine, &owner, &request.model).await?;
    }

    let key = Key::new(caller, "CreateTask", &request.request_id, &request);
    let actor = caller.actor();
    let (response, created) = mutate(&engine.pool, &key, async |tx| {
        quota::admit_execution(tx, &config.quotas, &owner).await?;
        let id = Uuid::now_v7();
        let title = if request.title.trim().is_empty() {
            validate::title_from(&request.text)
        } else {
            request.title.trim().to_owned()
        };
        let mut origin = origin.clone();
        if origin.kind == 0 {
            origin.kind = pb::TaskOriginKind::Api as i32;
        }
        let new = NewTask {
            id,
            owner: owner.clone(),
            title,
            text: request.text.clone(),
            labels: request.labels.clone(),
            repo_kind,
            repo_location: location.clone(),
            base_branch: repository.base_branch.clone(),
            test_command: request.test_command.clone(),
            requested_strategy: request.strategy as i16,
            requested_model: request.model.clone(),
            budget,
            total,
            origin: origin.clone(),
        };
        let row = tasks::insert(tx, &new).await?;
        lifecycle::record(tx, &row, pb::TaskState::Unspecified, &actor, "created").await?;
        let task = convert::task(&row);
        let event = events::TaskCreated {
            task_id: task.id.clone(),
            actor: Some(actor.clone()),
            occur_time: task.create_time,
            owner: owner.clone(),
            text: task.text.clone(),
            repository: task.repository.clone(),
            requested_strategy: request.strategy,
            requested_model: request.model.clone(),
            budget: task.budget,
            origin: Some(origin),
        };
        lifecycle::publish(tx, &row, &event).await?;
        logs::append(
            tx,
            id,
            &[Line::orchestrator(format!("task created by {}", lifecycle::actor_label(&actor)))],
        )
        .await?;
        Ok::<_, OrchestrationError>((pb::CreateTaskResponse { task: Some(task) }, id))
    })
    .await?;
    if let Some(id) = created {
        let engine = engine.clone();
        tokio::spawn(async move { crate::pipeline::advance(&engine, Some(id)).await });
    }
    Ok(response)
}

fn check_local_path(allowed: bool, path: &str) -> Result<()> {
    if !allowed {
        return Err(OrchestrationError::precondition(
            "LOCAL_REPOSITORIES_DISABLED",
            "this server does not accept local repositories; use git_url",
        ));
    }
    let field = "repository.local_path";
    let p = std::path::Path::new(path);
    if !p.is_absolute() || path.contains("/../") || path.ends_with("/..") {
        return Err(OrchestrationError::invalid(field, "must be an absolute path without '..'"));
    }
    if codingagent_kernel::validate::text(field, path).is_err() {
        return Err(OrchestrationError::invalid(field, "must not contain control characters"));
    }
    match std::fs::metadata(p.join(".git")) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(OrchestrationError::invalid(field, "is not readable by the orchestration service"))
        }
        Err(_) => Err(OrchestrationError::invalid(field, "is not a git working tree (no .git)")),
    }
}

/// An explicit model must be one the llm service knows; when the llm service cannot be
/// asked, the model is accepted and the run fails later if it is wrong.
async fn check_model(engine: &Engine, owner: &str, model: &str) -> Result<()> {
    match engine.clients.select(owner, "", model, &pb::TaskClassification::default()).await {
        Ok(_) => Ok(()),
        Err(why) if why.starts_with("NotFound") || why.starts_with("InvalidArgument") => Err(
            OrchestrationError::invalid("model", format!("is not a model the llm service serves ({why})")),
        ),
        Err(why) => {
            tracing::warn!(error = %why, "cannot check the model override now");
            Ok(())
        }
    }
}

pub(crate) async fn get(
    engine: &Engine,
    caller: &Caller,
    request: pb::GetTaskRequest,
) -> Result<pb::GetTaskResponse> {
    let mut v = Violations::default();
    let id = v.id("task_id", &request.task_id);
    v.finish()?;
    let mut conn = engine.pool.acquire().await?;
    let row = access::find(&mut conn, caller, id.unwrap_or_default(), Action::Read, false).await?;
    Ok(pb::GetTaskResponse { task: Some(convert::task(&row)) })
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ListCursor {
    at: chrono::DateTime<chrono::Utc>,
    id: Uuid,
    /// The filters the token was made for, so a token cannot be replayed on another query.
    query: String,
}

pub(crate) async fn list(
    engine: &Engine,
    caller: &Caller,
    request: pb::ListTasksRequest,
) -> Result<pb::ListTasksResponse> {
    let mut v = Violations::default();
    let mut states = Vec::new();
    for (i, s) in request.states.iter().enumerate() {
        match pb::TaskState::try_from(*s) {
            Ok(pb::TaskState::Unspecified) | Err(_) => {
                v.add(&format!("states[{i}]"), "must be a TaskState value")
            }
            Ok(state) => states.push(state as i16),
        }
    }
    v.text("repository", &request.repository, 2_048);
    v.text("label", &request.label, 64);
    let after = request.create_time_after.as_ref().map(|t| (to_chrono(t), "create_time_after"));
    let before = request.create_time_before.as_ref().map(|t| (to_chrono(t), "create_time_before"));
    for (parsed, field) in [after, before].into_iter().flatten() {
        if parsed.is_none() {
            v.add(field, "must be a valid timestamp");
        }
    }
    v.finish()?;
    let limit = pagination::page_size(request.page_size, 20, 100)?;
    let owner = if request.all_owners {
        if !caller.has_role(codingagent_kernel::identity::OPERATOR_ROLE) {
            return Err(OrchestrationError::Denied(
                "OPERATOR_REQUIRED",
                "listing every owner's tasks requires the operator role".into(),
            ));
        }
        None
    } else {
        Some(caller.require_user()?.to_owned())
    };
    let query = {
        let mut fingerprint = request.clone();
        fingerprint.page_token.clear();
        fingerprint.page_size = 0;
        format!("{:x}", crate::text::fnv(&prost::Message::encode_to_vec(&fingerprint)))
    };
    let cursor: Option<ListCursor> = pagination::decode(&request.page_token)?;
    if cursor.as_ref().is_some_and(|c| c.query != query) {
        return Err(OrchestrationError::invalid("page_token", "belongs to a different query"));
    }
    let filter = Filter {
        owner,
        states,
        repository: (!request.repository.is_empty()).then(|| request.repository.clone()),
        label: (!request.label.is_empty()).then(|| request.label.clone()),
        after: after.and_then(|(t, _)| t),
        before: before.and_then(|(t, _)| t),
    };
    let mut conn = engine.pool.acquire().await?;
    let rows = tasks::list(&mut conn, &filter, cursor.map(|c| (c.at, c.id)), limit + 1).await?;
    let (rows, next_page_token) =
        pagination::page(rows, limit, |r| ListCursor { at: r.created_at, id: r.id, query: query.clone() });
    Ok(pb::ListTasksResponse { tasks: rows.iter().map(convert::task).collect(), next_page_token })
}

pub(crate) async fn update(
    engine: &Engine,
    caller: &Caller,
    request: pb::UpdateTaskRequest,
) -> Result<pb::UpdateTaskResponse> {
    let mut v = Violations::default();
    let id = v.id("task_id", &request.task_id);
    let paths = request.update_mask.as_ref().map(|m| m.paths.clone()).unwrap_or_default();
    if paths.is_empty() {
        v.add("update_mask", "must name at least one of title, text, labels");
    }
    for (i, path) in paths.iter().enumerate() {
        match path.as_str() {
            "title" => v.title("title", &request.title),
            "text" => v.task_text("text", &request.text),
            "labels" => v.labels("labels", &request.labels),
            _ => v.add(&format!("update_mask.paths[{i}]"), "must be title, text or labels"),
        }
    }
    v.request_id(&request.request_id);
    v.finish()?;
    let key = Key::new(caller, "UpdateTask", &request.request_id, &request);
    let actor = caller.actor();
    let (response, _) = mutate(&engine.pool, &key, async |tx| {
        let row = access::find(tx, caller, id.unwrap_or_default(), Action::Change, true).await?;
        if crate::state::has_started(row.state()) {
            return Err(OrchestrationError::precondition(
                "TASK_STARTED",
                format!("a task in state {} can no longer be changed", crate::state::name(row.state())),
            ));
        }
        let has = |p: &str| paths.iter().any(|x| x == p);
        let title = if has("title") {
            if request.title.trim().is_empty() {
                validate::title_from(&request.text)
            } else {
                request.title.trim().into()
            }
        } else {
            row.title.clone()
        };
        let text = if has("text") { request.text.clone() } else { row.text.clone() };
        let labels = if has("labels") { request.labels.clone() } else { row.labels.clone() };
        let updated = tasks::update_fields(tx, row.id, &title, &text, &labels).await?;
        let task = convert::task(&updated);
        let event = events::TaskUpdated {
            task_id: task.id.clone(),
            actor: Some(actor.clone()),
            occur_time: Some(now()),
            owner: task.owner.clone(),
            changed_fields: paths.clone(),
            task: Some(task.clone()),
        };
        lifecycle::publish(tx, &updated, &event).await?;
        Ok::<_, OrchestrationError>((pb::UpdateTaskResponse { task: Some(task) }, ()))
    })
    .await?;
    Ok(response)
}

pub(crate) async fn delete(
    engine: &Engine,
    caller: &Caller,
    request: pb::DeleteTaskRequest,
) -> Result<pb::DeleteTaskResponse> {
    let mut v = Violations::default();
    let id = v.id("task_id", &request.task_id);
    v.request_id(&request.request_id);
    v.finish()?;
    let key = Key::new(caller, "DeleteTask", &request.request_id, &request);
    let actor = caller.actor();
    let (response, _) = mutate(&engine.pool, &key, async |tx| {
        let row = access::find(tx, caller, id.unwrap_or_default(), Action::Change, true).await?;
        if !crate::state::is_terminal(row.state()) {
            return Err(OrchestrationError::precondition(
                "TASK_NOT_FINISHED",
                format!(
                    "a task in state {} cannot be deleted; cancel it first",
                    crate::state::name(row.state())
                ),
            ));
        }
        let purge = tasks::soft_delete(tx, row.id, engine.config.retention_days).await?;
        let event = events::TaskDeleted {
            task_id: row.id.to_string(),
            actor: Some(actor.clone()),
            occur_time: Some(now()),
            owner: row.owner.clone(),
        };
        lifecycle::publish(tx, &row, &event).await?;
        Ok::<_, OrchestrationError>((pb::DeleteTaskResponse { purge_time: Some(timestamp(purge)) }, ()))
    })
    .await?;
    Ok(response)
}

pub(crate) async fn cancel(
    engine: &Engine,
    caller: &Caller,
    request: pb::CancelTaskRequest,
) -> Result<pb::CancelTaskResponse> {
    let mut v = Violations::default();
    let id = v.id("task_id", &request.task_id);
    v.text("reason", &request.reason, 1_000);
    v.request_id(&request.request_id);
    v.finish()?;
    let key = Key::new(caller, "CancelTask", &request.request_id, &request);
    let actor = caller.actor();
    let (response, _) = mutate(&engine.pool, &key, async |tx| {
        let row = access::find(tx, caller, id.unwrap_or_default(), Action::Cancel, true).await?;
        let from = row.state();
        if from == pb::TaskState::Cancelled {
            return Ok((pb::CancelTaskResponse { task: Some(convert::task(&row)) }, ()));
        }
        let reason = if request.reason.is_empty() { "cancelled".to_owned() } else { request.reason.clone() };
        let cancelled =
            lifecycle::transition(tx, &row, pb::TaskState::Cancelled, Change::default(), &actor, &reason)
                .await?;
        let mut summary = None;
        if let Some(run_id) = row.current_run_id
            && let Some(run) = runs::get(tx, run_id).await?
        {
            match pb::RunState::try_from(i32::from(run.state)) {
                Ok(pb::RunState::Queued) => {
                    runs::finish(tx, run.id, pb::RunState::Cancelled, None).await?;
                }
                Ok(pb::RunState::Running) => {
                    runs::request_cancel(tx, run.id).await?;
                    summary = Some(crate::worker::summary(&row, &run, None));
                }
                _ => {}
            }
        }
        let event = events::TaskCancelled {
            task_id: row.id.to_string(),
            actor: Some(actor.clone()),
            occur_time: Some(now()),
            reason: request.reason.clone(),
            previous_state: from as i32,
            summary,
            owner: row.owner.clone(),
        };
        lifecycle::publish(tx, &row, &event).await?;
        logs::append(
            tx,
            row.id,
            &[Line::orchestrator(format!("cancelled by {}: {reason}", lifecycle::actor_label(&actor)))
                .warn()],
        )
        .await?;
        Ok::<_, OrchestrationError>((pb::CancelTaskResponse { task: Some(convert::task(&cancelled)) }, ()))
    })
    .await?;
    Ok(response)
}

pub(crate) async fn retry(
    engine: &Engine,
    caller: &Caller,
    request: pb::RetryTaskRequest,
) -> Result<pb::RetryTaskResponse> {
    let mut v = Violations::default();
    let id = v.id("task_id", &request.task_id);
    v.strategy("strategy", request.strategy);
    v.model("model", &request.model);
    v.request_id(&request.request_id);
    let (_, run_max) = validate::run_limits(&engine.config.budgets);
    v.finish()?;
    let key = Key::new(caller, "RetryTask", &request.request_id, &request);
    let actor = caller.actor();
    let (response, _) = mutate(&engine.pool, &key, async |tx| {
        let row = access::find(tx, caller, id.unwrap_or_default(), Action::Change, true).await?;
        let from = row.state();
        if !matches!(from, pb::TaskState::Failed | pb::TaskState::Cancelled) {
            return Err(OrchestrationError::precondition(
                "TASK_NOT_RETRYABLE",
                format!("only FAILED or CANCELLED tasks can be retried, not {}", crate::state::name(from)),
            ));
        }
        quota::admit_execution(tx, &engine.config.quotas, &row.owner).await?;
        let used = runs::used(tx, row.id).await?;
        let left = tasks::Budget {
            tokens: row.total_tokens - used.tokens,
            iterations: row.total_iterations - used.iterations,
            wall_secs: row.total_wall_secs - used.wall_secs,
        };
        if left.tokens <= 0 || left.iterations <= 0 || left.wall_secs <= 0 {
            return Err(OrchestrationError::Exhausted(
                "TASK_BUDGET_SPENT",
                format!(
                    "the task's total budget is spent (used {} tokens, {} iterations, {} s)",
                    used.tokens, used.iterations, used.wall_secs
                ),
                None,
            ));
        }
        let mut v = Violations::default();
        let current = tasks::Budget {
            tokens: row.max_tokens,
            iterations: row.max_iterations,
            wall_secs: row.max_wall_secs,
        };
        let asked = v.budget("budget", request.budget.as_ref(), current, run_max);
        let explicit = request.budget.unwrap_or_default();
        for (field, value, left, explicit) in [
            ("budget.max_tokens", asked.tokens, left.tokens, explicit.max_tokens > 0),
            (
                "budget.max_iterations",
                i64::from(asked.iterations),
                i64::from(left.iterations),
                explicit.max_iterations > 0,
            ),
            ("budget.max_wall_time", asked.wall_secs, left.wall_secs, explicit.max_wall_time.is_some()),
        ] {
            if explicit && value > left {
                v.add(field, format!("at most {left}: what is left of the task's total budget"));
            }
        }
        v.finish()?;
        // Without an explicit budget the new run gets what is left, up to the task's per-run budget.
        let budget = tasks::Budget {
            tokens: asked.tokens.min(left.tokens),
            iterations: asked.iterations.min(left.iterations),
            wall_secs: asked.wall_secs.min(left.wall_secs),
        };
        let strategy = if request.strategy != 0 { request.strategy as i16 } else { row.strategy };
        let model = if request.model.is_empty() { row.model.clone() } else { request.model.clone() };
        let resume_from = if request.resume_from_checkpoint { row.current_run_id } else { None };
        let run =
            runs::insert(tx, row.id, &row.owner, row.run_count + 1, strategy, &model, budget, resume_from)
                .await?;
        let change = Change {
            strategy: Some(strategy),
            model: Some(model),
            failure: Some(None),
            current_run: Some(run.id),
            budget: Some(budget),
            ..Change::default()
        };
        let queued =
            lifecycle::transition(tx, &row, pb::TaskState::Queued, change, &actor, "retried").await?;
        let event = events::TaskQueued {
            task_id: row.id.to_string(),
            actor: Some(actor.clone()),
            occur_time: Some(now()),
            run_id: run.id.to_string(),
            attempt: run.attempt,
            resume_from_checkpoint: resume_from.is_some(),
            owner: row.owner.clone(),
        };
        lifecycle::publish(tx, &row, &event).await?;
        logs::append(
            tx,
            row.id,
            &[Line::orchestrator(format!(
                "retried by {} as run {} (attempt {})",
                lifecycle::actor_label(&actor),
                run.id,
                run.attempt
            ))],
        )
        .await?;
        Ok::<_, OrchestrationError>((pb::RetryTaskResponse { task: Some(convert::task(&queued)) }, ()))
    })
    .await?;
    Ok(response)
}
