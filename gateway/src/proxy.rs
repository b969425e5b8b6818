//! One gRPC or grpc-web call through the gateway, in the order the checks cost: contract
//! lookup (unknown paths end here), identity, rate limit, stream slot, the bounded request
//! body, the route and split, then attempts on the pool's endpoints with deadline, breaker
//! and — for methods the contract marks idempotent — retries.

use crate::callbody::{CallBody, Cut, Record, status_code};
use crate::contracts::Method;
use crate::grpcweb::{self, Protocol, WebBody};
use crate::pool::PickError;
use crate::ratelimit::Decision;
use crate::state::Gateway;
use crate::{deadline, retry, split, trace};
use bytes::Bytes;
use codingagent_kernel::error::{self as status, StatusBuilder};
use codingagent_kernel::identity::{Caller, IDENTITY_HEADER};
use codingagent_kernel::telemetry::propagation;
use futures::FutureExt;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Version};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::body::Body;
use tonic::{Code, Status};
use tower::ServiceExt;
use tracing::Instrument;

/// Request headers never passed to a backend: hop-by-hop ones, the client's credentials
/// (the backend gets the gateway's internal token instead), framing the gateway rewrites,
/// and anything in the internal `x-codingagent-` namespace (a forged identity included).
const DROPPED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "host",
    "content-length",
    "content-type",
    "authorization",
    "cookie",
    "forwarded",
    "x-forwarded-for",
    "traceparent",
    "grpc-timeout",
    "grpc-encoding",
    "grpc-accept-encoding",
    "x-grpc-web",
    "x-user-agent",
];

/// Response headers of the backend not passed back.
const DROPPED_RESPONSE: &[&str] = &["connection", "keep-alive", "transfer-encoding", "content-length"];

/// An error answer in the client's protocol, counted under `route`.
pub(crate) fn refuse(
    gateway: &Gateway,
    protocol: Protocol,
    route: &str,
    started: Instant,
    status: Status,
) -> Response<Body> {
    gateway.metrics.request(route, "-", status.code(), started.elapsed().as_secs_f64());
    status_response(protocol, status)
}

/// A status as a trailers-only response.
pub(crate) fn status_response(protocol: Protocol, status: Status) -> Response<Body> {
    let mut response = status.into_http::<Body>();
    if protocol.is_web() {
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(protocol.response_content_type()));
    }
    response
}

/// Forwards one public call.
pub(crate) async fn call(
    gateway: Arc<Gateway>,
    request: Request<Incoming>,
    protocol: Protocol,
    peer: IpAddr,
) -> Response<Body> {
    let started = Instant::now();
    let path = request.uri().path().to_owned();
    let Some(method) = gateway.contracts.get(&path).cloned() else {
        let status =
            StatusBuilder::new(Code::Unimplemented, "UNKNOWN_METHOD", format!("no public method {path}"))
                .build();
        return refuse(&gateway, protocol, "unknown", started, status);
    };
    let span = tracing::info_span!("gateway", otel.name = %path, otel.kind = "server", caller = tracing::field::Empty);
    propagation::set_parent(&span, propagation::extract_http(request.headers()));
    let call = Call { gateway, method, protocol, peer, started };
    call.run(request).instrument(span).await
}

struct Call {
    gateway: Arc<Gateway>,
    method: Arc<Method>,
    protocol: Protocol,
    peer: IpAddr,
    started: Instant,
}

impl Call {
    fn refuse(&self, status: Status) -> Response<Body> {
        refuse(&self.gateway, self.protocol, &self.method.path, self.started, status)
    }

