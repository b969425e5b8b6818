//! Executes one claimed run step by step. Each step is recorded when it starts and, with the
//! run's whole [`Progress`] as its checkpoint, when it completes — in one transaction with the
//! step's usage and its `TaskStepCompleted` event. A run picked up by another worker starts
//! from the last checkpoint: completed steps (and their model calls) are never repeated; the
//! step that was interrupted is.

use crate::agent::answer::{self, Tool};
use crate::agent::{edits, prompts, repomap, tools};
use crate::clients::CallError;
use crate::convert::{REPO_GIT_URL, REPO_LOCAL_PATH};
use crate::engine::Engine;
use crate::lifecycle;
use crate::logs::{Line, RunLog};
use crate::sandbox;
use crate::store::runs::{self, RunRow};
use crate::store::tasks::{self, TaskRow};
use crate::strategy::{FileStat, Next, Progress, parse_plan};
use crate::workspace::Workspace;
use codingagent_kernel::CancellationToken;
use codingagent_proto::codingagent::common::v1::Strategy;
use codingagent_proto::codingagent::events::v1 as events;
use codingagent_proto::codingagent::llm::v1::Role;
use codingagent_proto::codingagent::orchestration::v1::{StepState, TaskFailureReason, TaskState};
use codingagent_proto::helpers::now;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// How a run's execution ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// The strategy reached its end: success, or `progress.failure`.
    Finished(Box<Progress>),
    /// Cancelled, the lease was lost, or the service is stopping.
    Stopped,
}

/// What one step did, for its record.
#[derive(Debug, Default)]
struct StepOutcome {
    summary: String,
    failed: bool,
    error: String,
    input_tokens: i64,
    output_tokens: i64,
    cost_micros: i64,
}

impl StepOutcome {
    fn ok(summary: impl Into<String>) -> Self {
        Self { summary: summary.into(), ..Self::default() }
    }

    fn failed(summary: impl Into<String>, error: impl Into<String>) -> Self {
        Self { summary: summary.into(), failed: true, error: error.into(), ..Self::default() }
    }
}

struct Ctx<'a> {
    engine: &'a Arc<Engine>,
    task: TaskRow,
    run: RunRow,
    log: RunLog,
    cancel: &'a CancellationToken,
    workspace: Option<Workspace>,
    tokens_used: i64,
}

pub(crate) async fn execute(
    engine: &Arc<Engine>,
    task: TaskRow,
    run: RunRow,
    resumed: bool,
    cancel: &CancellationToken,
) -> anyhow::Result<Ended> {
    let pool = &engine.pool;
    let log = RunLog::start(pool.clone(), task.id, run.id);
    let mut conn = pool.acquire().await?;
    let strategy = Strategy::try_from(i32::from(run.strategy)).unwrap_or(Strategy::Iterative);
    let (mut progress, restored) = match runs::last_checkpoint(&mut conn, run.id).await? {
        Some((_, state)) => (serde_json::from_value::<Progress>(state)?, true),
        None => match run.resume_from {
            Some(previous) => match runs::last_checkpoint(&mut conn, previous).await? {
                Some((_, state)) => {
                    let mut carried: Progress = serde_json::from_value(state)?;
                    // A new run with the old run's tree and conversation, and a budget of its own.
                    carried.failure = None;
                    carried.iterations = 0;
                    carried.tool_turns = 0;
                    carried.strategy = strategy as i32;
                    if !carried.base_commit.is_empty() {
                        carried.next = Next::Generate;
                        carried.say("Continue from where the previous run stopped.");
                    }
                    (carried, true)
                }
                None => (Progress::new(strategy), false),
            },
            None => (Progress::new(strategy), false),
        },
    };
    let interrupted = runs::interrupt_running(&mut conn, run.id).await?;
    drop(conn);
    if resumed {
        log.write(
            None,
            Line::orchestrator(format!(
                "run resumed by worker {} after the previous worker's lease lapsed; continuing after the last \
                 completed step ({interrupted} interrupted step(s) repeated)",
                engine.worker_id
            ))
            .warn(),
        )
        .await;
    } else {
        log.write(
            None,
            Line::orchestrator(format!(
                "run {} (attempt {}) claimed by worker {}",
                run.id, run.attempt, engine.worker_id
            )),
        )
        .await;
    }
    let tokens_used = run.input_tokens + run.output_tokens;
    let mut ctx = Ctx { engine, task, run, log, cancel, workspace: None, tokens_used };
    if restored
        && !progress.base_commit.is_empty()
        && progress.next != Next::Done
        && let Err(error) = ctx.rebuild(&progress).await
    {
        progress.failure = Some(crate::strategy::Failure::new(
            TaskFailureReason::RepositoryUnavailable,
            format!("cannot rebuild the workspace from the checkpoint: {error}"),
        ));
        progress.next = Next::Done;
    }
    while progress.next != Next::Done {
        if cancel.is_cancelled() {
            return Ok(Ended::Stopped);
        }
        if let Some(failure) = ctx.over_budget(&progress).await {
            progress.failure = Some(failure);
            break;
        }
        if !ctx.step(&mut progress).await? {
            return Ok(Ended::Stopped);
        }
    }
    ctx.log.flush().await;
    if let Some(workspace) = &ctx.workspace {
        workspace.remove().await;
    }
    Ok(Ended::Finished(Box::new(progress)))
}

