//! One chat service per test (or two sharing a database and Redis), with its own database.

use codingagent_chat::Config;
use codingagent_kernel::CancellationToken;
use codingagent_kernel::identity::{Caller, StaticToken, TokenMinter};
use codingagent_proto::codingagent::chat::v1 as pb;
use codingagent_proto::codingagent::chat::v1::chat_service_client::ChatServiceClient;
use codingagent_testkit::TestDatabase;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub(crate) type Client = ChatServiceClient<InterceptedService<Channel, StaticToken>>;

pub(crate) struct Chat {
    pub(crate) addr: std::net::SocketAddr,
    pub(crate) config: Config,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    database: Option<TestDatabase>,
}

pub(crate) async fn config(database: &TestDatabase) -> Config {
    let shared = codingagent_testkit::sections(database);
    let mut config = Config {
        server: shared.server,
        database: shared.database,
        redis: shared.redis,
        kafka: shared.kafka,
        ..Config::default()
    };
    config.attachments.local_dir =
        std::env::temp_dir().join(codingagent_testkit::unique_name("chat-attachments"));
    config.attachments.max_bytes = 64 * 1024;
    config.heartbeat_secs = 1;
    config.presence_ttl_secs = 3;
    config.typing_ttl_secs = 1;
    config
}

impl Chat {
    pub(crate) async fn start() -> Self {
        let database = TestDatabase::create().await.unwrap();
        let config = config(&database).await;
        Self::start_with(config, Some(database)).await
    }

    /// A service on `config`; `database` is dropped with it when given.
    pub(crate) async fn start_with(config: Config, database: Option<TestDatabase>) -> Self {
        Self::start_on(&tokio::runtime::Handle::current(), config, database).await
    }

    /// A service whose tasks run on `runtime`.
    async fn start_on(
        runtime: &tokio::runtime::Handle,
        config: Config,
        database: Option<TestDatabase>,
    ) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let (serving, stop) = (config.clone(), shutdown.clone());
        let handle = runtime.spawn(async move {
            codingagent_chat::serve(serving, tokio::net::TcpListener::from_std(listener)?, stop).await
        });
        let chat = Self { addr, config, shutdown, handle, database };
        // The port accepts connections before migrations are done and the dependencies
        // answer; health says when the service is ready.
        codingagent_testkit::wait_until_serving(chat.addr).await;
        chat
    }

    /// A second replica on the same database and Redis.
    pub(crate) async fn replica(&self) -> Self {
        Self::start_with(self.config.clone(), None).await
    }

    /// A second replica that can be killed like a process: see [`Doomed::crash`].
    pub(crate) async fn doomed_replica(&self) -> Doomed {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let chat = Self::start_on(runtime.handle(), self.config.clone(), None).await;
        Doomed { chat, runtime: Some(runtime) }
    }

    pub(crate) async fn client_for(&self, caller: Caller) -> Client {
        ChatServiceClient::new(
            codingagent_testkit::connect_as(self.addr, &self.config.identity, &caller).await,
        )
    }

    pub(crate) async fn user(&self, name: &str) -> Client {
        self.client_for(Caller::user(name)).await
    }

    pub(crate) async fn pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(self.config.database.url.expose()).await.unwrap()
    }

    pub(crate) fn token(&self, name: &str) -> String {
        TokenMinter::new(&self.config.identity).mint(&Caller::user(name)).unwrap()
    }

    /// The service's Prometheus exposition.
    pub(crate) async fn metrics(&self) -> String {
        codingagent_testkit::metrics(self.addr).await
    }

    pub(crate) async fn stop(mut self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
        if let Some(database) = self.database.take() {
            database.drop_database().await.unwrap();
            let _ = std::fs::remove_dir_all(&self.config.attachments.local_dir);
        }
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

pub(crate) async fn conversation(client: &mut Client, title: &str, members: &[&str]) -> pb::Conversation {
    let request = pb::CreateConversationRequest {
        title: title.into(),
        member_ids: members.iter().map(|m| (*m).to_owned()).collect(),
        request_id: String::new(),
    };
    client.create_conversation(request).await.unwrap().into_inner().conversation.unwrap()
}

pub(crate) async fn post(client: &mut Client, conversation: &str, text: &str) -> pb::Message {
    let request = pb::PostMessageRequest {
        conversation_id: conversation.into(),
        text: text.into(),
        ..Default::default()
    };
    client.post_message(request).await.unwrap().into_inner().message.unwrap()
}

/// A replica on a runtime of its own.
pub(crate) struct Doomed {
    pub(crate) chat: Chat,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Doomed {
    /// Ends the replica the way a killed process ends: its tasks are dropped where they stand
    /// and nothing they would do on the way out (closing streams, saying goodbye) runs.
    pub(crate) fn crash(self) {
        drop(self);
    }
}

impl Drop for Doomed {
    // A runtime may not be dropped inside another one, e.g. when an assertion fails first.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
