//! The gateway under test, in front of real services (chat with its own database) and, where
//! a test needs an endpoint to misbehave on purpose, a recording replica: a real tonic
//! server that reports SERVING, records every call's headers and answers each with a chosen
//! status. Tokens come from test key pairs (`keys/`), their JWKS from a local HTTP server.

use codingagent_gateway::Config;
use codingagent_kernel::CancellationToken;
use codingagent_kernel::config::{ConfigArgs, load_with_env};
use codingagent_testkit::TestDatabase;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(crate) const ISSUER: &str = "https://idp.test";
pub(crate) const AUDIENCE: &str = "codingagent";

pub(crate) fn key_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/gateway/keys").join(name)
}

/// The public JWK of a test key.
pub(crate) fn jwk(name: &str) -> serde_json::Value {
    let all: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(key_path("jwks.json")).unwrap()).unwrap();
    all[name].clone()
}

pub(crate) fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Standard claims for `user`, valid for ten minutes.
pub(crate) fn claims(user: &str) -> serde_json::Value {
    json!({ "iss": ISSUER, "aud": AUDIENCE, "sub": user, "iat": now(), "nbf": now(), "exp": now() + 600 })
}

/// A token with `claims`, signed by the test key `key` (its name is the `kid`).
pub(crate) fn sign(key: &str, claims: &serde_json::Value) -> String {
    let pem = std::fs::read(key_path(&format!("{key}.pem"))).unwrap();
    let (algorithm, encoding) = match key.split('-').next().unwrap() {
        "rsa" => (Algorithm::RS256, EncodingKey::from_rsa_pem(&pem).unwrap()),
        "ec" => (Algorithm::ES256, EncodingKey::from_ec_pem(&pem).unwrap()),
        _ => (Algorithm::EdDSA, EncodingKey::from_ed_pem(&pem).unwrap()),
    };
    let mut header = Header::new(algorithm);
    header.kid = Some(key.to_owned());
    jsonwebtoken::encode(&header, claims, &encoding).unwrap()
}

/// A user's token signed by the default key.
pub(crate) fn token(user: &str) -> String {
    sign("ed-a", &claims(user))
}

/// A JWKS endpoint whose key set a test can change (rotation).
pub(crate) struct Jwks {
    pub(crate) server: wiremock::MockServer,
}

impl Jwks {
    pub(crate) async fn start(keys: &[&str]) -> Self {
        let jwks = Self { server: wiremock::MockServer::start().await };
        jwks.publish(keys).await;
        jwks
    }

    pub(crate) async fn publish(&self, keys: &[&str]) {
        self.server.reset().await;
        let set = json!({ "keys": keys.iter().map(|k| jwk(k)).collect::<Vec<_>>() });
        wiremock::Mock::given(wiremock::matchers::method("GET"))
            .and(wiremock::matchers::path("/jwks"))
            .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(set))
            .mount(&self.server)
            .await;
    }

    pub(crate) fn url(&self) -> String {
        format!("{}/jwks", self.server.uri())
    }

    pub(crate) async fn fetches(&self) -> usize {
        self.server.received_requests().await.map_or(0, |r| r.len())
    }
}

/// A real chat service with its own database.
pub(crate) struct Chat {
    pub(crate) addr: SocketAddr,
    config: codingagent_chat::Config,
    shutdown: CancellationToken,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _database: TestDatabase,
}

impl Chat {
    pub(crate) async fn start() -> Self {
        let database = TestDatabase::create().await.unwrap();
        let shared = codingagent_testkit::sections(&database);
        let config = codingagent_chat::Config {
            server: shared.server,
            database: shared.database,
            redis: shared.redis,
            kafka: shared.kafka,
            heartbeat_secs: 1,
            ..codingagent_chat::Config::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut chat =
            Self { addr, config, shutdown: CancellationToken::new(), handle: None, _database: database };
        chat.serve(listener).await;
        chat
    }

    async fn serve(&mut self, listener: tokio::net::TcpListener) {
        self.shutdown = CancellationToken::new();
        let (config, stop) = (self.config.clone(), self.shutdown.clone());
        self.handle =
            Some(tokio::spawn(async move { codingagent_chat::serve(config, listener, stop).await }));
        codingagent_testkit::wait_until_serving(self.addr).await;
    }

    /// Stops the service; its port refuses connections until [`Self::restart`].
    pub(crate) async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            let _ = handle.await;
        }
    }

    /// Serves again on the same port.
    pub(crate) async fn restart(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener).await;
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// What a recording replica saw of one call.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) path: String,
    pub(crate) headers: http::HeaderMap,
}

