//! The orchestration service's configuration (`CODINGAGENT_ORCHESTRATION__…`,
//! `deploy/config/orchestration.example.toml`).

use codingagent_kernel::config::{ConfigError, Environment};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

codingagent_kernel::service_config! {
    /// The orchestration service's settings.
    pub struct Config("ORCHESTRATION", port 50_056) {
        pub budgets: BudgetsConfig = BudgetsConfig::default(),
        pub quotas: QuotasConfig = QuotasConfig::default(),
        pub worker: WorkerConfig = WorkerConfig::default(),
        pub sandbox: SandboxConfig = SandboxConfig::default(),
        pub agent: AgentConfig = AgentConfig::default(),
        pub classifier: EndpointConfig = EndpointConfig::default(),
        pub llm: EndpointConfig = EndpointConfig::default(),
        /// Allow `Repository.local_path` (the developer all-in-one setup only).
        pub allow_local_repositories: bool = false,
        /// Days a deleted task is kept before its runs, steps and logs are purged.
        pub retention_days: u32 = 30,
        /// How often the purge job runs.
        pub purge_interval_secs: u64 = 3_600,
        /// Seconds between heartbeats on idle streams.
        pub heartbeat_secs: u64 = 15,
    }
}

/// Budget defaults (used when a request leaves a field unset) and maxima (above them a
/// request is INVALID_ARGUMENT), per run and per task.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetsConfig {
    pub default_run_tokens: i64,
    pub max_run_tokens: i64,
    pub default_run_iterations: i32,
    pub max_run_iterations: i32,
    pub default_run_wall_secs: i64,
    pub max_run_wall_secs: i64,
    /// Defaults of a task's total; each maximum is the per-run maximum times `max_runs`.
    pub default_task_tokens: i64,
    pub default_task_iterations: i32,
    pub default_task_wall_secs: i64,
    pub max_runs: i32,
}

impl Default for BudgetsConfig {
    fn default() -> Self {
        Self {
            default_run_tokens: 200_000,
            max_run_tokens: 2_000_000,
            default_run_iterations: 5,
            max_run_iterations: 50,
            default_run_wall_secs: 1_800,
            max_run_wall_secs: 4 * 3_600,
            default_task_tokens: 600_000,
            default_task_iterations: 15,
            default_task_wall_secs: 3 * 1_800,
            max_runs: 10,
        }
    }
}

/// Per-user quotas, checked before any work starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotasConfig {
    /// Tasks created or retried per user in a sliding hour; 0 is unlimited.
    pub executions_per_hour: i64,
    /// Runs of one user executing at once; more wait in QUEUED. 0 is unlimited.
    pub concurrent_runs: i64,
    /// Tokens of one user's task runs per calendar month (UTC); 0 is unlimited.
    pub monthly_tokens: i64,
}

impl Default for QuotasConfig {
    fn default() -> Self {
        Self { executions_per_hour: 10, concurrent_runs: 2, monthly_tokens: 10_000_000 }
    }
}

/// Workers: how runs are claimed and kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Runs this instance executes at once; 0 makes it an API-only replica.
    pub concurrency: usize,
    /// A claimed run's lease; renewed every third of it. A worker that dies lets it lapse
    /// and another worker resumes the run after at most this long.
    pub lease_secs: u64,
    /// How often an idle worker looks for queued runs (a NOTIFY wakes it sooner).
    pub poll_ms: u64,
    /// Where run workspaces are created; emptied of a run's directory when it ends.
    pub workspace_root: PathBuf,
    /// A clone or fetch slower than this fails the run as REPOSITORY_UNAVAILABLE.
    pub git_timeout_secs: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 2,
            lease_secs: 30,
            poll_ms: 1_000,
            workspace_root: std::env::temp_dir().join("codingagent-workspaces"),
            git_timeout_secs: 300,
        }
    }
}

/// The sandbox the test command runs in.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// The bubblewrap binary.
    pub bwrap: PathBuf,
    /// Wall time of one command; it is killed (with everything it started) at the limit.
    pub wall_secs: u64,
    /// CPU seconds of each process (RLIMIT_CPU).
    pub cpu_secs: u64,
    /// Address space of each process (RLIMIT_AS), in MiB.
    pub memory_mib: u64,
    /// Processes of the sandbox user (RLIMIT_NPROC): what stops a fork bomb.
    pub max_processes: u64,
    /// Largest file a command may write (RLIMIT_FSIZE), in MiB.
    pub max_file_mib: u64,
    /// Output kept per command: this many bytes from the start and as many from the end.
    pub output_head_bytes: usize,
    pub output_tail_bytes: usize,
    /// When the service runs as root, commands run as this unprivileged uid (root ignores
    /// the process limit).
    pub uid: u32,
    /// Extra read-only paths the command may read.
    pub read_only_paths: Vec<PathBuf>,
    /// Toolchains outside /usr (a Rust sysroot): bound read-only, their `bin` first on PATH.
    pub toolchains: Vec<PathBuf>,
    /// Add the Rust toolchain `rustc --print sysroot` names at start, when there is one.
    pub detect_toolchains: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            bwrap: PathBuf::from("/usr/bin/bwrap"),
            wall_secs: 600,
            cpu_secs: 600,
            memory_mib: 4_096,
            max_processes: 256,
            max_file_mib: 512,
            output_head_bytes: 32 * 1024,
            output_tail_bytes: 64 * 1024,
            uid: 65_534,
            read_only_paths: Vec::new(),
            toolchains: Vec::new(),
            detect_toolchains: true,
        }
    }
}

