//! One platform per test: the scripted model double, the real llm service in front of it and
//! the orchestration service, each with its own database; replicas share the orchestration
//! database, as replicas do.

use crate::double::ModelDouble;
use codingagent_kernel::CancellationToken;
use codingagent_kernel::identity::{Caller, OPERATOR_ROLE, StaticToken};
use codingagent_orchestration::Config;
use codingagent_proto::codingagent::common::v1::Strategy;
use codingagent_proto::codingagent::llm::v1 as llm;
use codingagent_proto::codingagent::llm::v1::llm_service_client::LlmServiceClient;
use codingagent_proto::codingagent::orchestration::v1 as pb;
use codingagent_proto::codingagent::orchestration::v1::orchestration_service_client::OrchestrationServiceClient;
use codingagent_testkit::TestDatabase;
use std::path::Path;
use std::time::{Duration, Instant};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub(crate) type Client = OrchestrationServiceClient<InterceptedService<Channel, StaticToken>>;

/// The llm service the orchestration service under test calls.
pub(crate) struct Llm {
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) config: codingagent_llm::Config,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    database: Option<TestDatabase>,
}

impl Llm {
    pub(crate) async fn start(
        model: &ModelDouble,
        configure: impl FnOnce(&mut codingagent_llm::Config),
    ) -> Self {
        let database = TestDatabase::create().await.unwrap();
        let shared = codingagent_testkit::sections(&database);
        let mut config = codingagent_llm::Config {
            server: shared.server,
            database: shared.database,
            redis: shared.redis,
            kafka: shared.kafka,
            ..codingagent_llm::Config::default()
        };
        config.ollama = None;
        config.openai.push(codingagent_llm::config::OpenAiConfig {
            name: "scripted".into(),
            base_url: model.base_url.clone(),
            cloud: false,
            ..Default::default()
        });
        // Scripted answers differ per call; a cached answer would hide what the script says.
        config.cache.enabled = false;
        config.routing.default_model = "scripted/gemma-3-270m".into();
        config.task_outcomes_group = codingagent_testkit::unique_name("llm-orchestration-test");
        configure(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(codingagent_llm::serve(config.clone(), listener, shutdown.clone()));
        codingagent_testkit::wait_until_serving(addr).await;
        let operator = Caller::user("ops").with_roles([OPERATOR_ROLE]);
        let mut client =
            LlmServiceClient::new(codingagent_testkit::connect_as(addr, &config.identity, &operator).await);
        client.sync_registry(llm::SyncRegistryRequest::default()).await.unwrap();
        Self { addr, config, shutdown, handle, database: Some(database) }
    }

    pub(crate) async fn operator(&self) -> LlmServiceClient<InterceptedService<Channel, StaticToken>> {
        let operator = Caller::user("ops").with_roles([OPERATOR_ROLE]);
        LlmServiceClient::new(
            codingagent_testkit::connect_as(self.addr, &self.config.identity, &operator).await,
        )
    }

    pub(crate) async fn pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(self.config.database.url.expose()).await.unwrap()
    }

    pub(crate) async fn stop(mut self) {
        self.shutdown.cancel();
        let _ = self.handle.await;
        if let Some(database) = self.database.take() {
            database.drop_database().await.unwrap();
        }
    }
}

/// The orchestration service under test.
pub(crate) struct Orchestration {
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) config: Config,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    database: Option<TestDatabase>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// The platform a test talks to.
pub(crate) struct Platform {
    pub(crate) model: ModelDouble,
    pub(crate) llm: Option<Llm>,
    pub(crate) orchestration: Orchestration,
}

pub(crate) async fn config(database: &TestDatabase, llm: Option<&Llm>) -> Config {
    let shared = codingagent_testkit::sections(database);
    let mut config = Config {
        server: shared.server,
        database: shared.database,
        redis: shared.redis,
        kafka: shared.kafka,
        ..Config::default()
    };
    config.allow_local_repositories = true;
    config.heartbeat_secs = 1;
    config.worker.lease_secs = 3;
    config.worker.poll_ms = 200;
    config.worker.workspace_root = std::env::temp_dir().join(codingagent_testkit::unique_name("workspaces"));
    config.sandbox.wall_secs = 60;
    if let Some(llm) = llm {
        config.llm.endpoint = format!("http://{}", llm.addr);
    }
    config
}

impl Platform {
    /// The model double, the llm service in front of it and orchestration on `configure`d settings.
    pub(crate) async fn start(configure: impl FnOnce(&mut Config)) -> Self {
        let model = ModelDouble::start().await;
        let llm = Llm::start(&model, |_| {}).await;
        let database = TestDatabase::create().await.unwrap();
        let mut config = config(&database, Some(&llm)).await;
        configure(&mut config);
        let orchestration = Orchestration::start_on(None, config, Some(database)).await;
        Self { model, llm: Some(llm), orchestration }
    }

