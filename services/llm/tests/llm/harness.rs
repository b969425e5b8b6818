//! One llm service per test, with its own database, consumer group and Ollama double.

use codingagent_kernel::CancellationToken;
use codingagent_kernel::identity::{Caller, OPERATOR_ROLE, StaticToken};
use codingagent_llm::Config;
use codingagent_llm::config::{OllamaConfig, OpenAiConfig};
use codingagent_proto::codingagent::llm::v1 as pb;
use codingagent_proto::codingagent::llm::v1::llm_service_client::LlmServiceClient;
use codingagent_testkit::{TestDatabase, unique_name};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use wiremock::MockServer;

pub(crate) type Client = LlmServiceClient<InterceptedService<Channel, StaticToken>>;

/// The real model server `./dev` starts.
pub(crate) fn local_base_url() -> String {
    std::env::var("LLM_OPENAI_BASE_URL").unwrap_or_else(|_| "http://127.0.0.1:58080/v1".into())
}

pub(crate) struct Llm {
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) ollama: MockServer,
    pub(crate) config: Config,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    database: Option<TestDatabase>,
}

/// How a test wants the service set up.
#[derive(Debug, Clone, Default)]
pub(crate) struct Setup {
    /// Register the real local server as an OpenAI-compatible provider named `local`.
    pub(crate) local: bool,
    /// Register the real local server a second time as the cloud provider `cloud`, and use
    /// it as the fallback.
    pub(crate) cloud_fallback: bool,
    pub(crate) default_model: String,
    /// Let the service pull the hardware-recommended model when Ollama has none.
    pub(crate) pull_default: bool,
    /// Talk to this Ollama instead of the double passed to `start`.
    pub(crate) ollama_url: Option<String>,
    /// Changes the configuration last, after everything above.
    pub(crate) configure: Option<fn(&mut Config)>,
}

impl Llm {
    /// Starts the service; the Ollama double must be mounted before `sync` if the test needs
    /// Ollama models in the registry.
    pub(crate) async fn start(setup: Setup, ollama: MockServer) -> Self {
        let database = TestDatabase::create().await.unwrap();
        let shared = codingagent_testkit::sections(&database);
        let mut config = Config {
            server: shared.server,
            database: shared.database,
            redis: shared.redis,
            kafka: shared.kafka,
            ..Config::default()
        };
        config.ollama = Some(OllamaConfig {
            base_url: setup.ollama_url.clone().unwrap_or_else(|| ollama.uri()),
            idle_timeout_ms: 5_000,
            pull_default_on_start: setup.pull_default,
            ..OllamaConfig::default()
        });
        config.task_outcomes_group = unique_name("llm-test");
        config.routing.breaker_failures = 2;
        config.routing.breaker_cool_down_secs = 60;
        config.routing.default_model = setup.default_model.clone();
        if setup.local {
            config.openai.push(OpenAiConfig {
                name: "local".into(),
                base_url: local_base_url(),
                cloud: false,
                ..OpenAiConfig::default()
            });
        }
        if setup.cloud_fallback {
            config.openai.push(OpenAiConfig {
                name: "cloud".into(),
                base_url: local_base_url(),
                cloud: true,
                input_price_micros_per_million: 150_000,
                output_price_micros_per_million: 600_000,
                ..OpenAiConfig::default()
            });
            config.routing.fallback_model = "cloud/gemma-3-270m".into();
        }
        if let Some(configure) = setup.configure {
            configure(&mut config);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(codingagent_llm::serve(config.clone(), listener, shutdown.clone()));
        let llm = Self { addr, ollama, config, shutdown, handle, database: Some(database) };
        // Health says when migrations are done and the dependencies answer; the first registry
        // sync runs in the background, so one is forced before the test sees the catalogue.
        codingagent_testkit::wait_until_serving(llm.addr).await;
        let mut client = llm.operator().await;
        client.sync_registry(pb::SyncRegistryRequest::default()).await.unwrap();
        llm
    }

    pub(crate) async fn client_for(&self, caller: Caller) -> Client {
        LlmServiceClient::new(
            codingagent_testkit::connect_as(self.addr, &self.config.identity, &caller).await,
        )
    }

    pub(crate) async fn user(&self, name: &str) -> Client {
        self.client_for(Caller::user(name)).await
    }

    pub(crate) async fn operator(&self) -> Client {
        self.client_for(Caller::user("ops").with_roles([OPERATOR_ROLE])).await
    }

    /// Stops the service and starts it again on the same database, with `ollama` as its
    /// Ollama, without waiting for a registry sync.
    pub(crate) async fn restart(mut self, ollama: MockServer) -> Self {
        self.shutdown.cancel();
        (&mut self.handle).await.unwrap().unwrap();
        let mut config = self.config.clone();
        if let Some(o) = config.ollama.as_mut() {
            o.base_url = ollama.uri();
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(codingagent_llm::serve(config.clone(), listener, shutdown.clone()));
        Self { addr, ollama, config, shutdown, handle, database: self.database.take() }
    }

    pub(crate) async fn stop(mut self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
        if let Some(database) = self.database.take() {
            database.drop_database().await.unwrap();
        }
    }

    /// Requests the Ollama double received on `path`.
    pub(crate) async fn ollama_calls(&self, path: &str) -> usize {
        self.ollama
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.url.path() == path)
            .count()
    }
}

pub(crate) fn user_message(text: &str) -> pb::ChatMessage {
    pb::ChatMessage { role: pb::Role::User as i32, content: text.into(), name: String::new() }
}

/// A prompt no other test (or earlier run) sends, so cache entries never leak between tests.
pub(crate) fn fresh_prompt(text: &str) -> Vec<pb::ChatMessage> {
    vec![user_message(&format!("{text} [{}]", uuid::Uuid::new_v4()))]
}

pub(crate) fn options(temperature: f64, max_tokens: i32) -> Option<pb::GenerationOptions> {
    Some(pb::GenerationOptions {
        temperature: Some(temperature),
        max_tokens: Some(max_tokens),
        ..Default::default()
    })
}