/// How the agent talks to models.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Tokens the repository map may take in the first prompt.
    pub repo_map_tokens: usize,
    /// Tool turns (open, search, map) allowed per iteration before an edit is required.
    pub tool_turns: u32,
    /// Output tokens asked for per model call.
    pub max_output_tokens: u32,
    /// Models per multi-agent role; empty uses the task's model.
    pub planner_model: String,
    pub reviewer_model: String,
    /// The model when the llm service cannot select one (it is down at creation).
    pub fallback_model: String,
    /// Timeout of one model call.
    pub call_timeout_secs: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            repo_map_tokens: 1_024,
            tool_turns: 4,
            max_output_tokens: 2_048,
            planner_model: String::new(),
            reviewer_model: String::new(),
            fallback_model: String::new(),
            call_timeout_secs: 300,
        }
    }
}

/// Another service this one calls.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EndpointConfig {
    /// e.g. `http://127.0.0.1:50054`; empty means not configured (the fallback applies).
    pub endpoint: String,
    pub timeout_ms: u64,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self { endpoint: String::new(), timeout_ms: 5_000 }
    }
}

impl Config {
    /// The orchestration service's own rules; the kernel checks the shared sections.
    fn check(&self) -> Result<(), ConfigError> {
        let b = &self.budgets;
        for (key, default, max) in [
            ("budgets.default_run_tokens", b.default_run_tokens, b.max_run_tokens),
            (
                "budgets.default_run_iterations",
                i64::from(b.default_run_iterations),
                i64::from(b.max_run_iterations),
            ),
            ("budgets.default_run_wall_secs", b.default_run_wall_secs, b.max_run_wall_secs),
        ] {
            if default <= 0 || default > max {
                return Err(ConfigError::invalid(key, "must be positive and at most its maximum"));
            }
        }
        if b.max_runs <= 0 {
            return Err(ConfigError::invalid("budgets.max_runs", "must be greater than zero"));
        }
        for (key, value) in [
            ("worker.lease_secs", self.worker.lease_secs),
            ("worker.poll_ms", self.worker.poll_ms),
            ("sandbox.wall_secs", self.sandbox.wall_secs),
            ("sandbox.max_processes", self.sandbox.max_processes),
            ("purge_interval_secs", self.purge_interval_secs),
            ("heartbeat_secs", self.heartbeat_secs),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be greater than zero"));
            }
        }
        if self.worker.lease_secs < 3 {
            return Err(ConfigError::invalid(
                "worker.lease_secs",
                "must be at least 3 (renewed every third)",
            ));
        }
        if self.allow_local_repositories && self.identity.environment == Environment::Production {
            // Any user could have the worker read any git tree on the host.
            return Err(ConfigError::invalid(
                "allow_local_repositories",
                "must be false in production (it lets users read the host's git working trees)",
            ));
        }
        if self.sandbox.uid == 0 {
            return Err(ConfigError::invalid("sandbox.uid", "must not be root"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codingagent_kernel::config::ServiceConfig;
    use codingagent_testkit::load_config;

    #[test]
    fn the_example_and_dev_configs_parse() {
        let example = load_config::<Config>("deploy/config/orchestration.example.toml").unwrap();
        assert_eq!(example.quotas.executions_per_hour, 10);
        assert!(!example.allow_local_repositories);
        let dev = load_config::<Config>("deploy/config/dev/orchestration.toml").unwrap();
        assert_eq!(dev.server.listen_addr.port(), 50_056);
        assert!(dev.allow_local_repositories);
    }

    #[test]
    fn bad_settings_are_refused_with_their_key() {
        let mut config = Config::default();
        config.budgets.default_run_tokens = config.budgets.max_run_tokens + 1;
        assert!(config.validate().unwrap_err().to_string().contains("budgets.default_run_tokens"));
        let mut config = Config::default();
        config.sandbox.uid = 0;
        assert!(config.validate().unwrap_err().to_string().contains("sandbox.uid"));
        let mut config = Config { allow_local_repositories: true, ..Config::default() };
        config.identity.environment = Environment::Production;
        assert!(config.validate().unwrap_err().to_string().contains("allow_local_repositories"));
        let mut config = Config::default();
        config.worker.lease_secs = 1;
        assert!(config.validate().unwrap_err().to_string().contains("worker.lease_secs"));
    }
}
