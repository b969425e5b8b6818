//! The classifier service's configuration (`CODINGAGENT_CLASSIFIER__…`,
//! `deploy/config/classifier.example.toml`).

use codingagent_kernel::config::ConfigError;
use serde::{Deserialize, Serialize};

codingagent_kernel::service_config! {
    /// The classifier service's settings.
    pub struct Config("CLASSIFIER", port 50_054) {
        pub cascade: CascadeConfig = CascadeConfig::default(),
        pub llm: LlmStageConfig = LlmStageConfig::default(),
        pub training: TrainingConfig = TrainingConfig::default(),
        /// Classify calls per caller per minute, shared by all replicas through Redis; 0
        /// disables the limit.
        pub rate_limit_per_minute: u32 = 100,
        /// Consumer group turning task outcomes into samples; replicas share it.
        pub task_outcomes_group: String = "classifier-task-outcomes".into(),
        /// How often a replica checks which model serves, to hot-swap after a promotion or
        /// rollback made on another replica.
        pub model_poll_ms: u64 = 2_000,
    }
}

/// Which stages run and how sure each must be.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CascadeConfig {
    /// Task-type confidence the heuristic needs to decide alone; above 1 skips it.
    pub heuristic_threshold: f32,
    /// Task-type confidence the model needs before the LLM stage is skipped; above 1 always
    /// asks the LLM (when enabled).
    pub model_threshold: f32,
}

impl Default for CascadeConfig {
    fn default() -> Self {
        Self { heuristic_threshold: 0.75, model_threshold: 0.6 }
    }
}

/// The LLM stage: the llm service over gRPC.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmStageConfig {
    /// The llm service, e.g. `http://127.0.0.1:50053`; empty disables the stage.
    pub endpoint: String,
    /// A model id to ask; empty lets the llm service choose.
    pub model: String,
    pub timeout_ms: u64,
}

impl Default for LlmStageConfig {
    fn default() -> Self {
        Self { endpoint: String::new(), model: String::new(), timeout_ms: 20_000 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainingConfig {
    /// Default minimum samples per label present in the data.
    pub min_samples_per_class: u32,
    /// Requests may not lower the minimum below this.
    pub min_samples_floor: u32,
    /// Minimum samples in a snapshot.
    pub min_total_samples: u32,
    pub epochs: usize,
    /// Load the shipped seed corpus and model into an empty database on start.
    pub seed_on_start: bool,
    /// How far below the serving model's macro F1 a candidate may be and still count as no
    /// worse (float noise, not a quality allowance).
    pub promotion_tolerance: f64,
    /// At most this many feedback samples of one user (the newest) enter a training run's
    /// snapshot, so one user cannot flood a retrain.
    pub feedback_per_user: u32,
    /// One user's feedback samples together weigh at most this fraction of a run's samples
    /// (each is weighted down when they would weigh more), in (0, 1].
    pub feedback_user_share: f64,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            min_samples_per_class: 30,
            min_samples_floor: 5,
            min_total_samples: 100,
            epochs: 300,
            seed_on_start: true,
            promotion_tolerance: 1e-9,
            feedback_per_user: 200,
            feedback_user_share: 0.02,
        }
    }
}

impl Config {
    /// The classifier's own rules; the kernel checks the shared sections.
    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| Err(ConfigError::invalid(key, reason));
        if !(0.0..=2.0).contains(&self.cascade.heuristic_threshold)
            || !(0.0..=2.0).contains(&self.cascade.model_threshold)
        {
            return invalid("cascade", "thresholds must be between 0 and 2");
        }
        if self.training.min_samples_floor == 0
            || self.training.min_samples_per_class < self.training.min_samples_floor
        {
            return invalid("training.min_samples_per_class", "must be at least min_samples_floor (≥ 1)");
        }
        if self.training.feedback_per_user == 0 {
            return invalid("training.feedback_per_user", "must be positive");
        }
        if !(self.training.feedback_user_share > 0.0 && self.training.feedback_user_share <= 1.0) {
            return invalid("training.feedback_user_share", "must be in (0, 1]");
        }
        if self.training.epochs == 0 {
            return invalid("training.epochs", "must be positive");
        }
        if self.model_poll_ms == 0 {
            return invalid("model_poll_ms", "must be positive");
        }
        let endpoint = &self.llm.endpoint;
        if !(endpoint.is_empty() || endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return invalid("llm.endpoint", "must be an http:// or https:// URL");
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
        let example = load_config::<Config>("deploy/config/classifier.example.toml").unwrap();
        assert_eq!(example.rate_limit_per_minute, 100);
        assert_eq!(example.llm.endpoint, "http://llm:50053");
        let dev = load_config::<Config>("deploy/config/dev/classifier.toml").unwrap();
        assert_eq!(dev.llm.endpoint, "http://127.0.0.1:50053");
    }

    #[test]
    fn nonsense_is_refused_with_the_key() {
        let config = Config {
            training: TrainingConfig { epochs: 0, ..TrainingConfig::default() },
            ..Config::default()
        };
        assert!(config.validate().unwrap_err().to_string().contains("training.epochs"));
        let mut config = Config::default();
        config.llm.endpoint = "llm:50053".into();
        assert!(config.validate().unwrap_err().to_string().contains("llm.endpoint"));
        let mut config = Config::default();
        config.training.min_samples_per_class = 2;
        assert!(config.validate().unwrap_err().to_string().contains("min_samples_per_class"));
        let mut config = Config::default();
        config.training.feedback_user_share = 0.0;
        assert!(config.validate().unwrap_err().to_string().contains("feedback_user_share"));
    }
}
