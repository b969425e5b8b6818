//! `codingagent dead-letters …`: what an operator does with events a service's consumers set
//! aside because they could never be applied: list them with their reasons, and replay one
//! once its cause is fixed (a fixed handler, a repaired reference).

use anyhow::Context;
use codingagent_kernel::config::{self, ConfigArgs, DatabaseConfig};
use codingagent_kernel::db;
use codingagent_kernel::kafka::dead_letters;
use sqlx::migrate::Migrator;
use std::io::Write;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum DeadLetterCommand {
    /// List dead letters, newest first.
    List {
        /// The service whose consumers set them aside (`codingagent services`).
        #[arg(long)]
        service: String,
        /// Only this consumer group.
        #[arg(long)]
        consumer: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Put one dead letter back on its topic for its consumer to apply again.
    Replay {
        #[arg(long)]
        service: String,
        /// The id `list` shows.
        id: i64,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

pub(crate) async fn run(command: DeadLetterCommand) -> anyhow::Result<()> {
    match command {
        DeadLetterCommand::List { service, consumer, limit, config } => {
            let pool = connect(&service, &config).await?;
            let letters = dead_letters::list(&pool, consumer.as_deref(), limit.clamp(1, 10_000)).await?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:>6}  {:<20}  {:<28}  {:<24}  {:<9}  reason",
                "id", "failed", "consumer", "topic", "state"
            )?;
            for letter in &letters {
                let state = if letter.replayed_at.is_some() { "replayed" } else { "waiting" };
                writeln!(
                    out,
                    "{:>6}  {:<20}  {:<28}  {:<24}  {:<9}  {}",
                    letter.id,
                    letter.failed_at.format("%Y-%m-%d %H:%M:%S"),
                    letter.consumer,
                    letter.topic,
                    state,
                    letter.reason.replace('\n', " ")
                )?;
            }
            writeln!(out, "{} dead letter(s)", letters.len())?;
            pool.close().await;
            Ok(())
        }
        DeadLetterCommand::Replay { service, id, config } => {
            let pool = connect(&service, &config).await?;
            let event_id = dead_letters::replay(&pool, id).await?;
            writeln!(std::io::stdout(), "dead letter {id} replayed as event {event_id}")?;
            pool.close().await;
            Ok(())
        }
    }
}

/// The service's own database settings and schema, from its usual configuration layers.
async fn connect(service: &str, args: &ConfigArgs) -> anyhow::Result<sqlx::PgPool> {
    let (database, migrations): (DatabaseConfig, &Migrator) = match service {
        "chat" => (config::load::<codingagent_chat::Config>(args)?.database, &codingagent_chat::MIGRATIONS),
        "classifier" => (
            config::load::<codingagent_classifier::Config>(args)?.database,
            &codingagent_classifier::MIGRATIONS,
        ),
        "llm" => (config::load::<codingagent_llm::Config>(args)?.database, &codingagent_llm::MIGRATIONS),
        other => anyhow::bail!("unknown service `{other}`; services with consumers: chat, classifier, llm"),
    };
    db::connect(&database, service, migrations).await.with_context(|| format!("{service} database"))
}
