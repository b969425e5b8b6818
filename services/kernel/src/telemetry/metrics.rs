//! Prometheus metrics: one registry per process, RED metrics for every RPC, and a tower layer
//! that records them from the gRPC status each response ends with.
//!
//! Labels come only from the server's own [`MethodTable`]: the layer runs before
//! authentication, so a label taken from the request path would let anyone without a token
//! create a new, never-evicted series per made-up path.

use crate::server::MethodTable;
use pin_project_lite::pin_project;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Instant;
use tower::{Layer, Service};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    service: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    service: String,
    method: String,
    code: String,
}

#[derive(Debug)]
struct RpcMetrics {
    handled: Family<CodeLabels, Counter>,
    latency: Family<MethodLabels, Histogram>,
    in_flight: Family<MethodLabels, Gauge>,
}

/// The process's metrics registry. Services register their own metrics next to the RPC ones.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    rpc: Arc<RpcMetrics>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry whose series carry no service label (tests, tools).
    pub fn new() -> Self {
        Self::with_registry(Registry::with_prefix("codingagent"))
    }

    /// A service's registry: every series carries `service_name="<name>"` (OpenTelemetry's
    /// `service.name`; `service` already names the gRPC service), so the services of one
    /// `codingagent all` process stay apart in Prometheus.
    pub fn for_service(name: &str) -> Self {
        let labels = std::iter::once((
            std::borrow::Cow::Borrowed("service_name"),
            std::borrow::Cow::Owned(name.to_owned()),
        ));
        Self::with_registry(Registry::with_prefix_and_labels("codingagent", labels))
    }

    fn with_registry(mut registry: Registry) -> Self {
        let rpc = RpcMetrics {
            handled: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new([
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0,
                ])
            }),
            in_flight: Family::default(),
        };
        registry.register("grpc_server_handled", "RPCs completed, by status code", rpc.handled.clone());
        registry.register(
            "grpc_server_handling_seconds",
            "Time from request to the final status",
            rpc.latency.clone(),
        );
        registry.register("grpc_server_in_flight", "RPCs being handled now", rpc.in_flight.clone());
        Self { registry: Arc::new(Mutex::new(registry)), rpc: Arc::new(rpc) }
    }

    /// Adds a service-specific metric; `name` gets the `codingagent_` prefix.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry.lock().unwrap_or_else(|e| e.into_inner()).register(name, help, metric);
    }

    /// Adds a metric whose series carry `label` (one per consumer, say), so several metrics of
    /// the same name can share the registry.
    pub fn register_labelled(&self, name: &str, help: &str, label: (&str, &str), metric: impl Metric) {
        let label =
            (std::borrow::Cow::Owned(label.0.to_owned()), std::borrow::Cow::Owned(label.1.to_owned()));
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sub_registry_with_label(label)
            .register(name, help, metric);
    }

    /// The OpenMetrics text exposition served at `/metrics`.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }

    /// The layer for a server serving `methods`; anything else is counted as `unknown`.
    pub fn layer(&self, methods: Arc<MethodTable>) -> MetricsLayer {
        MetricsLayer { rpc: self.rpc.clone(), methods }
    }
}

/// Records RED metrics for every request passing through.
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    rpc: Arc<RpcMetrics>,
    methods: Arc<MethodTable>,
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService { inner, rpc: self.rpc.clone(), methods: self.methods.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct MetricsService<S> {
    inner: S,
    rpc: Arc<RpcMetrics>,
    methods: Arc<MethodTable>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for MetricsService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<MetricsBody<ResBody>>;
    type Error = S::Error;
    type Future = MetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let labels = method_labels(&self.methods, request.uri().path());
        self.rpc.in_flight.get_or_create(&labels).inc();
        let recorder =
            Recorder { rpc: self.rpc.clone(), labels, start: Instant::now(), http_code: "Ok".into() };
        MetricsFuture { inner: self.inner.call(request), recorder: Some(recorder) }
    }
}

/// A served method → (`codingagent.chat.v1.ChatService`, `PostMessage`); any other
/// gRPC-looking path is `unknown`, and plain HTTP routes (whose paths carry ids) are grouped
/// as `http`, so the label space is fixed by the server, never by its callers.
fn method_labels(methods: &MethodTable, path: &str) -> MethodLabels {
    if let Some(method) = methods.get(path) {
        return MethodLabels { service: method.service.clone(), method: method.name.clone() };
    }
    match path.trim_start_matches('/').split_once('/') {
        Some((service, method)) if service.contains('.') && !method.contains('/') => {
            MethodLabels { service: "unknown".into(), method: "unknown".into() }
        }
        _ => MethodLabels { service: "http".into(), method: "other".into() },
    }
}

