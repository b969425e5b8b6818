//! Workers: each instance runs `worker.concurrency` slots that claim queued runs (and runs
//! whose worker died) with `FOR UPDATE SKIP LOCKED`, hold them with a lease renewed every
//! third of its length, execute them ([`executor`]) and record how they ended. A run whose
//! lease lapses is claimed again by any worker and resumed from its last checkpoint. A
//! cancellation reaches the worker through NOTIFY (and the next renewal at the latest), and
//! stops the running step at once: the sandbox's processes are killed and the model call
//! dropped.

pub(crate) mod executor;

use crate::engine::Engine;
use crate::lifecycle;
use crate::logs::{self, Line};
use crate::notify;
use crate::store::runs::{self, RunRow};
use crate::store::tasks::{self, TaskRow};
use crate::strategy::Progress;
use codingagent_kernel::CancellationToken;
use codingagent_proto::codingagent::common::v1::Actor;
use codingagent_proto::codingagent::events::v1 as events;
use codingagent_proto::codingagent::orchestration::v1::{
    RunState, TaskFailure, TaskFailureReason, TaskState,
};
use codingagent_proto::helpers::now;
use executor::Ended;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// Why a run's execution was stopped from outside.
const RUNNING: u8 = 0;
const CANCELLED: u8 = 1;
const LEASE_LOST: u8 = 2;
const SHUTDOWN: u8 = 3;

/// A run resumed this often without finishing fails instead of looping forever.
const MAX_RESUMES: i32 = 5;

fn actor() -> Actor {
    Actor::service("orchestration")
}

/// Runs the worker slots until `stop`.
pub(crate) async fn run(engine: Arc<Engine>, stop: CancellationToken) -> anyhow::Result<()> {
    let slots = engine.config.worker.concurrency;
    if slots == 0 {
        stop.cancelled().await;
        return Ok(());
    }
    futures::future::join_all((0..slots).map(|_| slot(engine.clone(), stop.clone()))).await;
    Ok(())
}

async fn slot(engine: Arc<Engine>, stop: CancellationToken) {
    let mut notes = engine.hub.subscribe();
    let poll = Duration::from_millis(engine.config.worker.poll_ms);
    while !stop.is_cancelled() {
        match claim(&engine).await {
            Ok(Some((run, resumed))) => {
                run_claimed(&engine, run, resumed, &stop).await;
                continue;
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "cannot claim runs"),
        }
        tokio::select! {
            () = stop.cancelled() => break,
            _ = notify::wait(&mut notes, notify::RUNS, "", poll) => {}
        }
    }
}

async fn claim(engine: &Engine) -> Result<Option<(RunRow, bool)>, sqlx::Error> {
    let mut tx = engine.pool.begin().await?;
    let claimed = runs::claim(
        &mut tx,
        &engine.worker_id,
        engine.config.worker.lease_secs,
        engine.config.quotas.concurrent_runs,
    )
    .await?;
    tx.commit().await?;
    Ok(claimed)
}

async fn run_claimed(engine: &Arc<Engine>, run: RunRow, resumed: bool, stop: &CancellationToken) {
    let task = {
        let Ok(mut conn) = engine.pool.acquire().await else { return };
        match tasks::get(&mut conn, run.task_id, false).await {
            Ok(Some(task)) => task,
            _ => return,
        }
    };
    match started(engine, &task, &run, resumed).await {
        Ok(true) => {}
        // Cancelled (or retried) between the claim and the start: nothing to run.
        Ok(false) => {
            if let Err(error) = stopped(engine, &task, &run, CANCELLED).await {
                tracing::warn!(%error, run_id = %run.id, "cannot record the cancelled run");
            }
            return;
        }
        Err(error) => {
            tracing::warn!(%error, run_id = %run.id, "cannot start the run");
            release(engine, &run).await;
            return;
        }
    }
    let why = Arc::new(AtomicU8::new(RUNNING));
    let cancel = CancellationToken::new();
    let keeper = tokio::spawn(keep_lease(engine.clone(), run.id, cancel.clone(), why.clone(), stop.clone()));
    let ended = if run.resume_count > MAX_RESUMES {
        Ok(Ended::Finished(Box::new(failed_progress(
            TaskFailureReason::Internal,
            format!("the run was interrupted {} times", run.resume_count),
        ))))
    } else {
        executor::execute(engine, task.clone(), run.clone(), resumed, &cancel).await
    };
    keeper.abort();
    let outcome = match ended {
        Ok(Ended::Finished(progress)) if why.load(Ordering::SeqCst) == RUNNING => {
            finish(engine, &task, &run, &progress).await
        }
        // Stopped with nobody asking: the task ended under the run (cancelled between claim
        // and step), which is a cancellation too.
        Ok(_) => {
            stopped(
                engine,
                &task,
                &run,
                match why.load(Ordering::SeqCst) {
                    RUNNING => CANCELLED,
                    why => why,
                },
            )
            .await
        }
        Err(error) => {
            // Most likely PostgreSQL went away: the checkpoint is safe; let any worker retry.
            tracing::warn!(%error, run_id = %run.id, "the run stopped on an error; releasing it");
            release(engine, &run).await;
            Ok(())
        }
    };
    if let Err(error) = outcome {
        tracing::warn!(%error, run_id = %run.id, "cannot record how the run ended; releasing it");
        release(engine, &run).await;
    }
}

