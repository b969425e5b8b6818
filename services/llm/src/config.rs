//! The llm service's configuration (`CODINGAGENT_LLM__…`, `deploy/config/llm.example.toml`).

use codingagent_kernel::config::{ConfigError, Secret};
use serde::{Deserialize, Serialize};

codingagent_kernel::service_config! {
    /// The llm service's settings.
    pub struct Config("LLM", port 50_053) {
        /// Local models through Ollama; unset disables it.
        pub ollama: Option<OllamaConfig> = Some(OllamaConfig::default()),
        /// OpenAI-compatible endpoints (cloud providers, or local llama.cpp/vLLM servers).
        pub openai: Vec<OpenAiConfig> = Vec::new(),
        pub routing: RoutingConfig = RoutingConfig::default(),
        pub cache: CacheConfig = CacheConfig::default(),
        pub budgets: BudgetConfig = BudgetConfig::default(),
        /// Consumer group reading task outcomes for the learned selector; replicas share it.
        pub task_outcomes_group: String = "llm-task-outcomes".into(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OllamaConfig {
    pub base_url: String,
    pub connect_timeout_ms: u64,
    /// Longest silence between streamed chunks before the call counts as failed.
    pub idle_timeout_ms: u64,
    /// Pull the hardware-recommended model on start when Ollama has no chat model yet.
    pub pull_default_on_start: bool,
    /// What to pull for each size class the hardware supports (`1B`, `3B`, `7B`, `13B`,
    /// `34B`, `70B`), as Ollama model names.
    pub default_models: std::collections::BTreeMap<String, String>,
}

impl Default for OllamaConfig {
    fn default() -> Self {
        Self {
            base_url: "http://127.0.0.1:11434".into(),
            connect_timeout_ms: 2_000,
            idle_timeout_ms: 120_000,
            pull_default_on_start: false,
            default_models: [
                ("1B", "qwen2.5-coder:1.5b"),
                ("3B", "qwen2.5-coder:3b"),
                ("7B", "qwen2.5-coder:7b"),
                ("13B", "qwen2.5-coder:14b"),
                ("34B", "qwen2.5-coder:32b"),
                ("70B", "llama3.3:70b"),
            ]
            .into_iter()
            .map(|(size, model)| (size.to_owned(), model.to_owned()))
            .collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenAiConfig {
    /// The provider name, the prefix of its model ids (`openai/gpt-4o-mini`).
    pub name: String,
    /// Ends in `/v1`.
    pub base_url: String,
    pub api_key: Secret,
    /// Cloud providers cost money: every call to one is held to the provider's budget.
    pub cloud: bool,
    /// Prices in micro-USD per million tokens, for cost accounting.
    pub input_price_micros_per_million: i64,
    pub output_price_micros_per_million: i64,
    pub connect_timeout_ms: u64,
    pub idle_timeout_ms: u64,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        Self {
            name: "openai".into(),
            base_url: "https://api.openai.com/v1".into(),
            api_key: Secret::default(),
            cloud: true,
            input_price_micros_per_million: 0,
            output_price_micros_per_million: 0,
            connect_timeout_ms: 5_000,
            idle_timeout_ms: 120_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// The model used when nothing else decides; empty means "pick from the registry by the
    /// detected hardware".
    pub default_model: String,
    /// A cloud model (`<provider>/<name>`) used when the primary provider's breaker is open
    /// or it fails before streaming; empty disables the fallback.
    pub fallback_model: String,
    pub breaker_failures: u32,
    pub breaker_cool_down_secs: u64,
    /// How often the registry is refreshed from every provider.
    pub registry_sync_secs: u64,
    /// Outcomes a model needs in a task bucket before the learned selector trusts it.
    pub learned_min_outcomes: i64,
    /// Share of selections the learned selector spends exploring less-tried models.
    pub exploration_rate: f64,
    /// Who may name a cloud provider's model in a call (`everyone`, `operators`, `nobody`);
    /// cloud models chosen by configuration (default, fallback) or A/B tests are not affected.
    pub explicit_cloud_models: CloudModelAccess,
}

/// Who may pick a cloud model explicitly. Cloud calls cost money, so by default only
/// operators (and services acting for nobody) may.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloudModelAccess {
    Everyone,
    #[default]
    Operators,
    Nobody,
}

impl CloudModelAccess {
    pub fn allows(self, operator: bool) -> bool {
        match self {
            Self::Everyone => true,
            Self::Operators => operator,
            Self::Nobody => false,
        }
    }
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            default_model: String::new(),
            fallback_model: String::new(),
            breaker_failures: 3,
            breaker_cool_down_secs: 30,
            registry_sync_secs: 300,
            learned_min_outcomes: 20,
            exploration_rate: 0.1,
            explicit_cloud_models: CloudModelAccess::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    pub enabled: bool,
    pub ttl_secs: i64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { enabled: true, ttl_secs: 7 * 24 * 3600 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// Monthly tokens per user when no budget was set for them; 0 means unlimited.
    pub default_user_monthly_tokens: i64,
    /// Monthly tokens per cloud provider when none was set; 0 means unlimited.
    pub default_provider_monthly_tokens: i64,
    /// Output tokens a generation without `max_tokens` reserves against budgets while it runs
    /// (its real usage is charged when it ends).
    pub default_reserved_output_tokens: i64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            default_user_monthly_tokens: 2_000_000,
            default_provider_monthly_tokens: 0,
            default_reserved_output_tokens: 1_024,
        }
    }
}

impl Config {
    /// The llm service's own rules; the kernel checks the shared sections.
    fn check(&self) -> Result<(), ConfigError> {
        let mut names = Vec::new();
        if let Some(ollama) = &self.ollama {
            url("ollama.base_url", &ollama.base_url)?;
            names.push("ollama".to_owned());
        }
        for (index, openai) in self.openai.iter().enumerate() {
            url(&format!("openai[{index}].base_url"), &openai.base_url)?;
            if openai.name.is_empty() || openai.name.contains('/') {
                return Err(ConfigError::invalid(
                    format!("openai[{index}].name"),
                    "must be non-empty without `/`",
                ));
            }
            if names.contains(&openai.name) {
                return Err(ConfigError::invalid(
                    format!("openai[{index}].name"),
                    "is used by another provider",
                ));
            }
            names.push(openai.name.clone());
        }
        for (key, model) in [
            ("routing.default_model", &self.routing.default_model),
            ("routing.fallback_model", &self.routing.fallback_model),
        ] {
            if let Some((provider, _)) = model.split_once('/') {
                if !names.iter().any(|n| n == provider) {
                    return Err(ConfigError::invalid(
                        key,
                        format!("names provider `{provider}`, which is not configured"),
                    ));
                }
            } else if !model.is_empty() {
                return Err(ConfigError::invalid(key, "must be `<provider>/<model name>`"));
            }
        }
        if !(0.0..=1.0).contains(&self.routing.exploration_rate) {
            return Err(ConfigError::invalid("routing.exploration_rate", "must be between 0 and 1"));
        }
        if self.budgets.default_reserved_output_tokens < 0 {
            return Err(ConfigError::invalid(
                "budgets.default_reserved_output_tokens",
                "must not be negative",
            ));
        }
        if self.routing.registry_sync_secs == 0 {
            return Err(ConfigError::invalid("routing.registry_sync_secs", "must be greater than zero"));
        }
        Ok(())
    }
}

fn url(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.starts_with("http://") || value.starts_with("https://") {
        Ok(())
    } else {
        Err(ConfigError::invalid(key, "must be an http:// or https:// URL"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codingagent_kernel::config::ServiceConfig;
    use codingagent_testkit::load_config;

    #[test]
    fn the_example_and_dev_configs_parse() {
        let example = load_config::<Config>("deploy/config/llm.example.toml").unwrap();
        assert_eq!(example.routing.fallback_model, "openai/gpt-4o-mini");
        assert_eq!(example.openai[0].api_key.expose(), "sk-example");
        let dev = load_config::<Config>("deploy/config/dev/llm.toml").unwrap();
        assert_eq!(dev.openai[0].name, "local");
    }

    #[test]
    fn only_operators_may_pick_cloud_models_unless_configured_otherwise() {
        assert_eq!(Config::default().routing.explicit_cloud_models, CloudModelAccess::Operators);
        let allowed = |access: CloudModelAccess| (access.allows(false), access.allows(true));
        assert_eq!(allowed(CloudModelAccess::Everyone), (true, true));
        assert_eq!(allowed(CloudModelAccess::Operators), (false, true));
        assert_eq!(allowed(CloudModelAccess::Nobody), (false, false));
        let example = load_config::<Config>("deploy/config/llm.example.toml").unwrap();
        assert_eq!(example.routing.explicit_cloud_models, CloudModelAccess::Operators);
    }

    #[test]
    fn routing_must_name_configured_providers() {
        let config = Config {
            routing: RoutingConfig { fallback_model: "azure/gpt".into(), ..RoutingConfig::default() },
            ..Config::default()
        };
        assert!(config.validate().unwrap_err().to_string().contains("routing.fallback_model"));
        let config = Config {
            routing: RoutingConfig { default_model: "no-slash".into(), ..RoutingConfig::default() },
            ..Config::default()
        };
        assert!(config.validate().unwrap_err().to_string().contains("routing.default_model"));
    }
}
