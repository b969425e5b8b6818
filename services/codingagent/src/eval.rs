//! `codingagent eval`: the evaluation harness against a running orchestration service (see
//! `codingagent_orchestration::eval`), with a progress line per task and a Markdown report.

use anyhow::Context;
use codingagent_kernel::config::{self, ConfigArgs};
use codingagent_kernel::identity::{Caller, StaticToken, TokenMinter};
use codingagent_orchestration::eval::{self, Options};
use codingagent_proto::codingagent::orchestration::v1::orchestration_service_client::OrchestrationServiceClient;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;

#[derive(Debug, clap::Args)]
pub(crate) struct EvalArgs {
    /// The orchestration service.
    #[arg(long, default_value = "http://127.0.0.1:50056")]
    orchestration: String,
    /// The fixture repositories.
    #[arg(long, default_value = "services/orchestration/eval")]
    fixtures: PathBuf,
    /// Only fixtures whose name contains this.
    #[arg(long)]
    only: Option<String>,
    /// Strategies, comma-separated: single-shot, iterative, multi-agent.
    #[arg(long, default_value = "single-shot,iterative,multi-agent", value_delimiter = ',')]
    strategies: Vec<String>,
    /// A model id; empty lets the llm service choose.
    #[arg(long, default_value = "")]
    model: String,
    /// Seconds each task may take before it is cancelled.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Iterations per run (the server's default when unset).
    #[arg(long)]
    max_iterations: Option<i32>,
    /// The user the tasks belong to.
    #[arg(long, default_value = "eval")]
    user: String,
    /// Where to write the Markdown report (it is printed as well).
    #[arg(long)]
    report: Option<PathBuf>,
    /// The orchestration service's configuration, for the signing key and sandbox settings.
    #[command(flatten)]
    config: ConfigArgs,
}

pub(crate) async fn run(args: EvalArgs) -> anyhow::Result<()> {
    let service: codingagent_orchestration::Config = config::load(&args.config)?;
    let strategies = args
        .strategies
        .iter()
        .map(|s| eval::parse_strategy(s.trim()).with_context(|| format!("unknown strategy `{s}`")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut fixtures = eval::load(&args.fixtures)?;
    if let Some(only) = &args.only {
        fixtures.retain(|f| f.name.contains(only.as_str()));
    }
    anyhow::ensure!(!fixtures.is_empty(), "no fixtures in {}", args.fixtures.display());
    let token = TokenMinter::new(&service.identity).mint(&Caller::user(&args.user))?;
    let channel = tonic::transport::Endpoint::from_shared(args.orchestration.clone())?.connect().await?;
    let mut client =
        OrchestrationServiceClient::new(InterceptedService::new(channel, StaticToken::new(Some(token))));
    let mut sandbox = service.sandbox.clone();
    if sandbox.detect_toolchains && sandbox.toolchains.is_empty() {
        sandbox.toolchains = codingagent_orchestration::sandbox::detect_toolchains();
    }
    let options = Options {
        strategies,
        model: args.model.clone(),
        timeout: Duration::from_secs(args.timeout),
        work_dir: std::env::temp_dir().join("codingagent-eval"),
        sandbox,
        budget: args.max_iterations.map(|max_iterations| {
            codingagent_proto::codingagent::orchestration::v1::TaskBudget {
                max_iterations,
                ..Default::default()
            }
        }),
    };
    let outcomes = eval::run(&mut client, &fixtures, &options, |done, total, o| {
        let verdict = if o.solved { "solved" } else { "not solved" };
        let _ = writeln!(
            std::io::stderr(),
            "[{done}/{total}] {} ({:?}): {verdict} in {:.1} s",
            o.fixture,
            o.strategy,
            o.seconds
        );
    })
    .await?;
    let report = eval::report(&outcomes, &args.model);
    if let Some(path) = &args.report {
        std::fs::write(path, &report)?;
    }
    std::io::stdout().write_all(report.as_bytes())?;
    Ok(())
}
