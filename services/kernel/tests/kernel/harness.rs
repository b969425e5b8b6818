//! A probe service served through the kernel's real server skeleton on port 0.

use codingagent_kernel::config::{IdentityConfig, ServerConfig};
use codingagent_kernel::identity::{Caller, StaticToken, TokenMinter, caller};
use codingagent_kernel::server::{Background, DependencyCheck, ServiceHost};
use codingagent_kernel::telemetry::metrics::Metrics;
use codingagent_kernel::{CancellationToken, error};
use codingagent_testkit::pb::probe_service_client::ProbeServiceClient;
use codingagent_testkit::pb::probe_service_server::{ProbeService, ProbeServiceServer};
use codingagent_testkit::pb::*;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

#[derive(Debug, Default)]
pub(crate) struct Probe;

#[tonic::async_trait]
impl ProbeService for Probe {
    async fn sleep(&self, request: Request<SleepRequest>) -> Result<Response<SleepResponse>, Status> {
        let request = request.into_inner();
        // Even a zero-length tokio sleep waits for the next 1 ms timer tick.
        if request.millis > 0 {
            tokio::time::sleep(Duration::from_millis(request.millis)).await;
        }
        Ok(Response::new(SleepResponse { payload: request.payload }))
    }

    type CountStream = Pin<Box<dyn Stream<Item = Result<CountResponse, Status>> + Send>>;

    async fn count(&self, request: Request<CountRequest>) -> Result<Response<Self::CountStream>, Status> {
        let CountRequest { count, interval_millis } = request.into_inner();
        Ok(Response::new(Box::pin(async_stream::stream! {
            for index in 0..count {
                tokio::time::sleep(Duration::from_millis(interval_millis)).await;
                yield Ok(CountResponse { index });
            }
        })))
    }

    async fn fail(&self, request: Request<FailRequest>) -> Result<Response<FailResponse>, Status> {
        Err(match request.into_inner().kind.as_str() {
            "invalid" => error::invalid_argument([
                error::FieldViolation::new("text", "must not be empty"),
                error::FieldViolation::new("page_size", "must not be negative"),
            ]),
            "not_found" => error::not_found("task", "t-1"),
            "exhausted" => error::resource_exhausted(
                "BUDGET_EXCEEDED",
                "monthly token budget used up",
                Some(Duration::from_secs(30)),
            ),
            _ => error::internal(&"database password is hunter2"),
        })
    }

    async fn who_am_i(&self, request: Request<WhoAmIRequest>) -> Result<Response<WhoAmIResponse>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(WhoAmIResponse {
            subject: caller.subject.clone(),
            kind: format!("{:?}", caller.kind),
            on_behalf_of: caller.on_behalf_of.clone().unwrap_or_default(),
        }))
    }
}

pub(crate) struct TestServer {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<Result<(), codingagent_kernel::server::ServeError>>,
    pub identity: IdentityConfig,
}

pub(crate) fn server_config() -> ServerConfig {
    ServerConfig {
        readiness_interval_ms: 50,
        shutdown_grace_secs: 5,
        shutdown_drain_delay_ms: 300,
        max_message_bytes: 64 * 1024,
        ..ServerConfig::default()
    }
}

impl TestServer {
    pub(crate) async fn start(config: ServerConfig, checks: Vec<DependencyCheck>) -> Self {
        Self::start_with(config, checks, Vec::new()).await
    }

    /// A server that also runs `background` tasks under supervision.
    pub(crate) async fn start_with(
        config: ServerConfig,
        checks: Vec<DependencyCheck>,
        background: Vec<Background>,
    ) -> Self {
        let identity = IdentityConfig::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let probe = ProbeServiceServer::new(Probe).max_decoding_message_size(config.max_message_bytes);
        let host = checks.into_iter().fold(
            ServiceHost::new("probe", &config, &identity, Metrics::new())
                .add_service(probe)
                .descriptor_set(codingagent_testkit::pb::FILE_DESCRIPTOR_SET),
            ServiceHost::check,
        );
        let host = background.into_iter().fold(host, ServiceHost::background);
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(host.serve(listener, shutdown.clone()));
        Self { addr, shutdown, handle, identity }
    }

    pub(crate) async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr)).expect("uri").connect().await.expect("connect")
    }

    /// The `/metrics` text.
    pub(crate) async fn metrics_text(&self) -> String {
        codingagent_testkit::metrics(self.addr).await
    }

    pub(crate) fn token_for(&self, user: &str) -> String {
        TokenMinter::new(&self.identity).mint(&Caller::user(user)).expect("mint")
    }

    /// A probe client whose calls carry `token` (or none).
    pub(crate) async fn client(
        &self,
        token: Option<String>,
    ) -> ProbeServiceClient<InterceptedService<Channel, StaticToken>> {
        ProbeServiceClient::with_interceptor(self.channel().await, StaticToken::new(token))
    }

    pub(crate) async fn client_as(
        &self,
        user: &str,
    ) -> ProbeServiceClient<InterceptedService<Channel, StaticToken>> {
        self.client(Some(self.token_for(user))).await
    }
}
