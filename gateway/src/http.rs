//! Plain-HTTP requests: probes (`/healthz`, `/readyz`), `/metrics` (for scrapers on
//! loopback or private networks only: the gateway faces the internet), development
//! sign-in, the configured pass-through routes (webhooks, attachments) and the dashboard.

use crate::config::HttpRoute;
use crate::pool::PickError;
use crate::ratelimit::Decision;
use crate::state::Gateway;
use crate::staticfiles::{plain, serve as serve_static};
use bytes::Bytes;
use codingagent_kernel::identity::IDENTITY_HEADER;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::body::Body;
use tower::ServiceExt;

/// Headers of a pass-through request not sent on (the identity is the gateway's to set).
const DROPPED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "host",
    "authorization",
    "cookie",
    "forwarded",
    "x-forwarded-for",
];

pub(crate) async fn handle(
    gateway: Arc<Gateway>,
    request: Request<Incoming>,
    peer: IpAddr,
) -> Response<Body> {
    let path = request.uri().path();
    match path {
        "/healthz" => return plain(StatusCode::OK, "ok"),
        "/readyz" => return readiness(&gateway),
        "/metrics" if is_internal(peer) => {
            let mut response = plain(StatusCode::OK, &gateway.registry.encode());
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            return response;
        }
        "/auth/dev/sign-in" if gateway.signer.is_some() => return sign_in(&gateway, request).await,
        _ => {}
    }
    if let Some(route) =
        gateway.config.http_routes.iter().find(|r| path.starts_with(r.prefix.as_str())).cloned()
    {
        return pass_through(&gateway, &route, request, peer).await;
    }
    match &gateway.config.static_dir {
        Some(dir) => serve_static(dir, &request).await,
        None => plain(StatusCode::NOT_FOUND, "not found"),
    }
}

/// Loopback and private addresses: where Prometheus scrapes from.
fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback() || v4.is_private())
        }
    }
}

fn readiness(gateway: &Gateway) -> Response<Body> {
    if gateway.shutdown.is_cancelled() {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    // Ready while running: one backend being down is a partial outage the gateway answers
    // (fast UNAVAILABLE), not a reason to take the whole edge out of the load balancer.
    let mut lines = String::from("ready\n");
    let mut names: Vec<&String> = gateway.pools.keys().collect();
    names.sort();
    for name in names {
        let usable = gateway.pools[name].is_usable();
        lines.push_str(&format!("{name} {}\n", if usable { "up" } else { "down" }));
    }
    plain(StatusCode::OK, &lines)
}

async fn sign_in(gateway: &Gateway, request: Request<Incoming>) -> Response<Body> {
    let Some(signer) = &gateway.signer else { return plain(StatusCode::NOT_FOUND, "not found") };
    if request.method() != Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "POST a JSON body {\"user\": \"name\"}");
    }
    let body =
        match tokio::time::timeout(Duration::from_secs(5), Limited::new(request.into_body(), 4096).collect())
            .await
        {
            Ok(Ok(body)) => body.to_bytes(),
            _ => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    "the body must be at most 4 KiB of JSON, sent promptly",
                );
            }
        };
    let parsed: Result<crate::auth::signin::SignInRequest, _> = serde_json::from_slice(&body);
    let outcome = parsed.map_err(|e| e.to_string()).and_then(|req| signer.sign_in(&req));
    match outcome.and_then(|res| serde_json::to_vec(&res).map_err(|e| e.to_string())) {
        Ok(json) => {
            let mut response = Response::new(Body::new(Full::new(Bytes::from(json))));
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response.headers_mut().insert("cache-control", HeaderValue::from_static("no-store"));
            response
        }
        Err(why) => plain(StatusCode::BAD_REQUEST, &why),
    }
}

async fn pass_through(
    gateway: &Gateway,
    route: &HttpRoute,
    request: Request<Incoming>,
    peer: IpAddr,
) -> Response<Body> {
    let caller = if route.public {
        None
    } else {
        match gateway.auth.authenticate(request.headers().get(AUTHORIZATION)).await {
            Ok(caller) => Some(caller),
            Err(error) => {
                gateway.metrics.auth_refused(error.label());
                let mut response = plain(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
                response.headers_mut().insert("www-authenticate", HeaderValue::from_static("Bearer"));
                return response;
            }
        }
    };
    let user = caller.as_ref().and_then(|c| c.user_id());
    if let Decision::Limited { retry_after, .. } = gateway.limiter.check(&route.prefix, user, peer).await {
        let mut response = plain(StatusCode::TOO_MANY_REQUESTS, "too many requests");
        if let Ok(value) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string()) {
            response.headers_mut().insert("retry-after", value);
        }
        return response;
    }
    let Some(pool) = gateway.pools.get(&route.backend) else {
        return plain(StatusCode::BAD_GATEWAY, "no backend");
    };
    let lease = match pool.pick(None, true) {
        Ok(lease) => lease,
        Err(PickError::Unavailable | PickError::Saturated) => {
            let mut response =
                plain(StatusCode::SERVICE_UNAVAILABLE, "the service is unavailable; retry shortly");
            response.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
            return response;
        }
    };
    let (parts, body) = request.into_parts();
    let deadline = Duration::from_millis(gateway.config.server.request_body_timeout_ms);
    let body = TimedBody {
        inner: Limited::new(body, route.max_body_bytes as usize),
        sleep: tokio::time::sleep(deadline),
    };
    let mut outgoing = Request::new(Body::new(body));
    *outgoing.method_mut() = parts.method;
    *outgoing.version_mut() = Version::HTTP_2;
    *outgoing.uri_mut() = parts
        .uri
        .path_and_query()
        .map_or("/".parse().unwrap_or_default(), |pq| pq.as_str().parse().unwrap_or_default());
    for (name, value) in &parts.headers {
        if DROPPED.contains(&name.as_str()) || name.as_str().starts_with("x-codingagent-") {
            continue;
        }
        outgoing.headers_mut().append(name.clone(), value.clone());
    }
    if let Ok(value) = HeaderValue::from_str(&peer.to_string()) {
        outgoing.headers_mut().insert("x-forwarded-for", value);
    }
    if let Some(caller) = &caller
        && let Ok(Ok(token)) = gateway.minter.mint(caller).map(HeaderValue::try_from)
    {
        outgoing.headers_mut().insert(HeaderName::from_static(IDENTITY_HEADER), token);
    }
    match lease.endpoint.channel.clone().oneshot(outgoing).await {
        Ok(response) => {
            pool.record(&lease.endpoint, true);
            let (mut parts, body) = response.into_parts();
            for name in ["connection", "keep-alive", "transfer-encoding"] {
                parts.headers.remove(name);
            }
            // The lease lives until the body is read, like a gRPC call's.
            let body = body.map_frame(move |frame| {
                let _held = &lease;
                frame
            });
            Response::from_parts(parts, Body::new(body))
        }
        Err(error) => {
            tracing::debug!(%error, "pass-through call failed");
            pool.record(&lease.endpoint, false);
            plain(StatusCode::BAD_GATEWAY, "the service could not be reached")
        }
    }
}

pin_project! {
    /// A request body that must arrive in full within a deadline (slow-loris).
    struct TimedBody<B> {
        #[pin]
        inner: B,
        #[pin]
        sleep: tokio::time::Sleep,
    }
}

impl<B> http_body::Body for TimedBody<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<tower::BoxError>,
{
    type Data = Bytes;
    type Error = tower::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.sleep.poll(cx).is_ready() {
            return Poll::Ready(Some(Err("the request body did not arrive in time".into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
