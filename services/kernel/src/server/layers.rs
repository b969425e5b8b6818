//! Small tower layers of the server skeleton: the per-request trace span and the translation
//! of tonic's "message too large" error into the status gRPC specifies for it.

use crate::telemetry::propagation;
use futures::future::{FutureExt, Map};
use http::{HeaderValue, Request, Response};
use std::task::{Context, Poll};
use tonic::body::Body;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::instrument::Instrumented;

/// Opens a span per request, child of the caller's W3C trace context, named for the service
/// (several share one process in `codingagent all`).
#[derive(Debug, Clone)]
pub struct TraceLayer {
    service: std::sync::Arc<str>,
}

impl TraceLayer {
    pub fn new(service: &str) -> Self {
        Self { service: service.into() }
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Trace { inner, service: self.service.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct Trace<S> {
    inner: S,
    service: std::sync::Arc<str>,
}

impl<S, B> Service<Request<B>> for Trace<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let span = tracing::info_span!(
            "request",
            service = %self.service,
            otel.name = %request.uri().path(),
            otel.kind = "server"
        );
        propagation::set_parent(&span, propagation::extract_http(request.headers()));
        self.inner.call(request).instrument(span)
    }
}

/// tonic reports an oversized request as `OUT_OF_RANGE`; the gRPC specification (and every
/// client's retry logic) expects `RESOURCE_EXHAUSTED`, so this layer rewrites it.
#[derive(Debug, Clone, Copy, Default)]
pub struct MessageLimitLayer;

impl<S> Layer<S> for MessageLimitLayer {
    type Service = MessageLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MessageLimit { inner }
    }
}

#[derive(Debug, Clone)]
pub struct MessageLimit<S> {
    inner: S,
}

type Rewrite<E> = fn(Result<Response<Body>, E>) -> Result<Response<Body>, E>;

impl<S> Service<Request<Body>> for MessageLimit<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Map<S::Future, Rewrite<S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        self.inner.call(request).map(|result| result.map(rewrite_too_large))
    }
}

fn rewrite_too_large(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers_mut();
    let out_of_range = headers.get("grpc-status").is_some_and(|v| v == "11");
    let too_large = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| m.contains("decoded%20message%20length%20too%20large"));
    if out_of_range && too_large {
        let status = crate::error::StatusBuilder::new(
            tonic::Code::ResourceExhausted,
            "MESSAGE_TOO_LARGE",
            "request message is larger than the server accepts",
        )
        .build();
        headers.insert("grpc-status", HeaderValue::from(tonic::Code::ResourceExhausted as i32));
        headers.remove("grpc-message");
        headers.remove("grpc-status-details-bin");
        // Re-adding through `into_http` keeps the encoding of message and details correct.
        let replacement = status.into_http::<Body>();
        for name in ["grpc-message", "grpc-status-details-bin"] {
            if let Some(value) = replacement.headers().get(name) {
                headers.insert(name, value.clone());
            }
        }
    }
    response
}