impl Ctx<'_> {
    fn workspace_dir(&self) -> std::path::PathBuf {
        self.engine.config.worker.workspace_root.join(self.run.id.to_string())
    }

    fn git_timeout(&self) -> Duration {
        Duration::from_secs(self.engine.config.worker.git_timeout_secs)
    }

    fn branch(&self) -> String {
        format!("codingagent/{}", self.task.id)
    }

    async fn clone(&self) -> Result<Workspace, crate::workspace::GitError> {
        let local = self.task.repo_kind == REPO_LOCAL_PATH;
        Workspace::clone(
            &self.task.repo_location,
            local,
            &self.task.base_branch,
            self.workspace_dir(),
            self.git_timeout(),
        )
        .await
    }

    /// Rebuilds the working tree of a checkpoint: a fresh clone, the base commit, the patch.
    async fn rebuild(&mut self, progress: &Progress) -> Result<(), crate::workspace::GitError> {
        let workspace = self.clone().await?;
        workspace.branch(&self.branch(), &progress.base_commit).await?;
        workspace.apply(&progress.patch).await?;
        self.log
            .write(
                None,
                Line::orchestrator(format!(
                    "workspace rebuilt at {} with the checkpoint's change",
                    short(&progress.base_commit)
                )),
            )
            .await;
        self.workspace = Some(workspace);
        Ok(())
    }

    /// Why the run may not take another step, if it may not.
    async fn over_budget(&self, progress: &Progress) -> Option<crate::strategy::Failure> {
        use crate::strategy::Failure;
        let started = self.run.started_at.unwrap_or_else(chrono::Utc::now);
        let elapsed = (chrono::Utc::now() - started).num_seconds();
        if elapsed >= self.run.max_wall_secs {
            return Some(Failure::new(
                TaskFailureReason::WallTimeExceeded,
                format!("the run's wall-time budget of {} s is spent", self.run.max_wall_secs),
            ));
        }
        let calls_model = matches!(progress.next, Next::Generate | Next::Plan | Next::Review);
        if calls_model && self.tokens_used >= self.run.max_tokens {
            return Some(Failure::new(
                TaskFailureReason::TokenBudgetExhausted,
                format!(
                    "the run's budget of {} tokens is spent ({} used)",
                    self.run.max_tokens, self.tokens_used
                ),
            ));
        }
        if calls_model {
            let mut conn = self.engine.pool.acquire().await.ok()?;
            let task = tasks::get(&mut conn, self.task.id, false).await.ok()??;
            if task.input_tokens + task.output_tokens >= task.total_tokens {
                return Some(Failure::new(
                    TaskFailureReason::TokenBudgetExhausted,
                    format!("the task's total budget of {} tokens is spent", task.total_tokens),
                ));
            }
        }
        None
    }

    /// Runs the next step; `false` when the run must stop (cancelled, lost, task ended).
    async fn step(&mut self, progress: &mut Progress) -> anyhow::Result<bool> {
        let next = progress.next;
        let kind = next.kind();
        let iteration = match next {
            Next::Prepare | Next::Plan | Next::Commit | Next::Publish | Next::Done => 0,
            _ => progress.iterations + 1,
        };
        let actor = codingagent_proto::codingagent::common::v1::Actor::service("orchestration");
        let step = {
            let mut tx = self.engine.pool.begin().await?;
            let Some(task) = tasks::get(&mut tx, self.task.id, true).await? else { return Ok(false) };
            if crate::state::is_terminal(task.state()) || task.current_run_id != Some(self.run.id) {
                return Ok(false);
            }
            let to = match (next, task.state()) {
                (Next::Test, TaskState::Running) => Some(TaskState::Validating),
                (Next::Generate | Next::Apply | Next::Plan | Next::Review, TaskState::Validating) => {
                    Some(TaskState::Running)
                }
                _ => None,
            };
            if let Some(to) = to {
                let why =
                    if to == TaskState::Validating { "testing the change" } else { "revising the change" };
                self.task =
                    lifecycle::transition(&mut tx, &task, to, tasks::Change::default(), &actor, why).await?;
            }
            let step = runs::start_step(&mut tx, self.run.id, kind, iteration).await?;
            tx.commit().await?;
            step
        };
        let label = kind.as_str_name().trim_start_matches("STEP_KIND_").to_lowercase();
        self.log
            .write(Some(step.id), Line::orchestrator(format!("step {} started: {label}", step.index)))
            .await;
        let outcome = tokio::select! {
            biased;
            () = self.cancel.cancelled() => return Ok(false),
            outcome = self.perform(next, progress, step.id) => outcome?,
        };
        // A step that ended because of the cancellation is interrupted, not finished.
        if self.cancel.is_cancelled() {
            return Ok(false);
        }
        let line = if outcome.failed {
            Line::orchestrator(format!("step {} failed: {}", step.index, outcome.summary)).warn()
        } else {
            Line::orchestrator(format!("step {} done: {}", step.index, outcome.summary))
        };
        self.log.write(Some(step.id), line).await;
        self.log.flush().await;
        let state = if outcome.failed { StepState::Failed } else { StepState::Succeeded };
        let checkpoint = serde_json::to_value(&*progress)?;
        let tokens = (outcome.input_tokens, outcome.output_tokens);
        let iterations_done = progress.iterations - self.run.iterations;
        let mut tx = self.engine.pool.begin().await?;
        let (first, last): (i64, i64) = sqlx::query_as(
            "SELECT coalesce(min(seq), 0), coalesce(max(seq), 0) FROM log_lines WHERE task_id = $1 AND step_id = $2",
        )
        .bind(self.task.id)
        .bind(step.id)
        .fetch_one(&mut *tx)
        .await?;
        let ended = runs::end_step(
            &mut tx,
            step.id,
            state,
            &outcome.summary,
            &outcome.error,
            tokens,
            Some(&checkpoint),
            &progress.head_commit,
            (first, last),
        )
        .await?;
        runs::add_usage(&mut tx, self.run.id, tokens.0, tokens.1, iterations_done).await?;
        tasks::add_usage(&mut tx, self.task.id, tokens.0, tokens.1, iterations_done, outcome.cost_micros)
            .await?;
        let duration =
            ended.ended_at.map(|e| (e - ended.started_at).to_std().unwrap_or_default()).unwrap_or_default();
        let event = events::TaskStepCompleted {
            task_id: self.task.id.to_string(),
            actor: Some(actor),
            occur_time: Some(now()),
            owner: self.task.owner.clone(),
            run_id: self.run.id.to_string(),
            step_id: step.id.to_string(),
            kind: kind as i32,
            state: state as i32,
            iteration,
            summary: outcome.summary.clone(),
            token_usage: Some(crate::convert::usage(tokens.0, tokens.1)),
            duration: Some(codingagent_proto::helpers::duration(duration)),
        };
        lifecycle::publish(&mut tx, &self.task, &event).await?;
        tx.commit().await?;
        self.run.iterations = progress.iterations;
        self.tokens_used += tokens.0 + tokens.1;
        Ok(true)
    }

    async fn perform(
        &mut self,
        next: Next,
        progress: &mut Progress,
        step: Uuid,
    ) -> anyhow::Result<StepOutcome> {
        Ok(match next {
            Next::Prepare => self.prepare(progress, step).await?,
            Next::Plan => self.plan(progress, step).await,
            Next::Generate => self.generate(progress, step).await,
            Next::Apply => self.apply(progress, step).await?,
            Next::Review => self.review(progress, step).await,
            Next::Test => self.test(progress, step).await,
            Next::Commit => self.commit(progress).await?,
            Next::Publish | Next::Done => {
                progress.after_publish();
                let files = progress.files.len();
                StepOutcome::ok(match self.task.repo_kind {
                    REPO_GIT_URL => {
                        format!("patch artifact ready: {files} file(s) on branch {}", self.branch())
                    }
                    _ => format!("patch artifact ready: {files} file(s); fetch it with GetTaskDiff"),
                })
            }
        })
    }

    fn fail(&self, progress: &mut Progress, reason: TaskFailureReason, message: String) -> StepOutcome {
        progress.failure = Some(crate::strategy::Failure::new(reason, message.clone()));
        progress.next = Next::Done;
        StepOutcome::failed(message.clone(), message)
    }

    async fn prepare(&mut self, progress: &mut Progress, step: Uuid) -> anyhow::Result<StepOutcome> {
        let source = self.task.repo_location.clone();
        if self.task.repo_kind == REPO_GIT_URL
            && let Some(host) = crate::validate::git_host(&source)
            && let Err(why) = crate::validate::check_resolved_host(&host).await
        {
            return Ok(self.fail(
                progress,
                TaskFailureReason::RepositoryUnavailable,
                format!("refusing to clone: {why}"),
            ));
        }
        self.log.write(Some(step), Line::orchestrator(format!("cloning {source}"))).await;
        let workspace = match self.clone().await {
            Ok(workspace) => workspace,
            Err(error) => {
                return Ok(self.fail(
                    progress,
                    TaskFailureReason::RepositoryUnavailable,
                    format!("cannot clone {source}: {error}"),
                ));
            }
        };
        let base = workspace.head().await?;
        workspace.branch(&self.branch(), &base).await?;
        let test_command = if self.task.test_command.is_empty() {
            detect_test_command(&workspace.dir)
        } else {
            self.task.test_command.clone()
        };
        if test_command.is_empty() {
            return Ok(self.fail(
                progress,
                TaskFailureReason::RepositoryUnavailable,
                "cannot tell how to test this repository; set test_command".into(),
            ));
        }
        let files = workspace.files().await?;
        let map = repomap::render(
            &repomap::scan(&workspace.dir, &files),
            &self.task.text,
            self.engine.config.agent.repo_map_tokens,
        );
        progress.after_prepare(
            base.clone(),
            test_command.clone(),
            prompts::task(&self.task.text, &map, &test_command),
        );
        if self.task.test_command.is_empty() {
            let mut conn = self.engine.pool.acquire().await?;
            tasks::apply(
                &mut conn,
                self.task.id,
                &tasks::Change { test_command: Some(test_command.clone()), ..Default::default() },
            )
            .await?;
        }
        self.workspace = Some(workspace);
        Ok(StepOutcome::ok(format!(
            "at {} on {}; {} files; tests: {test_command}",
            short(&base),
            self.branch(),
            files.len()
        )))
    }

    /// One model call, streamed into the log.
    async fn ask(
        &self,
        step: Uuid,
        role: &str,
        model: &str,
        messages: Vec<(i32, String)>,
    ) -> Result<crate::clients::Completion, CallError> {
        self.log
            .write(
                Some(step),
                Line::agent(format!("{role}: asking {model} (prompts {})", prompts::VERSION))
                    .fields(serde_json::json!({"role": role, "model": model})),
            )
            .await;
        let mut pending = String::new();
        let log = &self.log;
        let result = self
            .engine
            .clients
            .generate(
                &self.task.owner,
                &self.task.id.to_string(),
                model,
                messages,
                self.engine.config.agent.max_output_tokens,
                |delta| {
                    pending.push_str(delta);
                    while let Some(end) = pending.find('\n') {
                        let line: String = pending.drain(..=end).collect();
                        log.write_now(Some(step), Line::agent(line.trim_end_matches('\n').to_owned()));
                    }
                },
            )
            .await;
        if !pending.is_empty() {
            log.write_now(Some(step), Line::agent(pending));
        }
        result
    }

    fn call_failed(&self, progress: &mut Progress, error: CallError) -> StepOutcome {
        match error {
            CallError::Budget(why) => self.fail(
                progress,
                TaskFailureReason::QuotaExhausted,
                format!("the model budget is spent: {why}"),
            ),
            other => self.fail(progress, TaskFailureReason::ModelUnavailable, other.to_string()),
        }
    }

    fn messages(progress: &Progress, keep_last: usize) -> Vec<(i32, String)> {
        let mut messages = vec![(Role::System as i32, prompts::CODER.to_owned())];
        messages.extend(
            progress
                .conversation(keep_last)
                .into_iter()
                .map(|t| (if t.assistant { Role::Assistant } else { Role::User } as i32, t.text.clone())),
        );
        messages
    }

    async fn generate(&mut self, progress: &mut Progress, step: Uuid) -> StepOutcome {
        let model = self.run.model.clone();
        let mut asked = self.ask(step, "coder", &model, Self::messages(progress, 12)).await;
        if let Err(CallError::ContextExceeded(why)) = &asked {
            // A long run outgrew a small model's context: the request and the latest feedback
            // are what it needs most.
            let notice = format!("{why}; asking again with only the request and the last turn");
            self.log.write(Some(step), Line::orchestrator(notice).warn()).await;
            asked = self.ask(step, "coder", &model, Self::messages(progress, 1)).await;
        }
        let completion = match asked {
            Ok(completion) => completion,
            Err(error) => return self.call_failed(progress, error),
        };
        let answer = answer::parse(&completion.text);
        let agent = &self.engine.config.agent;
        let tool_output = if !answer.has_edits() && !answer.tools.is_empty() {
            let mut results = Vec::new();
            if let Some(workspace) = &self.workspace {
                for tool in answer.tools.iter().take(5) {
                    let call = describe(tool);
                    let output = tools::run(workspace, tool, &self.task.text, agent.repo_map_tokens).await;
                    self.log
                        .write(
                            Some(step),
                            Line::agent(format!("tool {call}")).fields(serde_json::json!({"tool": call})),
                        )
                        .await;
                    self.log.write(Some(step), Line::agent(output.clone()).debug()).await;
                    results.push((call, output));
                }
            }
            Some(prompts::tool_results(&results, agent.tool_turns.saturating_sub(progress.tool_turns + 1)))
        } else {
            None
        };
        let summary = if answer.has_edits() {
            format!(
                "{} proposed {} edit block(s) and {} diff(s)",
                completion.model,
                answer.replaces.len(),
                answer.diffs.len()
            )
        } else if tool_output.is_some() {
            format!("{} asked for {} tool call(s)", completion.model, answer.tools.len())
        } else {
            format!("{} answered without a usable edit", completion.model)
        };
        let usable = answer.has_edits() || tool_output.is_some();
        progress.after_generate(
            &completion.text,
            &answer,
            tool_output,
            self.run.max_iterations,
            agent.tool_turns,
        );
        if !usable {
            self.log
                .write(
                    Some(step),
                    Line::agent(format!("malformed answer: {}", answer.broken.join("; "))).warn(),
                )
                .await;
        }
        let mut outcome =
            if usable { StepOutcome::ok(summary) } else { StepOutcome::failed(summary.clone(), summary) };
        outcome.input_tokens = completion.input_tokens;
        outcome.output_tokens = completion.output_tokens;
        outcome.cost_micros = completion.cost_micros;
        outcome
    }

    async fn apply(&mut self, progress: &mut Progress, step: Uuid) -> anyhow::Result<StepOutcome> {
        let Some(workspace) = self.workspace.clone() else { anyhow::bail!("no workspace to apply to") };
        let answer = answer::parse(&progress.answer);
        let applied: Result<Vec<String>, String> = async {
            let mut changed =
                edits::apply_all(&workspace.dir, &answer.replaces).map_err(|e| e.to_string())?;
            for diff in &answer.diffs {
                workspace.apply(diff).await.map_err(|e| format!("the diff does not apply: {e}"))?;
                changed.push("(diff)".into());
            }
            Ok(changed)
        }
        .await;
        Ok(match applied {
            Ok(changed) => {
                let patch = workspace.diff(&progress.base_commit).await?;
                for path in &changed {
                    self.log
                        .write(
                            Some(step),
                            Line::agent(format!("edited {path}")).fields(serde_json::json!({"file": path})),
                        )
                        .await;
                }
                progress.after_apply(Ok(patch), self.run.max_iterations);
                StepOutcome::ok(format!(
                    "applied {} block(s) to {} file(s)",
                    answer.replaces.len() + answer.diffs.len(),
                    changed.len()
                ))
            }
            Err(error) => {
                workspace.reset(&progress.base_commit, &progress.patch).await?;
                self.log.write(Some(step), Line::agent(format!("edit rejected: {error}")).warn()).await;
                progress.after_apply(Err(error.clone()), self.run.max_iterations);
                StepOutcome::failed("the edits did not apply; the error went back to the model", error)
            }
        })
    }

    async fn test(&mut self, progress: &mut Progress, step: Uuid) -> StepOutcome {
        let Some(workspace) = self.workspace.clone() else {
            return self.fail(progress, TaskFailureReason::Internal, "no workspace to test".into());
        };
        let mut config = self.engine.config.sandbox.clone();
        let started = self.run.started_at.unwrap_or_else(chrono::Utc::now);
        let left = self.run.max_wall_secs - (chrono::Utc::now() - started).num_seconds();
        config.wall_secs = config.wall_secs.min(left.max(1) as u64);
        let command = progress.test_command.clone();
        self.log
            .write(Some(step), Line::orchestrator(format!("tester: running `{command}` in the sandbox")))
            .await;
        let log = self.log.clone();
        let outcome = sandbox::run(&config, &workspace.dir, &command, self.cancel, move |stderr, line| {
            log.write_now(Some(step), Line::sandbox(stderr, line));
        })
        .await;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(sandbox::SandboxError::Cancelled) => return StepOutcome::failed("cancelled", "cancelled"),
            Err(error) => return self.fail(progress, TaskFailureReason::SandboxError, error.to_string()),
        };
        // What the tests left behind (caches, build output) is not part of the change.
        if let Err(error) = workspace.reset(&progress.base_commit, &progress.patch).await {
            return self.fail(
                progress,
                TaskFailureReason::Internal,
                format!("cannot restore the workspace after the tests: {error}"),
            );
        }
        let passed = outcome.passed();
        // Only the head streamed live; the end of a long output (where test runners print
        // their summary) is logged once the command is done.
        for (stderr, captured) in [(false, &outcome.stdout), (true, &outcome.stderr)] {
            if captured.omitted_bytes > 0 {
                let notice = format!("[… {} bytes omitted …]", captured.omitted_bytes);
                self.log.write(Some(step), Line::orchestrator(notice).warn()).await;
                for line in captured.tail.lines() {
                    self.log.write(Some(step), Line::sandbox(stderr, line.to_owned())).await;
                }
            }
        }
        let summary = if outcome.timed_out {
            format!("killed at the sandbox's wall-time limit of {} s", config.wall_secs)
        } else if passed {
            format!("tests passed in {:.1} s", outcome.duration_ms as f64 / 1000.0)
        } else {
            format!("tests failed (exit {})", outcome.exit_code.map_or("none".into(), |c| c.to_string()))
        };
        let report = prompts::test_failed(
            progress.iterations + 1,
            self.run.max_iterations,
            outcome.exit_code,
            &outcome.text(),
        );
        progress.after_test(passed, report, self.run.max_iterations);
        if passed {
            StepOutcome::ok(summary)
        } else {
            StepOutcome::failed(summary.clone(), outcome.text().chars().take(2_000).collect::<String>())
        }
    }

    async fn plan(&mut self, progress: &mut Progress, step: Uuid) -> StepOutcome {
        let agent = &self.engine.config.agent;
        let model =
            if agent.planner_model.is_empty() { self.run.model.clone() } else { agent.planner_model.clone() };
        let map = match &self.workspace {
            Some(workspace) => {
                let files = workspace.files().await.unwrap_or_default();
                repomap::render(
                    &repomap::scan(&workspace.dir, &files),
                    &self.task.text,
                    agent.repo_map_tokens,
                )
            }
            None => String::new(),
        };
        let messages = vec![(Role::User as i32, prompts::planner(&self.task.text, &map, 6))];
        let completion = match self.ask(step, "planner", &model, messages).await {
            Ok(completion) => completion,
            Err(error) => return self.call_failed(progress, error),
        };
        let items = parse_plan(&completion.text, &self.task.title, 6);
        for (i, item) in items.iter().enumerate() {
            self.log
                .write(
                    Some(step),
                    Line::agent(format!("plan item {}: {}", i + 1, item.title))
                        .fields(serde_json::json!({"plan_item": i + 1, "files": item.files})),
                )
                .await;
        }
        let count = items.len();
        progress.after_plan(items);
        StepOutcome {
            input_tokens: completion.input_tokens,
            output_tokens: completion.output_tokens,
            cost_micros: completion.cost_micros,
            ..StepOutcome::ok(format!("planned {count} item(s)"))
        }
    }

    async fn review(&mut self, progress: &mut Progress, step: Uuid) -> StepOutcome {
        let agent = &self.engine.config.agent;
        let model = if agent.reviewer_model.is_empty() {
            self.run.model.clone()
        } else {
            agent.reviewer_model.clone()
        };
        let (title, description) = progress
            .plan
            .get(progress.item)
            .map(|i| (i.title.clone(), i.description.clone()))
            .unwrap_or_else(|| (self.task.title.clone(), self.task.text.clone()));
        let diff: String = progress.patch.chars().take(20_000).collect();
        let messages = vec![(Role::User as i32, prompts::reviewer(&title, &description, &diff))];
        let completion = match self.ask(step, "reviewer", &model, messages).await {
            Ok(completion) => completion,
            Err(error) => return self.call_failed(progress, error),
        };
        let first = completion
            .text
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default()
            .trim()
            .to_ascii_uppercase();
        let approved = first.starts_with("APPROVE");
        let remark: String = completion.text.trim().to_owned();
        progress.after_review(approved, &remark, &step.to_string());
        let verdict = if approved { "approved" } else { "rejected" };
        StepOutcome {
            input_tokens: completion.input_tokens,
            output_tokens: completion.output_tokens,
            cost_micros: completion.cost_micros,
            ..StepOutcome::ok(format!("reviewer {verdict} item \"{title}\""))
        }
    }

    async fn commit(&mut self, progress: &mut Progress) -> anyhow::Result<StepOutcome> {
        let Some(workspace) = self.workspace.clone() else { anyhow::bail!("no workspace to commit") };
        let text: String = self.task.text.chars().take(1_000).collect();
        let strategy = Strategy::try_from(i32::from(self.run.strategy))
            .map(|s| s.as_str_name())
            .unwrap_or("STRATEGY_UNSPECIFIED");
        let message = format!(
            "{}\n\n{}\n\nTask: {}\nRun: {} (attempt {})\nStrategy: {}\nModel: {}\n",
            self.task.title,
            text.trim(),
            self.task.id,
            self.run.id,
            self.run.attempt,
            strategy.trim_start_matches("STRATEGY_").to_lowercase(),
            self.run.model
        );
        let head = workspace.commit(&message).await?;
        let files = workspace
            .numstat(&progress.base_commit)
            .await?
            .into_iter()
            .map(|(path, old_path, kind, additions, deletions)| FileStat {
                path,
                old_path,
                kind,
                additions,
                deletions,
            })
            .collect::<Vec<_>>();
        let diff = workspace.diff_range(&progress.base_commit).await?;
        let patch = workspace.format_patch(&progress.base_commit).await?;
        let count = files.len();
        let (added, removed) = files.iter().fold((0, 0), |(a, r), f| (a + f.additions, r + f.deletions));
        progress.after_commit(head.clone(), files, cap(diff), cap(patch));
        Ok(StepOutcome::ok(format!(
            "committed {} on {}: {count} file(s), +{added} -{removed}",
            short(&head),
            self.branch()
        )))
    }
}

