//! The evaluation harness behind `codingagent eval`: fixture repositories (each a real bug or
//! missing feature with a failing visible test and a hidden test that checks the fix) are
//! turned into tasks on a running orchestration service, once per strategy, with whatever
//! model it is configured for. A fixture counts as solved when the task succeeded *and* the
//! hidden test passes on the task's change, run in the same sandbox. The report is a
//! Markdown table: solve rate, tokens, cost and time per strategy, then every fixture.

use crate::config::SandboxConfig;
use crate::sandbox;
use anyhow::Context;
use codingagent_kernel::CancellationToken;
use codingagent_kernel::identity::StaticToken;
use codingagent_proto::codingagent::common::v1::Strategy;
use codingagent_proto::codingagent::orchestration::v1 as pb;
use codingagent_proto::codingagent::orchestration::v1::orchestration_service_client::OrchestrationServiceClient;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub type Client = OrchestrationServiceClient<InterceptedService<Channel, StaticToken>>;

/// One fixture: `task.toml`, `repo/` (the repository), `hidden/` (tests copied over the
/// change to check it) and `solution.txt` (a correct answer, for the scripted model double).
#[derive(Debug, Clone)]
pub struct Fixture {
    pub name: String,
    pub language: String,
    pub text: String,
    pub test_command: String,
    pub dir: PathBuf,
    pub solution: String,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskFile {
    language: String,
    text: String,
    test_command: String,
}

/// Every fixture under `dir`, by name.
pub fn load(dir: &Path) -> anyhow::Result<Vec<Fixture>> {
    let mut fixtures = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        let task = path.join("task.toml");
        if !task.exists() {
            continue;
        }
        let file: TaskFile = toml::from_str(&std::fs::read_to_string(&task)?)
            .with_context(|| format!("{}", task.display()))?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        fixtures.push(Fixture {
            name,
            language: file.language,
            text: file.text,
            test_command: file.test_command,
            solution: std::fs::read_to_string(path.join("solution.txt")).unwrap_or_default(),
            dir: path,
        });
    }
    fixtures.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(fixtures)
}

/// How to run the evaluation.
#[derive(Debug, Clone)]
pub struct Options {
    pub strategies: Vec<Strategy>,
    /// A model id; empty lets the llm service choose.
    pub model: String,
    /// Per task.
    pub timeout: Duration,
    /// Where fixture repositories are created (must be readable by the service).
    pub work_dir: PathBuf,
    /// The sandbox the hidden tests run in.
    pub sandbox: SandboxConfig,
    /// Per-run budget; unset takes the server's defaults.
    pub budget: Option<pb::TaskBudget>,
}

/// What one fixture under one strategy came to.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub fixture: String,
    pub language: String,
    pub strategy: Strategy,
    pub state: pb::TaskState,
    pub solved: bool,
    pub tokens: i64,
    pub cost_micros: i64,
    pub seconds: f64,
    pub iterations: i32,
    /// Why it was not solved.
    pub note: String,
}

