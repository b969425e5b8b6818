//! Run RPCs: ListRuns, GetRun (steps, checkpoints and plan items) and GetTaskDiff (the change
//! as a unified diff or a `git am` patch, from the commit step's checkpoint).

use crate::access::{self, Action};
use crate::convert;
use crate::engine::Engine;
use crate::error::{OrchestrationError, Result};
use crate::store::runs;
use crate::strategy::Progress;
use codingagent_kernel::identity::Caller;
use codingagent_kernel::pagination;
use codingagent_kernel::validate::Violations;
use codingagent_proto::codingagent::orchestration::v1 as pb;
use uuid::Uuid;

pub(crate) async fn list(
    engine: &Engine,
    caller: &Caller,
    request: pb::ListRunsRequest,
) -> Result<pb::ListRunsResponse> {
    let mut v = Violations::default();
    let id = v.id("task_id", &request.task_id);
    v.finish()?;
    let limit = pagination::page_size(request.page_size, 20, 100)?;
    let before: Option<i32> = pagination::decode(&request.page_token)?;
    let mut conn = engine.pool.acquire().await?;
    let task = access::find(&mut conn, caller, id.unwrap_or_default(), Action::Read, false).await?;
    let rows = runs::list(&mut conn, task.id, before, limit + 1).await?;
    let (rows, next_page_token) = pagination::page(rows, limit, |r| r.attempt);
    Ok(pb::ListRunsResponse { runs: rows.iter().map(convert::run).collect(), next_page_token })
}

pub(crate) async fn get(
    engine: &Engine,
    caller: &Caller,
    request: pb::GetRunRequest,
) -> Result<pb::GetRunResponse> {
    let mut v = Violations::default();
    let id = v.id("run_id", &request.run_id);
    v.finish()?;
    let id = id.unwrap_or_default();
    let mut conn = engine.pool.acquire().await?;
    let not_found = || OrchestrationError::not_found("run", id.to_string());
    let row = runs::get(&mut conn, id).await?.ok_or_else(not_found)?;
    access::find(&mut conn, caller, row.task_id, Action::Read, false).await.map_err(|_| not_found())?;
    let steps = runs::steps(&mut conn, id).await?;
    let mut run = convert::run(&row);
    if let Some(progress) = steps
        .iter()
        .rev()
        .find_map(|s| s.checkpoint.clone())
        .and_then(|c| serde_json::from_value::<Progress>(c).ok())
    {
        run.plan_items = progress
            .plan
            .iter()
            .enumerate()
            .map(|(i, item)| pb::PlanItem {
                index: i as i32 + 1,
                title: item.title.clone(),
                description: item.description.clone(),
                files: item.files.clone(),
                state: item.state,
                step_id: item.step_id.clone(),
                review: item.review.clone(),
            })
            .collect();
    }
    run.steps = steps.iter().map(convert::step).collect();
    Ok(pb::GetRunResponse { run: Some(run) })
}

pub(crate) async fn diff(
    engine: &Engine,
    caller: &Caller,
    request: pb::GetTaskDiffRequest,
) -> Result<pb::GetTaskDiffResponse> {
    let mut v = Violations::default();
    let id = v.id("task_id", &request.task_id);
    let run_id = v.optional_id("run_id", &request.run_id);
    let format = match pb::DiffFormat::try_from(request.format) {
        Ok(pb::DiffFormat::Unspecified) => pb::DiffFormat::Unified,
        Ok(format) => format,
        Err(_) => {
            v.add("format", "must be a DiffFormat value");
            pb::DiffFormat::Unified
        }
    };
    v.finish()?;
    let mut conn = engine.pool.acquire().await?;
    let task = access::find(&mut conn, caller, id.unwrap_or_default(), Action::Read, false).await?;
    let found: Option<(Uuid, serde_json::Value)> = sqlx::query_as(
        "SELECT s.run_id, s.checkpoint FROM steps s JOIN runs r ON r.id = s.run_id \
         WHERE r.task_id = $1 AND ($2::uuid IS NULL OR r.id = $2) AND s.kind = $3 AND s.state = $4 \
         ORDER BY r.attempt DESC, s.index DESC LIMIT 1",
    )
    .bind(task.id)
    .bind(run_id)
    .bind(pb::StepKind::Commit as i16)
    .bind(pb::StepState::Succeeded as i16)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((run, checkpoint)) = found else {
        return Err(OrchestrationError::precondition(
            "NO_CHANGE_YET",
            "no run of this task has produced a change yet",
        ));
    };
    let progress: Progress = serde_json::from_value(checkpoint)
        .map_err(|e| OrchestrationError::Status(Box::new(codingagent_kernel::error::internal(&e))))?;
    let content = match format {
        pb::DiffFormat::Patch => progress.format_patch.clone(),
        _ => progress.final_diff.clone(),
    };
    let total: i64 = progress.files.iter().map(|f| i64::from(f.additions + f.deletions)).sum();
    let shown = content
        .lines()
        .filter(|l| {
            (l.starts_with('+') && !l.starts_with("+++")) || (l.starts_with('-') && !l.starts_with("---"))
        })
        .count() as i64;
    let files = progress
        .files
        .iter()
        .map(|f| pb::FileChange {
            path: f.path.clone(),
            old_path: f.old_path.clone(),
            kind: match f.kind {
                'A' => pb::FileChangeKind::Added,
                'D' => pb::FileChangeKind::Deleted,
                'R' => pb::FileChangeKind::Renamed,
                _ => pb::FileChangeKind::Modified,
            } as i32,
            additions: f.additions,
            deletions: f.deletions,
        })
        .collect();
    Ok(pb::GetTaskDiffResponse {
        content,
        format: format as i32,
        truncated: shown < total,
        base_commit: progress.base_commit.clone(),
        head_commit: progress.head_commit.clone(),
        branch: format!("codingagent/{}", task.id),
        files,
        run_id: run.to_string(),
    })
}