fn failed_progress(reason: TaskFailureReason, message: String) -> Progress {
    Progress {
        failure: Some(crate::strategy::Failure::new(reason, message)),
        next: crate::strategy::Next::Done,
        ..Progress::default()
    }
}

/// The task becomes RUNNING (first claim), and TaskStarted is published; `false` when the
/// task no longer waits for this run (it was cancelled, deleted or retried meanwhile).
async fn started(engine: &Engine, task: &TaskRow, run: &RunRow, resumed: bool) -> crate::error::Result<bool> {
    let mut tx = engine.pool.begin().await?;
    let Some(current) = tasks::get(&mut tx, task.id, true).await? else { return Ok(false) };
    if crate::state::is_terminal(current.state()) || current.current_run_id != Some(run.id) {
        return Ok(false);
    }
    if current.state() == TaskState::Queued {
        lifecycle::transition(
            &mut tx,
            &current,
            TaskState::Running,
            tasks::Change::default(),
            &actor(),
            "claimed by a worker",
        )
        .await?;
    }
    let event = events::TaskStarted {
        task_id: task.id.to_string(),
        actor: Some(actor()),
        occur_time: Some(now()),
        run_id: run.id.to_string(),
        attempt: run.attempt,
        worker_id: engine.worker_id.clone(),
        resumed,
        owner: task.owner.clone(),
    };
    lifecycle::publish(&mut tx, task, &event).await?;
    tx.commit().await?;
    Ok(true)
}

/// Renews the lease until the run ends; cancels it when the task was cancelled, the lease
/// was lost, or the service is stopping.
async fn keep_lease(
    engine: Arc<Engine>,
    run: uuid::Uuid,
    cancel: CancellationToken,
    why: Arc<AtomicU8>,
    stop: CancellationToken,
) {
    let lease = Duration::from_secs(engine.config.worker.lease_secs);
    let mut notes = engine.hub.subscribe();
    let run_key = run.to_string();
    let mut renewed = Instant::now();
    loop {
        let sleep = tokio::time::sleep(lease / 3);
        tokio::select! {
            () = stop.cancelled() => {
                why.store(SHUTDOWN, Ordering::SeqCst);
                cancel.cancel();
                return;
            }
            () = sleep => {}
            _ = notify::wait(&mut notes, notify::CANCEL, &run_key, lease) => {}
        }
        match runs::renew(&engine.pool, run, &engine.worker_id, engine.config.worker.lease_secs).await {
            Ok((true, false)) => renewed = Instant::now(),
            Ok((true, true)) => {
                why.store(CANCELLED, Ordering::SeqCst);
                cancel.cancel();
                return;
            }
            Ok((false, _)) => {
                why.store(LEASE_LOST, Ordering::SeqCst);
                cancel.cancel();
                return;
            }
            Err(error) if renewed.elapsed() >= lease => {
                tracing::warn!(%error, run_id = %run, "the lease could not be renewed in time; stopping the run");
                why.store(LEASE_LOST, Ordering::SeqCst);
                cancel.cancel();
                return;
            }
            Err(error) => tracing::warn!(%error, run_id = %run, "cannot renew the lease; retrying"),
        }
    }
}

/// Lets the lease lapse now, so any worker resumes the run from its checkpoint at once.
async fn release(engine: &Engine, run: &RunRow) {
    let released = sqlx::query(
        "UPDATE runs SET lease_expires_at = now() WHERE id = $1 AND worker_id = $2 AND state = 2",
    )
    .bind(run.id)
    .bind(&engine.worker_id)
    .execute(&engine.pool)
    .await;
    if let Err(error) = released {
        tracing::warn!(%error, run_id = %run.id, "cannot release the run; its lease will lapse");
    }
}

async fn stopped(engine: &Engine, task: &TaskRow, run: &RunRow, why: u8) -> crate::error::Result<()> {
    match why {
        CANCELLED => {
            let mut tx = engine.pool.begin().await?;
            runs::interrupt_running(&mut tx, run.id).await?;
            runs::finish(&mut tx, run.id, RunState::Cancelled, None).await?;
            logs::append(
                &mut tx,
                task.id,
                &[Line::orchestrator("run stopped: the task was cancelled").warn().at(run.id, None)],
            )
            .await?;
            tx.commit().await?;
        }
        SHUTDOWN => {
            release(engine, run).await;
            tracing::info!(run_id = %run.id, "run released for another worker (shutting down)");
        }
        _ => tracing::warn!(run_id = %run.id, "the run's lease was taken over; stopping here"),
    }
    Ok(())
}