/// A git repository of the fixture's `repo/`, in a fresh directory under `work_dir`.
pub fn materialize(fixture: &Fixture, work_dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = work_dir.join(format!("{}-{}", fixture.name, uuid::Uuid::new_v4().simple()));
    copy_tree(&fixture.dir.join("repo"), &dir)?;
    for args in [
        &["init", "--quiet", "--initial-branch", "main"][..],
        &["add", "--all"],
        &[
            "-c",
            "user.name=CodingAgent eval",
            "-c",
            "user.email=eval@localhost",
            "commit",
            "--quiet",
            "-m",
            "fixture",
        ],
    ] {
        let status = std::process::Command::new("git").current_dir(&dir).args(args).status()?;
        anyhow::ensure!(status.success(), "git {args:?} failed in {}", dir.display());
    }
    Ok(dir)
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Runs every fixture under every strategy, one task at a time; `progress` hears of each
/// outcome as it comes (done, total, outcome).
pub async fn run(
    client: &mut Client,
    fixtures: &[Fixture],
    options: &Options,
    mut progress: impl FnMut(usize, usize, &Outcome),
) -> anyhow::Result<Vec<Outcome>> {
    std::fs::create_dir_all(&options.work_dir)?;
    let total = fixtures.len() * options.strategies.len();
    let mut outcomes = Vec::new();
    for &strategy in &options.strategies {
        for fixture in fixtures {
            let outcome = run_one(client, fixture, strategy, options).await?;
            outcomes.push(outcome);
            progress(outcomes.len(), total, outcomes.last().expect("just pushed"));
        }
    }
    Ok(outcomes)
}

async fn run_one(
    client: &mut Client,
    fixture: &Fixture,
    strategy: Strategy,
    options: &Options,
) -> anyhow::Result<Outcome> {
    let repo = materialize(fixture, &options.work_dir)?;
    let started = Instant::now();
    let request = pb::CreateTaskRequest {
        text: fixture.text.clone(),
        title: format!("eval: {}", fixture.name),
        labels: vec!["eval".into()],
        repository: Some(pb::Repository {
            location: Some(pb::repository::Location::LocalPath(repo.to_string_lossy().into_owned())),
            base_branch: String::new(),
        }),
        strategy: strategy as i32,
        model: options.model.clone(),
        budget: options.budget,
        test_command: fixture.test_command.clone(),
        ..Default::default()
    };
    let task =
        client.create_task(request).await.context("CreateTask")?.into_inner().task.context("no task")?;
    let task = loop {
        let current = client
            .get_task(pb::GetTaskRequest { task_id: task.id.clone() })
            .await?
            .into_inner()
            .task
            .context("no task")?;
        if crate::state::is_terminal(current.state()) {
            break current;
        }
        if started.elapsed() > options.timeout {
            let cancel = pb::CancelTaskRequest {
                task_id: task.id.clone(),
                reason: "eval timeout".into(),
                ..Default::default()
            };
            break client.cancel_task(cancel).await?.into_inner().task.context("no task")?;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let usage = task.token_usage.unwrap_or_default();
    let mut outcome = Outcome {
        fixture: fixture.name.clone(),
        language: fixture.language.clone(),
        strategy,
        state: task.state(),
        solved: false,
        tokens: usage.input_tokens + usage.output_tokens,
        cost_micros: task.cost.as_ref().map(|c| c.micros).unwrap_or_default(),
        seconds: started.elapsed().as_secs_f64(),
        iterations: task.iterations,
        note: task.failure.as_ref().map(|f| f.message.clone()).unwrap_or_default(),
    };
    if task.state() == pb::TaskState::Succeeded {
        let diff = client
            .get_task_diff(pb::GetTaskDiffRequest { task_id: task.id.clone(), ..Default::default() })
            .await?
            .into_inner();
        match check_hidden(fixture, &diff.content, options).await {
            Ok(true) => outcome.solved = true,
            Ok(false) => outcome.note = "the hidden test fails on the change".into(),
            Err(error) => outcome.note = format!("cannot check the change: {error}"),
        }
    }
    let _ = std::fs::remove_dir_all(&repo);
    Ok(outcome)
}

/// Applies `diff` to a fresh copy of the fixture, adds the hidden tests, runs the tests.
async fn check_hidden(fixture: &Fixture, diff: &str, options: &Options) -> anyhow::Result<bool> {
    let dir = materialize(fixture, &options.work_dir)?;
    let patch = dir.join(".git").join("eval.patch");
    std::fs::write(&patch, diff)?;
    let applied = std::process::Command::new("git").current_dir(&dir).arg("apply").arg(&patch).status()?;
    anyhow::ensure!(applied.success(), "the task's diff does not apply to the fixture");
    copy_tree(&fixture.dir.join("hidden"), &dir)?;
    let outcome =
        sandbox::run(&options.sandbox, &dir, &fixture.test_command, &CancellationToken::new(), |_, _| {})
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(outcome.passed())
}

/// The Markdown report.
pub fn report(outcomes: &[Outcome], model: &str) -> String {
    let mut out = String::from(
        "| strategy | solved | solve rate | tokens (mean) | cost | time (mean) |\n|---|---|---|---|---|---|\n",
    );
    let mut strategies: Vec<Strategy> = outcomes.iter().map(|o| o.strategy).collect();
    strategies.dedup();
    for strategy in strategies {
        let runs: Vec<&Outcome> = outcomes.iter().filter(|o| o.strategy == strategy).collect();
        let n = runs.len().max(1) as f64;
        let solved = runs.iter().filter(|o| o.solved).count();
        let tokens: i64 = runs.iter().map(|o| o.tokens).sum();
        let cost: i64 = runs.iter().map(|o| o.cost_micros).sum();
        let seconds: f64 = runs.iter().map(|o| o.seconds).sum();
        out.push_str(&format!(
            "| {} | {solved}/{} | {:.0} % | {:.0} | ${:.4} | {:.1} s |\n",
            name(strategy),
            runs.len(),
            100.0 * solved as f64 / n,
            tokens as f64 / n,
            cost as f64 / 1e6,
            seconds / n
        ));
    }
    out.push_str(&format!(
        "\nModel: {}.\n\n| fixture | language | strategy | outcome | iterations | tokens | time |\n|---|---|---|---|---|---|---|\n",
        if model.is_empty() { "chosen by the llm service" } else { model }
    ));
    for o in outcomes {
        let result = if o.solved {
            "solved".to_owned()
        } else {
            let state = o.state.as_str_name().trim_start_matches("TASK_STATE_").to_lowercase();
            if o.note.is_empty() { state } else { format!("{state}: {}", o.note.replace('|', "/")) }
        };
        out.push_str(&format!(
            "| {} | {} | {} | {result} | {} | {} | {:.1} s |\n",
            o.fixture,
            o.language,
            name(o.strategy),
            o.iterations,
            o.tokens,
            o.seconds
        ));
    }
    out
}

fn name(strategy: Strategy) -> String {
    strategy.as_str_name().trim_start_matches("STRATEGY_").to_lowercase().replace('_', "-")
}

/// `single-shot`, `iterative`, `multi-agent`.
pub fn parse_strategy(text: &str) -> Option<Strategy> {
    match text {
        "single-shot" => Some(Strategy::SingleShot),
        "iterative" => Some(Strategy::Iterative),
        "multi-agent" => Some(Strategy::MultiAgent),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_fixtures_load_and_cover_three_languages() {
        let fixtures = load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("eval")).unwrap();
        assert!(fixtures.len() >= 20, "{}", fixtures.len());
        for language in ["python", "javascript", "rust"] {
            assert!(fixtures.iter().filter(|f| f.language == language).count() >= 5, "{language}");
        }
        assert!(fixtures.iter().all(|f| !f.solution.is_empty() && f.dir.join("hidden").is_dir()));
    }

    #[test]
    fn the_report_sums_per_strategy() {
        let outcome = |solved, strategy| Outcome {
            fixture: "f".into(),
            language: "python".into(),
            strategy,
            state: pb::TaskState::Succeeded,
            solved,
            tokens: 100,
            cost_micros: 0,
            seconds: 2.0,
            iterations: 1,
            note: String::new(),
        };
        let report =
            report(&[outcome(true, Strategy::SingleShot), outcome(false, Strategy::SingleShot)], "m");
        assert!(report.contains("| single-shot | 1/2 | 50 % | 100 | $0.0000 | 2.0 s |"), "{report}");
    }
}
