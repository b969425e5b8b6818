//! The `codingagent` command: runs every service in one process (`all`, for a developer's
//! machine), one service (`serve NAME`, for production where each runs in its own
//! container), and developer tools such as minting identity tokens. The services' own
//! `serve()` functions do the work, so every mode runs the same code.

mod classifier;
mod dead_letters;
mod eval;
mod services;
mod token;

use clap::{Parser, Subcommand};
use codingagent_kernel::config::ConfigArgs;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "codingagent",
    version,
    about = "CodingAgent: coding requests in, reviewed pull requests out"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every service in this process, each on its own port.
    All {
        /// Folder with one `<service>.toml` per service (e.g. `deploy/config/dev`).
        #[arg(long, value_name = "DIR")]
        config_dir: Option<std::path::PathBuf>,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Run one service.
    Serve {
        /// The service to run (see `codingagent services`).
        service: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// List the services this build contains.
    Services,
    /// Mint an internal identity token for calling services directly in development.
    Token(token::TokenArgs),
    /// Classifier tools: train a model.
    #[command(subcommand)]
    Classifier(classifier::ClassifierCommand),
    /// Run the fixture repositories as tasks on a running orchestration service and report
    /// solve rate, tokens, cost and time per strategy.
    Eval(eval::EvalArgs),
    /// Events a service's consumers could never apply: list and replay them.
    #[command(subcommand)]
    DeadLetters(dead_letters::DeadLetterCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Token(args) => token::run(&args),
        Command::Classifier(command) => classifier::run(command),
        Command::Eval(args) => runtime().and_then(|rt| rt.block_on(eval::run(args))),
        Command::DeadLetters(command) => runtime().and_then(|rt| rt.block_on(dead_letters::run(command))),
        Command::Services => {
            services::print_list();
            Ok(())
        }
        Command::All { config_dir, config } => {
            runtime().and_then(|rt| rt.block_on(services::run_all(&config, config_dir.as_deref())))
        }
        Command::Serve { service, config } => {
            runtime().and_then(|rt| rt.block_on(services::run_one(&service, &config)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("codingagent: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}