    async fn run(self, request: Request<Incoming>) -> Response<Body> {
        let gateway = self.gateway.clone();
        if self.method.client_streaming {
            return self.refuse(
                StatusBuilder::new(
                    Code::Unimplemented,
                    "CLIENT_STREAMING",
                    "the gateway serves unary and server-streaming methods only",
                )
                .build(),
            );
        }
        let caller = if gateway.is_public(&self.method.path) {
            None
        } else {
            match gateway.auth.authenticate(request.headers().get(AUTHORIZATION)).await {
                Ok(caller) => Some(caller),
                Err(error) => {
                    tracing::debug!(%error, "unauthenticated");
                    gateway.metrics.auth_refused(error.label());
                    return self.refuse(status::unauthenticated("a valid bearer token is required"));
                }
            }
        };
        if let Some(caller) = &caller {
            tracing::Span::current().record("caller", caller.subject.as_str());
        }
        let user = caller.as_ref().and_then(Caller::user_id);
        if let Decision::Limited { group, retry_after } =
            gateway.limiter.check(&self.method.path, user, self.peer).await
        {
            let name = gateway.limiter.group_name(group);
            return self.refuse(status::resource_exhausted(
                "RATE_LIMITED",
                format!("too many calls to {name} methods; retry later"),
                Some(retry_after.max(Duration::from_millis(1))),
            ));
        }
        let principal = caller.as_ref().map_or_else(|| format!("ip:{}", self.peer), Caller::principal_key);
        let slot = if self.method.server_streaming {
            match gateway.streams.acquire(principal.clone()) {
                Some(slot) => Some(slot),
                None => {
                    return self.refuse(status::resource_exhausted(
                        "TOO_MANY_STREAMS",
                        format!(
                            "at most {} streams may be open at once per caller",
                            gateway.streams.per_caller()
                        ),
                        Some(Duration::from_secs(5)),
                    ));
                }
            }
        } else {
            None
        };
        let requested = match request.headers().get("grpc-timeout") {
            None => None,
            Some(value) => match value.to_str().ok().and_then(deadline::parse) {
                Some(timeout) => Some(timeout),
                None => {
                    return self.refuse(status::invalid_argument([status::FieldViolation::new(
                        "grpc-timeout",
                        "is not a valid gRPC timeout (digits and one of H M S m u n)",
                    )]));
                }
            },
        };
        let (parts, body) = request.into_parts();
        let message = match self.read_body(body).await {
            Ok(message) => message,
            Err(status) => return self.refuse(status),
        };
        let routes = gateway.routes();
        let Some(route) = routes.get(&*self.method.package) else {
            return self.refuse(
                StatusBuilder::new(
                    Code::Unimplemented,
                    "NOT_SERVED",
                    format!("{} is not served by this deployment", self.method.package),
                )
                .build(),
            );
        };
        let (target, alternate) = split::target(route, &self.method.package, &principal);
        if route.alternate.is_some() {
            gateway.metrics.split(&self.method.package, if alternate { "alternate" } else { "primary" });
        }
        let Some(pool) = gateway.pools.get(target).cloned() else {
            return self.refuse(status::internal(&format!("route names unknown pool {target}")));
        };
        let r = &gateway.config.resilience;
        let timeout = deadline::effective(
            requested,
            self.method.server_streaming,
            Duration::from_millis(r.default_deadline_ms),
            Duration::from_millis(r.max_deadline_ms),
        );
        let deadline_at = timeout.map(|t| self.started + t);
        let headers = self.backend_headers(&parts.headers, caller.as_ref());
        let uri =
            parts.uri.path_and_query().map_or_else(|| self.method.path.to_string(), ToString::to_string);

        gateway.budget.deposit();
        let mut attempt = 0;
        let mut avoid = None;
        loop {
            attempt += 1;
            let lease = match pool.pick(avoid.as_ref(), !self.method.server_streaming) {
                Ok(lease) => lease,
                Err(PickError::Unavailable) => {
                    return self.refuse(status::unavailable(
                        "BACKEND_UNAVAILABLE",
                        format!("no healthy endpoint serves {} now", self.method.package),
                        Duration::from_secs(1),
                    ));
                }
                Err(PickError::Saturated) => {
                    gateway.metrics.shed(&self.method.path, &pool.name);
                    return self.refuse(status::unavailable(
                        "OVERLOADED",
                        format!("{} is at capacity; retry shortly", self.method.package),
                        Duration::from_millis(200),
                    ));
                }
            };
            let remaining = deadline_at.map(|at| at.saturating_duration_since(Instant::now()));
            if remaining == Some(Duration::ZERO) {
                return self.refuse(Status::deadline_exceeded(
                    "the call's deadline passed before a backend answered",
                ));
            }
            let mut outgoing = Request::new(Body::new(Full::new(message.clone())));
            *outgoing.method_mut() = http::Method::POST;
            *outgoing.version_mut() = Version::HTTP_2;
            *outgoing.uri_mut() = match uri.parse() {
                Ok(uri) => uri,
                Err(_) => {
                    return self.refuse(Status::invalid_argument("the request path is not a valid URI"));
                }
            };
            *outgoing.headers_mut() = headers.clone();
            if let Some(remaining) = remaining
                && let Ok(value) = HeaderValue::from_str(&deadline::format(remaining))
            {
                outgoing.headers_mut().insert("grpc-timeout", value);
            }
            let sent = lease.endpoint.channel.clone().oneshot(outgoing);
            let result = match remaining {
                Some(remaining) => match tokio::time::timeout(remaining, sent).await {
                    Ok(result) => result,
                    Err(_) => {
                        return self.refuse(Status::deadline_exceeded(
                            "the backend did not answer within the deadline",
                        ));
                    }
                },
                None => sent.await,
            };
            let failure = match result {
                Ok(response) => {
                    let head_code = status_code(response.headers());
                    if head_code != Some(Code::Unavailable) {
                        pool.record(&lease.endpoint, true);
                        return self.respond(response, head_code, &pool.name, lease, slot);
                    }
                    pool.record(&lease.endpoint, false);
                    Err(response)
                }
                Err(error) => {
                    tracing::debug!(endpoint = %lease.endpoint.url, %error, "backend call failed");
                    pool.record(&lease.endpoint, false);
                    Ok(error)
                }
            };
            let retry = self.method.idempotent
                && attempt < r.retry_max_attempts
                && deadline_at.is_none_or(|at| at > Instant::now())
                && gateway.budget.withdraw();
            if !retry {
                return match failure {
                    Err(response) => self.respond(response, Some(Code::Unavailable), &pool.name, lease, slot),
                    Ok(_) => self.refuse(status::unavailable(
                        "BACKEND_UNAVAILABLE",
                        format!("{} could not be reached", self.method.package),
                        Duration::from_secs(1),
                    )),
                };
            }
            gateway.metrics.retry(&self.method.path, &pool.name);
            avoid = Some(lease.endpoint.clone());
            drop(lease);
            tokio::time::sleep(retry::backoff(Duration::from_millis(r.retry_backoff_ms), attempt)).await;
        }
    }

