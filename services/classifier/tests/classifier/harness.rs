//! One classifier service per test, with its own database and consumer group.

use codingagent_classifier::Config;
use codingagent_kernel::CancellationToken;
use codingagent_kernel::identity::{Caller, OPERATOR_ROLE, StaticToken};
use codingagent_proto::codingagent::classifier::v1 as pb;
use codingagent_proto::codingagent::classifier::v1::classifier_service_client::ClassifierServiceClient;
use codingagent_testkit::{TestDatabase, unique_name};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub(crate) type Client = ClassifierServiceClient<InterceptedService<Channel, StaticToken>>;

pub(crate) struct Classifier {
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) config: Config,
    pub(crate) pool: sqlx::PgPool,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    database: Option<TestDatabase>,
}

/// A configuration for one test: its own database and consumer group, no seeding unless
/// the test asks, and no LLM stage.
pub(crate) async fn config() -> (Config, TestDatabase) {
    let database = TestDatabase::create().await.unwrap();
    let shared = codingagent_testkit::sections(&database);
    let mut config = Config {
        server: shared.server,
        database: shared.database,
        redis: shared.redis,
        kafka: shared.kafka,
        ..Config::default()
    };
    config.task_outcomes_group = unique_name("classifier-test");
    config.training.seed_on_start = false;
    config.model_poll_ms = 200;
    (config, database)
}

impl Classifier {
    pub(crate) async fn start(config: Config, database: TestDatabase) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(codingagent_classifier::serve(config.clone(), listener, shutdown.clone()));
        let pool = database.pool().await.unwrap();
        let classifier = Self { addr, config, pool, shutdown, handle, database: Some(database) };
        // The port accepts connections before migrations and seeding are done; wait until
        // the service answers.
        let mut client = classifier.user("probe").await;
        for _ in 0..600 {
            if client.get_training_stats(pb::GetTrainingStatsRequest {}).await.is_ok() {
                return classifier;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("classifier did not answer");
    }

    /// The default test setup.
    pub(crate) async fn plain() -> Self {
        let (config, database) = config().await;
        Self::start(config, database).await
    }

    pub(crate) async fn client_for(&self, caller: Caller) -> Client {
        ClassifierServiceClient::new(
            codingagent_testkit::connect_as(self.addr, &self.config.identity, &caller).await,
        )
    }

    pub(crate) async fn user(&self, name: &str) -> Client {
        self.client_for(Caller::user(name)).await
    }

    pub(crate) async fn operator(&self) -> Client {
        self.client_for(Caller::user("ops").with_roles([OPERATOR_ROLE])).await
    }

    pub(crate) async fn stop(mut self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
        self.pool.close().await;
        if let Some(database) = self.database.take() {
            database.drop_database().await.unwrap();
        }
    }

    /// Current samples by source (contract numbers).
    pub(crate) async fn samples(&self, source: i16) -> Vec<(String, i16, i16)> {
        sqlx::query_as(
            "SELECT text, task_type, complexity FROM classifier.samples WHERE source = $1 AND superseded_at IS NULL ORDER BY id",
        )
        .bind(source)
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }
}

/// The field violations of an INVALID_ARGUMENT status.
pub(crate) fn violations(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}