/// A replica that reports SERVING and answers every call with `code` (OK carries an empty
/// message, which decodes as any response type's defaults), recording what it received.
pub(crate) struct Recorder {
    pub(crate) addr: SocketAddr,
    pub(crate) seen: Arc<Mutex<Vec<Seen>>>,
    shutdown: CancellationToken,
}

impl Recorder {
    pub(crate) async fn start(code: tonic::Code) -> Self {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let record = seen.clone();
        let fallback = move |request: http::Request<axum::body::Body>| {
            let record = record.clone();
            async move {
                record
                    .lock()
                    .unwrap()
                    .push(Seen { path: request.uri().path().into(), headers: request.headers().clone() });
                if code == tonic::Code::Ok {
                    let body = http_body_util::StreamBody::new(futures::stream::iter([
                        Ok::<_, std::convert::Infallible>(http_body::Frame::data(bytes::Bytes::from_static(
                            &[0, 0, 0, 0, 0],
                        ))),
                        Ok(http_body::Frame::trailers({
                            let mut trailers = http::HeaderMap::new();
                            trailers.insert("grpc-status", "0".parse().unwrap());
                            trailers
                        })),
                    ]));
                    let mut response = http::Response::new(axum::body::Body::new(body));
                    response.headers_mut().insert("content-type", "application/grpc".parse().unwrap());
                    response
                } else {
                    tonic::Status::new(code, "the recording replica says so").into_http::<axum::body::Body>()
                }
            }
        };
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
        let router = tonic::service::Routes::new(health).into_axum_router().fallback(fallback);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _reporter = reporter;
            tonic::transport::Server::builder()
                .add_routes(router.into())
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    stop.cancelled_owned(),
                )
                .await
        });
        Self { addr, seen, shutdown }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn calls(&self, path: &str) -> Vec<Seen> {
        self.seen.lock().unwrap().iter().filter(|s| s.path == path).cloned().collect()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A running gateway, its configuration file (edited by reload tests) and JWKS server.
pub(crate) struct Gateway {
    pub(crate) addr: SocketAddr,
    pub(crate) file: PathBuf,
    pub(crate) jwks: Jwks,
    shutdown: CancellationToken,
}

/// The TOML of a gateway in front of `backends` (`name = [urls]`) routing `services`
/// (`package = "backend"` lines or whole tables), plus `extra` sections.
pub(crate) fn toml(jwks_url: &str, backends: &[(&str, Vec<String>)], services: &str, extra: &str) -> String {
    let mut text = format!(
        r#"
reload_interval_ms = 100
debug_headers = true

[server]
listen_addr = "127.0.0.1:0"
shutdown_grace_secs = 2
request_body_timeout_ms = 2000
max_streams_per_caller = 4

[auth]
leeway_secs = 5
jwks_min_refresh_secs = 1

[[auth.issuers]]
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
jwks_url = "{jwks_url}"

[[auth.issuers.static_keys]]
kid = "static-ed"
algorithm = "EdDSA"
public_key_file = "{}"

[resilience]
breaker_failures = 2
breaker_open_ms = 500
retry_backoff_ms = 5
"#,
        key_path("ed-b.pub.pem").display()
    );
    for (name, urls) in backends {
        let urls: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
        text.push_str(&format!("\n[backends.{name}]\nendpoints = [{}]\n", urls.join(", ")));
    }
    text.push_str("\n[services]\n");
    text.push_str(services);
    text.push('\n');
    text.push_str(extra);
    text
}

impl Gateway {
    /// A gateway loaded from `text` (see [`toml`]), with rate limits off unless `text` sets them.
    pub(crate) async fn start(text: &str, jwks: Jwks) -> Self {
        let file = std::env::temp_dir().join(format!("{}.toml", codingagent_testkit::unique_name("gateway")));
        std::fs::write(&file, text).unwrap();
        let args = ConfigArgs { file: Some(file.clone()), ..ConfigArgs::default() };
        let config: Config = load_with_env(&args, Vec::new()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move { codingagent_gateway::serve(config, Some(args), listener, stop).await });
        codingagent_testkit::wait_until_serving(addr).await;
        Self { addr, file, jwks, shutdown }
    }

    pub(crate) async fn channel(&self) -> tonic::transport::Channel {
        codingagent_testkit::connect(self.addr).await
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Rewrites the configuration file and waits for a reload to be possible.
    pub(crate) async fn rewrite(&self, text: &str) {
        std::fs::write(&self.file, text).unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_file(&self.file);
    }
}

/// Adds `authorization: Bearer <token>` to a request.
pub(crate) fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// The `ErrorInfo` reason of a status.
pub(crate) fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status.get_details_error_info().map(|info| info.reason).unwrap_or_default()
}
