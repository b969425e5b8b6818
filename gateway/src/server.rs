//! The listener: one port for HTTP/1.1 and HTTP/2 (h2c, or TLS with ALPN when configured),
//! a cap on open connections, hyper's limits on heads and streams, CORS, and the dispatch
//! of each request to gRPC proxying, the gateway's own services, or plain HTTP.

use crate::grpcweb::Protocol;
use crate::local::Local;
use crate::proxy;
use crate::state::Gateway;
use codingagent_kernel::config::ServerTlsConfig;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Headers browsers must be allowed to send and to read for grpc-web.
const ALLOWED_HEADERS: [&str; 7] = [
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "authorization",
    "grpc-timeout",
    "traceparent",
    "tracestate",
];
const EXPOSED_HEADERS: [&str; 3] = ["grpc-status", "grpc-message", "grpc-status-details-bin"];

/// Time a TLS client has to finish its handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Dispatches one request.
async fn route(
    gateway: Arc<Gateway>,
    local: Local,
    request: Request<Incoming>,
    peer: IpAddr,
) -> Response<Body> {
    let content_type = request.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let protocol = match Protocol::of(content_type) {
        None => return crate::http::handle(gateway, request, peer).await,
        Some(Err(())) => {
            return crate::staticfiles::plain(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "only the protobuf codec is served (application/grpc, application/grpc-web[-text][+proto])",
            );
        }
        Some(Ok(protocol)) => protocol,
    };
    if protocol == Protocol::Grpc && request.version() != Version::HTTP_2 {
        // Native gRPC needs HTTP/2 trailers; an HTTP/1.1 client gets a plain answer it can
        // read rather than a status it would have to find in trailers it cannot receive.
        let mut response = crate::staticfiles::plain(
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            "native gRPC needs HTTP/2; browsers use grpc-web (application/grpc-web)",
        );
        response.headers_mut().insert("grpc-status", HeaderValue::from_static("14"));
        return response;
    }
    if request.method() != http::Method::POST {
        return crate::staticfiles::plain(StatusCode::METHOD_NOT_ALLOWED, "gRPC calls are POST requests");
    }
    if Local::serves(request.uri().path()) {
        return local.call(request, protocol).await;
    }
    proxy::call(gateway, request, protocol, peer).await
}

/// Serves connections from `listener` until `stop_accepting`; returns when every connection
/// has closed or `grace` has passed after that.
pub(crate) async fn run(
    gateway: Arc<Gateway>,
    local: Local,
    listener: TcpListener,
    stop_accepting: CancellationToken,
    grace: Duration,
) -> anyhow::Result<()> {
    let config = &gateway.config;
    let tls = config.server.tls.as_ref().map(acceptor).transpose()?;
    let connections = Arc::new(Semaphore::new(config.limits.max_connections));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(config.limits.header_read_timeout_ms))
        .max_buf_size(config.limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(config.server.max_streams_per_connection)
        .max_header_list_size(config.limits.max_header_bytes as u32)
        .keep_alive_interval(Some(Duration::from_secs(config.server.keepalive_interval_secs)))
        .keep_alive_timeout(Duration::from_secs(config.server.keepalive_timeout_secs))
        .max_pending_accept_reset_streams(Some(50))
        .max_local_error_reset_streams(Some(256));
    let builder = Arc::new(builder);
    let cors = cors(&config.cors.allowed_origins);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();

    loop {
        let (stream, peer) = tokio::select! {
            () = stop_accepting.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            gateway.metrics.connection_refused();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let peer_ip = canonical(peer);
        let gateway_metrics = gateway.metrics.clone();
        let (gateway, local, cors, builder, tls) =
            (gateway.clone(), local.clone(), cors.clone(), builder.clone(), tls.clone());
        let service = ServiceBuilder::new().layer(cors).service_fn(move |request: Request<Incoming>| {
            let (gateway, local) = (gateway.clone(), local.clone());
            async move { Ok::<_, std::convert::Infallible>(route(gateway, local, request, peer_ip).await) }
        });
        let service = hyper_util::service::TowerToHyperService::new(service);
        let watcher = graceful.watcher();
        let metrics = gateway_metrics.clone();
        metrics.connection_opened();
        tokio::spawn(async move {
            let _permit = permit;
            let _open = OpenConnection(metrics);
            let result = match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            watcher
                                .watch(builder.serve_connection(TokioIo::new(stream), service).into_owned())
                                .await
                        }
                        _ => return,
                    }
                }
                None => {
                    watcher.watch(builder.serve_connection(TokioIo::new(stream), service).into_owned()).await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "connections still open after the grace period; closing them"
        );
    }
    Ok(())
}

/// Counts a connection as open for as long as its task lives.
struct OpenConnection(crate::metrics::GatewayMetrics);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connection_closed();
    }
}

/// IPv4 clients on a dual-stack socket arrive as `::ffff:a.b.c.d`; limits and logs use the
/// IPv4 form so one client has one key.
fn canonical(peer: SocketAddr) -> IpAddr {
    match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([http::Method::POST, http::Method::GET, http::Method::OPTIONS])
        .allow_headers(ALLOWED_HEADERS.map(http::HeaderName::from_static))
        .expose_headers(EXPOSED_HEADERS.map(http::HeaderName::from_static))
        .max_age(Duration::from_secs(600))
}

/// The TLS acceptor of `[server.tls]`, offering HTTP/2 and HTTP/1.1 by ALPN.
fn acceptor(tls: &ServerTlsConfig) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&tls.cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("{}: {e}", tls.cert_file.display()))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key_file)
        .map_err(|e| anyhow::anyhow!("{}: {e}", tls.key_file.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?;
    let mut config = match &tls.client_ca_file {
        Some(ca) => {
            let mut roots = tokio_rustls::rustls::RootCertStore::empty();
            for cert in
                CertificateDer::pem_file_iter(ca).map_err(|e| anyhow::anyhow!("{}: {e}", ca.display()))?
            {
                roots.add(cert.map_err(|e| anyhow::anyhow!("{}: {e}", ca.display()))?)?;
            }
            let verifier =
                tokio_rustls::rustls::server::WebPkiClientVerifier::builder(Arc::new(roots)).build()?;
            builder.with_client_cert_verifier(verifier).with_single_cert(certs, key)?
        }
        None => builder.with_no_client_auth().with_single_cert(certs, key)?,
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