/// Records the run's end: SUCCEEDED with its change, or FAILED with why.
async fn finish(
    engine: &Engine,
    task: &TaskRow,
    run: &RunRow,
    progress: &Progress,
) -> crate::error::Result<()> {
    let mut tx = engine.pool.begin().await?;
    let Some(current) = tasks::get(&mut tx, task.id, true).await? else { return Ok(()) };
    if crate::state::is_terminal(current.state()) || current.current_run_id != Some(run.id) {
        runs::finish(&mut tx, run.id, RunState::Cancelled, None).await?;
        tx.commit().await?;
        return Ok(());
    }
    let Some(latest) = runs::get(&mut tx, run.id).await? else { return Ok(()) };
    let summary = summary(&current, &latest, Some(progress));
    let from = current.state();
    let ended = match &progress.failure {
        None => {
            lifecycle::transition(
                &mut tx,
                &current,
                TaskState::Succeeded,
                tasks::Change::default(),
                &actor(),
                "the change passed its tests",
            )
            .await?;
            runs::finish(&mut tx, run.id, RunState::Succeeded, None).await?;
            let event = events::TaskSucceeded {
                task_id: task.id.to_string(),
                actor: Some(actor()),
                occur_time: Some(now()),
                summary: Some(summary.clone()),
                pull_request_url: String::new(),
                head_commit: progress.head_commit.clone(),
                owner: task.owner.clone(),
            };
            lifecycle::publish(&mut tx, task, &event).await?;
            logs::append(
                &mut tx,
                task.id,
                &[Line::orchestrator(format!(
                    "task succeeded: {} file(s) changed, +{} -{}",
                    summary.files_changed, summary.lines_added, summary.lines_removed
                ))
                .at(run.id, None)],
            )
            .await?;
            true
        }
        Some(failure) => {
            let failure = TaskFailure {
                reason: failure.reason,
                message: failure.message.clone(),
                step_id: String::new(),
            };
            let change = tasks::Change { failure: Some(Some(failure.clone())), ..tasks::Change::default() };
            lifecycle::transition(&mut tx, &current, TaskState::Failed, change, &actor(), &failure.message)
                .await?;
            runs::finish(&mut tx, run.id, RunState::Failed, Some(&failure)).await?;
            let event = events::TaskFailed {
                task_id: task.id.to_string(),
                actor: Some(actor()),
                occur_time: Some(now()),
                summary: Some(summary.clone()),
                failure: Some(failure.clone()),
                failed_in_state: from as i32,
                owner: task.owner.clone(),
            };
            lifecycle::publish(&mut tx, task, &event).await?;
            logs::append(
                &mut tx,
                task.id,
                &[Line::orchestrator(format!("task failed: {}", failure.message)).error().at(run.id, None)],
            )
            .await?;
            false
        }
    };
    tx.commit().await?;
    if !current.ab_test_id.is_empty() {
        let latency = summary
            .duration
            .map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
            .unwrap_or_default();
        let usage = summary.token_usage.unwrap_or_default();
        let (task_id, run_id) = (task.id.to_string(), run.id.to_string());
        let outcome = crate::clients::AbOutcome {
            test: &current.ab_test_id,
            task_id: &task_id,
            run_id: &run_id,
            success: ended,
            latency,
            usage: (usage.input_tokens, usage.output_tokens),
        };
        if let Err(error) = engine.clients.record_ab_outcome(&task.owner, outcome).await {
            tracing::warn!(%error, task_id = %task.id, "cannot record the A/B outcome");
        }
    }
    Ok(())
}

/// What a run did, for the events the classifier and the model selector learn from.
pub(crate) fn summary(
    task: &TaskRow,
    run: &RunRow,
    progress: Option<&Progress>,
) -> events::TaskExecutionSummary {
    let duration = run
        .started_at
        .map(|s| (run.ended_at.unwrap_or_else(chrono::Utc::now) - s).to_std().unwrap_or_default());
    let queued = run.started_at.map(|s| (s - run.created_at).to_std().unwrap_or_default());
    let files = progress.map(|p| p.files.as_slice()).unwrap_or_default();
    let hunks = progress.map_or(0, |p| p.final_diff.lines().filter(|l| l.starts_with("@@")).count() as i32);
    events::TaskExecutionSummary {
        owner: task.owner.clone(),
        text: task.text.clone(),
        repository: task.repo_location.clone(),
        classification: task.classification(),
        strategy: i32::from(run.strategy),
        model: run.model.clone(),
        run_id: run.id.to_string(),
        attempt: run.attempt,
        iterations: run.iterations,
        token_usage: Some(crate::convert::usage(run.input_tokens, run.output_tokens)),
        duration: duration.map(codingagent_proto::helpers::duration),
        queue_duration: queued.map(codingagent_proto::helpers::duration),
        cost: None,
        files_changed: files.len() as i32,
        lines_added: files.iter().map(|f| f.additions).sum(),
        lines_removed: files.iter().map(|f| f.deletions).sum(),
        origin_kind:
            <codingagent_proto::codingagent::orchestration::v1::TaskOrigin as prost::Message>::decode(
                task.origin.as_slice(),
            )
            .map(|o| o.kind)
            .unwrap_or_default(),
        ab_test_id: task.ab_test_id.clone(),
        ab_variant_id: task.ab_variant_id.clone(),
        hunks,
    }
}