    /// The whole request message, checked: at most `max_message_bytes`, arrived within
    /// `request_body_timeout_ms`, exactly one frame.
    async fn read_body(&self, body: Incoming) -> Result<Bytes, Status> {
        let server = &self.gateway.config.server;
        let max = server.max_message_bytes;
        let framed = max + 5;
        let raw_limit = if self.protocol == Protocol::WebText { framed / 3 * 4 + 8 } else { framed };
        let timeout = Duration::from_millis(server.request_body_timeout_ms);
        let collected = match tokio::time::timeout(timeout, Limited::new(body, raw_limit).collect()).await {
            Err(_) => return Err(Status::deadline_exceeded("the request body did not arrive in time")),
            Ok(Err(error)) if error.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                return Err(status::resource_exhausted(
                    "MESSAGE_TOO_LARGE",
                    format!("request message is larger than the {max} bytes the gateway accepts"),
                    None,
                ));
            }
            Ok(Err(_)) => return Err(Status::cancelled("the client stopped sending the request")),
            Ok(Ok(collected)) => collected.to_bytes(),
        };
        let bytes = if self.protocol == Protocol::WebText {
            Bytes::from(grpcweb::decode_text(&collected).map_err(|e| bad_body(&e))?)
        } else {
            collected
        };
        match grpcweb::single_message(&bytes, max) {
            Ok(()) => Ok(bytes),
            Err(grpcweb::FrameError::TooLarge(_)) => Err(status::resource_exhausted(
                "MESSAGE_TOO_LARGE",
                format!("request message is larger than the {max} bytes the gateway accepts"),
                None,
            )),
            Err(error) => Err(bad_body(&error)),
        }
    }

    fn backend_headers(&self, incoming: &HeaderMap, caller: Option<&Caller>) -> HeaderMap {
        let mut headers = HeaderMap::with_capacity(incoming.len() + 4);
        for (name, value) in incoming {
            let name_str = name.as_str();
            if DROPPED.contains(&name_str) || name_str.starts_with("x-codingagent-") {
                continue;
            }
            headers.append(name.clone(), value.clone());
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert("te", HeaderValue::from_static("trailers"));
        if let Ok(value) = HeaderValue::from_str(&self.peer.to_string()) {
            headers.insert("x-forwarded-for", value);
        }
        let incoming_trace = incoming.get("traceparent").and_then(|v| v.to_str().ok());
        if let Ok(value) = HeaderValue::from_str(&trace::outgoing(&tracing::Span::current(), incoming_trace))
        {
            headers.insert("traceparent", value);
        }
        if let Some(caller) = caller {
            // Minted per call (~2 µs), valid for minutes: a leaked one is worth little.
            match self.gateway.minter.mint(caller).map(HeaderValue::try_from) {
                Ok(Ok(token)) => {
                    headers.insert(HeaderName::from_static(IDENTITY_HEADER), token);
                }
                _ => tracing::error!("cannot mint an internal identity token"),
            }
        }
        headers
    }

    fn respond(
        &self,
        response: Response<Body>,
        head_code: Option<Code>,
        backend: &str,
        lease: crate::pool::Lease,
        slot: Option<codingagent_kernel::server::StreamSlot>,
    ) -> Response<Body> {
        let gateway = &self.gateway;
        let (mut parts, body) = response.into_parts();
        for name in DROPPED_RESPONSE {
            parts.headers.remove(*name);
        }
        if self.protocol.is_web() {
            parts
                .headers
                .insert(CONTENT_TYPE, HeaderValue::from_static(self.protocol.response_content_type()));
            parts.headers.remove(CONTENT_LENGTH);
        }
        if gateway.config.debug_headers
            && let Ok(value) = HeaderValue::from_str(backend)
        {
            parts.headers.insert("x-codingagent-backend", value);
        }
        let record = Record {
            metrics: gateway.metrics.clone(),
            route: self.method.path.clone(),
            backend: backend.into(),
            started: self.started,
        };
        let cut: Option<Cut> = self.method.server_streaming.then(|| {
            let max = Duration::from_secs(gateway.config.resilience.max_stream_secs);
            let shutdown = gateway.shutdown.clone();
            async move {
                tokio::select! {
                    () = tokio::time::sleep(max) => "the stream reached the gateway's maximum duration",
                    () = shutdown.cancelled() => "the gateway is shutting down",
                }
            }
            .boxed()
        });
        let body = CallBody::new(body, record, head_code, Some(lease), slot, cut);
        let body = if self.protocol.is_web() {
            Body::new(WebBody::new(body, self.protocol == Protocol::WebText))
        } else {
            Body::new(body)
        };
        Response::from_parts(parts, body)
    }
}

fn bad_body(error: &grpcweb::FrameError) -> Status {
    status::invalid_argument([status::FieldViolation::new("body", error.to_string())])
}