#[derive(Debug)]
struct Recorder {
    rpc: Arc<RpcMetrics>,
    labels: MethodLabels,
    start: Instant,
    /// What a response that ends without gRPC trailers (plain HTTP) is counted as.
    http_code: String,
}

impl Recorder {
    fn finish(self, code: &str) {
        let MethodLabels { service, method } = self.labels.clone();
        self.rpc.latency.get_or_create(&self.labels).observe(self.start.elapsed().as_secs_f64());
        self.rpc.in_flight.get_or_create(&self.labels).dec();
        self.rpc.handled.get_or_create(&CodeLabels { service, method, code: code.to_owned() }).inc();
    }
}

fn code_name(value: &http::HeaderValue) -> String {
    let code = value.to_str().ok().and_then(|v| v.parse::<i32>().ok()).unwrap_or(2);
    format!("{:?}", tonic::Code::from_i32(code))
}

pin_project! {
    /// Resolves to the response and hands the recorder to its body.
    #[derive(Debug)]
    pub struct MetricsFuture<F> {
        #[pin]
        inner: F,
        recorder: Option<Recorder>,
    }
}

impl<F, B, E> Future for MetricsFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<MetricsBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let Some(recorder) = this.recorder.take() else {
            return Poll::Ready(result.map(|r| r.map(|inner| MetricsBody { inner, recorder: None })));
        };
        Poll::Ready(match result {
            Ok(response) => {
                // A status in the headers ("trailers-only") means the call ended right here.
                let recorder = match response.headers().get("grpc-status") {
                    Some(code) => {
                        recorder.finish(&code_name(code));
                        None
                    }
                    None => {
                        let status = response.status();
                        let http_code = if status.is_success() || status.is_redirection() {
                            "Ok".to_owned()
                        } else {
                            format!("Http{}", status.as_u16())
                        };
                        Some(Recorder { http_code, ..recorder })
                    }
                };
                Ok(response.map(|inner| MetricsBody { inner, recorder }))
            }
            Err(error) => {
                recorder.finish("Unknown");
                Err(error)
            }
        })
    }
}

pin_project! {
    /// Watches the body for the trailers carrying the final status; a body dropped before
    /// them was cancelled by the client.
    #[derive(Debug)]
    pub struct MetricsBody<B> {
        #[pin]
        inner: B,
        recorder: Option<Recorder>,
    }

    impl<B> PinnedDrop for MetricsBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(recorder) = this.project().recorder.take() {
                recorder.finish("Cancelled");
            }
        }
    }
}

impl<B: http_body::Body> http_body::Body for MetricsBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(code) = frame.trailers_ref().and_then(|t| t.get("grpc-status"))
                    && let Some(recorder) = this.recorder.take()
                {
                    recorder.finish(&code_name(code));
                } else if this.inner.is_end_stream()
                    && let Some(recorder) = this.recorder.take()
                {
                    // A plain-HTTP body that has sent everything may never be polled again.
                    let code = recorder.http_code.clone();
                    recorder.finish(&code);
                }
            }
            Some(Err(_)) => {
                if let Some(recorder) = this.recorder.take() {
                    recorder.finish("Unknown");
                }
            }
            // Plain HTTP responses end without gRPC trailers.
            None => {
                if let Some(recorder) = this.recorder.take() {
                    let code = recorder.http_code.clone();
                    recorder.finish(&code);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_served_methods_become_labels() {
        let methods = MethodTable::new(&[], &[]);
        let labels = method_labels(&methods, "/grpc.health.v1.Health/Check");
        assert_eq!((labels.service.as_str(), labels.method.as_str()), ("grpc.health.v1.Health", "Check"));
        let made_up = method_labels(&methods, "/codingagent.chat.v1.ChatService/Nope123");
        assert_eq!((made_up.service.as_str(), made_up.method.as_str()), ("unknown", "unknown"));
        assert_eq!(method_labels(&methods, "/v1/conversations/123/attachments").service, "http");
    }

    #[test]
    fn status_codes_are_named() {
        assert_eq!(code_name(&http::HeaderValue::from_static("0")), "Ok");
        assert_eq!(code_name(&http::HeaderValue::from_static("8")), "ResourceExhausted");
        assert_eq!(code_name(&http::HeaderValue::from_static("junk")), "Unknown");
    }
}