/// Diffs above 3 MiB are kept cut (the contract's limit); the branch holds all of it.
const MAX_DIFF: usize = 3 * 1024 * 1024;

fn cap(text: String) -> String {
    crate::text::prefix(&text, MAX_DIFF).to_owned()
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

fn describe(tool: &Tool) -> String {
    match tool {
        Tool::Open { path, start, end } => match end {
            Some(end) => format!("open {path} {start}-{end}"),
            None => format!("open {path} {start}"),
        },
        Tool::Search(needle) => format!("search {needle}"),
        Tool::Map => "map".into(),
    }
}

/// The usual test command of a repository, from the files at its root.
pub(crate) fn detect_test_command(root: &Path) -> String {
    let has = |name: &str| root.join(name).exists();
    if has("Cargo.toml") {
        return "cargo test --offline --quiet".into();
    }
    if has("package.json") {
        let scripts = std::fs::read_to_string(root.join("package.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v.get("scripts").and_then(|s| s.get("test")).cloned());
        return if scripts.is_some() { "npm test --silent".into() } else { "node --test".into() };
    }
    if has("go.mod") {
        return "go test ./...".into();
    }
    let python = has("pyproject.toml")
        || has("setup.py")
        || std::fs::read_dir(root)
            .map(|d| d.flatten().any(|e| e.path().extension().is_some_and(|x| x == "py")))
            .unwrap_or(false);
    if python {
        return if has("tests") {
            "python3 -m unittest discover -s tests -t . -v".into()
        } else {
            "python3 -m unittest discover -v".into()
        };
    }
    if std::fs::read_to_string(root.join("Makefile")).is_ok_and(|m| m.lines().any(|l| l.starts_with("test:")))
    {
        return "make test".into();
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_commands_are_detected_from_the_repository() {
        let dir = std::env::temp_dir().join(format!("detect-{}", Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("tests")).unwrap();
        assert_eq!(detect_test_command(&dir), "");
        std::fs::write(dir.join("app.py"), "").unwrap();
        assert_eq!(detect_test_command(&dir), "python3 -m unittest discover -s tests -t . -v");
        std::fs::write(dir.join("package.json"), r#"{"scripts":{"test":"node --test"}}"#).unwrap();
        assert_eq!(detect_test_command(&dir), "npm test --silent");
        std::fs::write(dir.join("Cargo.toml"), "").unwrap();
        assert_eq!(detect_test_command(&dir), "cargo test --offline --quiet");
        let _ = std::fs::remove_dir_all(dir);
    }
}