    pub(crate) async fn stop(mut self) {
        self.orchestration.stop().await;
        if let Some(llm) = self.llm.take() {
            llm.stop().await;
        }
    }
}

impl Orchestration {
    /// A service on `config`; with `runtime`, its tasks run there (and die with it).
    pub(crate) async fn start_on(
        runtime: Option<tokio::runtime::Runtime>,
        config: Config,
        database: Option<TestDatabase>,
    ) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let (serving, stop) = (config.clone(), shutdown.clone());
        let run = async move {
            codingagent_orchestration::serve(serving, tokio::net::TcpListener::from_std(listener)?, stop)
                .await
        };
        let handle = match &runtime {
            Some(runtime) => runtime.spawn(run),
            None => tokio::spawn(run),
        };
        codingagent_testkit::wait_until_serving(addr).await;
        Self { addr, config, shutdown, handle, database, runtime }
    }

    /// Another replica on the same database, with `configure`d settings.
    pub(crate) async fn replica(&self, configure: impl FnOnce(&mut Config)) -> Self {
        let mut config = self.config.clone();
        configure(&mut config);
        Self::start_on(None, config, None).await
    }

    /// A replica whose every task (workers, sandboxes) dies at once with [`Self::crash`],
    /// like a process killed with SIGKILL: no shutdown, no lease released. The benchmark
    /// uses it; the test kills a real process.
    #[allow(dead_code)]
    pub(crate) async fn doomed_replica(&self, configure: impl FnOnce(&mut Config)) -> Self {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let mut config = self.config.clone();
        configure(&mut config);
        Self::start_on(Some(runtime), config, None).await
    }

    #[allow(dead_code)]
    pub(crate) fn crash(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    pub(crate) async fn client_for(&self, caller: Caller) -> Client {
        OrchestrationServiceClient::new(
            codingagent_testkit::connect_as(self.addr, &self.config.identity, &caller).await,
        )
    }

    pub(crate) async fn user(&self, name: &str) -> Client {
        self.client_for(Caller::user(name)).await
    }

    pub(crate) async fn operator(&self) -> Client {
        self.client_for(Caller::user("ops").with_roles([OPERATOR_ROLE])).await
    }

    /// The service's Prometheus exposition.
    pub(crate) async fn metrics(&self) -> String {
        codingagent_testkit::metrics(self.addr).await
    }

    pub(crate) async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        } else {
            let _ = (&mut self.handle).await;
        }
        let _ = std::fs::remove_dir_all(&self.config.worker.workspace_root);
        if let Some(database) = self.database.take() {
            database.drop_database().await.unwrap();
        }
    }
}

/// A CreateTask request against the local repository at `path`.
pub(crate) fn task_request(path: &Path, text: &str, strategy: Strategy) -> pb::CreateTaskRequest {
    pb::CreateTaskRequest {
        text: text.into(),
        repository: Some(pb::Repository {
            location: Some(pb::repository::Location::LocalPath(path.to_string_lossy().into_owned())),
            base_branch: String::new(),
        }),
        strategy: strategy as i32,
        ..Default::default()
    }
}

pub(crate) async fn create(client: &mut Client, request: pb::CreateTaskRequest) -> pb::Task {
    client.create_task(request).await.unwrap().into_inner().task.unwrap()
}

/// Polls GetTask until the task is in one of `states` (panics after `timeout` with the log).
pub(crate) async fn wait_for(
    client: &mut Client,
    id: &str,
    states: &[pb::TaskState],
    timeout: Duration,
) -> pb::Task {
    let deadline = Instant::now() + timeout;
    loop {
        let task = client
            .get_task(pb::GetTaskRequest { task_id: id.into() })
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        if states.iter().any(|s| *s as i32 == task.state) {
            return task;
        }
        if Instant::now() > deadline {
            let log = log_text(client, id).await;
            panic!("task {id} is {:?}, not {states:?}, after {timeout:?}; log:\n{log}", task.state());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The whole stored log as text, one line per line.
pub(crate) async fn log_text(client: &mut Client, id: &str) -> String {
    lines(client, id, 0)
        .await
        .iter()
        .map(|l| format!("{:>4} {}", l.seq, l.message))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The stored lines after `after_seq` (a replay-only stream).
pub(crate) async fn lines(client: &mut Client, id: &str, after_seq: i64) -> Vec<pb::LogLine> {
    use pb::stream_task_logs_response::Item;
    let request =
        pb::StreamTaskLogsRequest { task_id: id.into(), after_seq, replay_only: true, ..Default::default() };
    let mut stream = client.stream_task_logs(request).await.unwrap().into_inner();
    let mut lines = Vec::new();
    while let Some(item) = stream.message().await.unwrap() {
        if let Some(Item::Line(line)) = item.item {
            lines.push(line);
        }
    }
    lines
}
