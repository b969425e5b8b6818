//! The running classifier: the cascade over the hot-swappable serving model and the llm
//! service, the per-caller rate limit, and decision metrics.

use crate::cascade::{self, LlmAnswer, LlmStage, ModelStage, Thresholds};
use crate::config::Config;
use crate::features::extract;
use crate::onnx::{Probabilities, ServingModel};
use crate::slot::ModelSlot;
use crate::{ratelimit, registry};
use codingagent_kernel::identity::{OnBehalfOf, OutboundIdentity, TokenMinter};
use codingagent_kernel::redis::RedisClient;
use codingagent_kernel::telemetry::metrics::Metrics;
use codingagent_proto::codingagent::llm::v1 as llm;
use codingagent_proto::codingagent::llm::v1::llm_service_client::LlmServiceClient;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;

type LlmClient = LlmServiceClient<InterceptedService<Channel, OutboundIdentity>>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: &'static str,
}

/// Everything a request needs.
#[derive(Debug)]
pub(crate) struct Engine {
    pub config: Config,
    pub pool: PgPool,
    pub slot: ModelSlot,
    pub redis: Option<RedisClient>,
    llm: Option<LlmClient>,
    decisions: Family<StageLabel, Counter>,
}

impl Engine {
    pub(crate) fn new(
        config: Config,
        pool: PgPool,
        redis: Option<RedisClient>,
        metrics: &Metrics,
    ) -> anyhow::Result<Self> {
        let llm = if config.llm.endpoint.is_empty() {
            None
        } else {
            // Lazy: the classifier starts, and answers without the LLM stage, while the llm
            // service is down.
            let channel = Endpoint::from_shared(config.llm.endpoint.clone())?
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_millis(config.llm.timeout_ms))
                .connect_lazy();
            let identity = OutboundIdentity::new(TokenMinter::new(&config.identity), "classifier");
            Some(LlmServiceClient::with_interceptor(channel, identity))
        };
        let decisions = Family::<StageLabel, Counter>::default();
        metrics.register(
            "classifier_decisions",
            "Classifications by the cascade stage that decided",
            decisions.clone(),
        );
        Ok(Self { config, pool, slot: ModelSlot::default(), redis, llm, decisions })
    }

    pub(crate) fn thresholds(&self) -> Thresholds {
        Thresholds {
            heuristic: self.config.cascade.heuristic_threshold,
            model: self.config.cascade.model_threshold,
        }
    }

    /// Runs the cascade for `user` (whose identity the llm service sees).
    pub(crate) async fn decide(&self, text: &str, user: &str, allow_llm: bool) -> cascade::Decision {
        let model = SlotStage(self.slot.get());
        let llm =
            LlmCall { client: self.llm.clone(), model: self.config.llm.model.clone(), user: user.to_owned() };
        let use_llm = allow_llm && self.llm.is_some();
        let decision = cascade::decide(text, self.thresholds(), &model, &llm, use_llm).await;
        self.decisions.get_or_create(&StageLabel { stage: decision.stage.label() }).inc();
        decision
    }

    /// Counts a classify call against `caller`'s minute; `Err` with the wait when spent.
    pub(crate) async fn admit(&self, caller: &str) -> Result<(), Duration> {
        match &self.redis {
            Some(redis) => ratelimit::admit(redis, caller, self.config.rate_limit_per_minute).await,
            None => Ok(()),
        }
    }

    /// Loads the serving model from the registry if it is not the one in the slot. A model
    /// that fails to load (corrupt, or built for other features) leaves the old one serving.
    pub(crate) async fn sync_serving(&self) -> anyhow::Result<()> {
        let current = self.slot.get().map(|m| m.version.clone());
        let Some(id) = registry::serving_id(&self.pool).await? else { return Ok(()) };
        if current.as_deref() == Some(id.to_string().as_str()) {
            return Ok(());
        }
        let Some((id, artifact, sha256)) = registry::serving_artifact(&self.pool).await? else {
            return Ok(());
        };
        self.install(id, &artifact, &sha256)
    }

    /// Verifies and swaps in a model's artifact.
    pub(crate) fn install(&self, id: Uuid, artifact: &[u8], sha256: &str) -> anyhow::Result<()> {
        if registry::sha256_hex(artifact) != sha256 {
            anyhow::bail!("model {id}: artifact does not match its SHA-256");
        }
        let model = ServingModel::load(artifact)?;
        if model.version != id.to_string() {
            anyhow::bail!("model {id}: artifact names version {}", model.version);
        }
        self.slot.swap(model);
        tracing::info!(model = %id, "serving model loaded");
        Ok(())
    }
}

/// The model stage over whatever the slot held when the request started.
struct SlotStage(Option<Arc<ServingModel>>);

impl ModelStage for SlotStage {
    fn classify(&self, text: &str) -> Result<(Probabilities, String), String> {
        let model = self.0.as_ref().ok_or("no serving model")?;
        let probabilities = model.probabilities(&extract(text)).map_err(|e| format!("model failed: {e}"))?;
        Ok((probabilities, model.version.clone()))
    }
}

struct LlmCall {
    client: Option<LlmClient>,
    model: String,
    user: String,
}

impl LlmStage for LlmCall {
    async fn ask(&self, prompt: &str) -> Result<LlmAnswer, String> {
        let mut client = self.client.clone().ok_or("the LLM stage is not configured")?;
        let mut request = tonic::Request::new(llm::GenerateOnceRequest {
            messages: vec![llm::ChatMessage {
                role: llm::Role::User as i32,
                content: prompt.to_owned(),
                name: String::new(),
            }],
            model: self.model.clone(),
            options: Some(llm::GenerationOptions {
                temperature: Some(0.0),
                max_tokens: Some(80),
                response_format: llm::ResponseFormat::Json as i32,
                ..Default::default()
            }),
            ..Default::default()
        });
        request.extensions_mut().insert(OnBehalfOf::user(self.user.clone()));
        let response = client
            .generate_once(request)
            .await
            .map_err(|status| format!("llm unavailable: {:?}: {}", status.code(), status.message()))?
            .into_inner();
        Ok(LlmAnswer { text: response.text, model: response.result.map(|r| r.model).unwrap_or_default() })
    }
}
