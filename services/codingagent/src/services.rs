//! The services this build contains and how to run them. Each entry calls the service
//! crate's `run` (config loading, telemetry, dependencies, then `serve`), so `all` and
//! `serve NAME` differ only in how many of them share the process.

use codingagent_kernel::config::ConfigArgs;
use futures::future::BoxFuture;
use std::path::Path;

/// One runnable service.
pub(crate) struct ServiceEntry {
    pub(crate) name: &'static str,
    pub(crate) run: fn(ConfigArgs) -> BoxFuture<'static, anyhow::Result<()>>,
}

/// Services are added here as their crates land (ARCHITECTURE §12).
const SERVICES: &[ServiceEntry] = &[
    ServiceEntry { name: "llm", run: |args| Box::pin(codingagent_llm::run(args)) },
    ServiceEntry { name: "classifier", run: |args| Box::pin(codingagent_classifier::run(args)) },
    ServiceEntry { name: "chat", run: |args| Box::pin(codingagent_chat::run(args)) },
    ServiceEntry { name: "orchestration", run: |args| Box::pin(codingagent_orchestration::run(args)) },
    ServiceEntry { name: "gateway", run: |args| Box::pin(codingagent_gateway::run(args)) },
];

pub(crate) fn print_list() {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    for service in SERVICES {
        let _ = writeln!(stdout, "{}", service.name);
    }
}

pub(crate) async fn run_one(name: &str, config: &ConfigArgs) -> anyhow::Result<()> {
    let entry = SERVICES.iter().find(|s| s.name == name).ok_or_else(|| {
        let known: Vec<_> = SERVICES.iter().map(|s| s.name).collect();
        anyhow::anyhow!(
            "unknown service `{name}`; this build has: {}",
            if known.is_empty() { "none yet".into() } else { known.join(", ") }
        )
    })?;
    (entry.run)(config.clone()).await
}

/// Runs every service until the first one stops; a failing service stops the process so a
/// supervisor restarts it whole.
///
/// With `config_dir`, each service reads `<config_dir>/<service>.toml` when it exists.
pub(crate) async fn run_all(config: &ConfigArgs, config_dir: Option<&Path>) -> anyhow::Result<()> {
    if SERVICES.is_empty() {
        anyhow::bail!("this build contains no services yet");
    }
    let runs = SERVICES.iter().map(|s| {
        let mut args = config.clone();
        if let Some(file) = config_dir.map(|dir| dir.join(format!("{}.toml", s.name))).filter(|f| f.exists())
        {
            args.file = Some(file);
        }
        let run = (s.run)(args);
        Box::pin(async move { (s.name, run.await) })
    });
    let ((name, result), _, _) = futures::future::select_all(runs).await;
    result.map_err(|error| error.context(format!("service {name} stopped")))
}
