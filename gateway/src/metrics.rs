//! The gateway's Prometheus series, next to the kernel's in one registry: RED per route and
//! backend, breaker states, limiter, split and authentication decisions, connections.
//!
//! Every label value comes from the gateway's own tables (contract paths, configured
//! backends and groups, fixed reason names) or is `unknown`, never from a request, so no
//! client can grow the registry.

use codingagent_kernel::telemetry::metrics::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteCode {
    route: String,
    backend: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteBackend {
    route: String,
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Endpoint {
    backend: String,
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitDecision {
    group: String,
    decision: String,
    store: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SplitDecision {
    service: String,
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: String,
}

#[derive(Debug)]
struct Families {
    requests: Family<RouteCode, Counter>,
    latency: Family<RouteBackend, Histogram>,
    retries: Family<RouteBackend, Counter>,
    shed: Family<RouteBackend, Counter>,
    breaker: Family<Endpoint, Gauge>,
    limits: Family<LimitDecision, Counter>,
    splits: Family<SplitDecision, Counter>,
    auth: Family<Reason, Counter>,
    connections: Gauge,
    refused_connections: Counter,
}

/// Handles to the gateway's series; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct GatewayMetrics {
    families: Arc<Families>,
}

impl GatewayMetrics {
    pub(crate) fn register(registry: &Metrics) -> Self {
        let families = Families {
            requests: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new([
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0, 10.0, 30.0,
                ])
            }),
            retries: Family::default(),
            shed: Family::default(),
            breaker: Family::default(),
            limits: Family::default(),
            splits: Family::default(),
            auth: Family::default(),
            connections: Gauge::default(),
            refused_connections: Counter::default(),
        };
        registry.register(
            "gateway_requests",
            "Calls answered, by route, backend and gRPC code",
            families.requests.clone(),
        );
        registry.register(
            "gateway_request_seconds",
            "Time from request to response head (unary: to the whole answer)",
            families.latency.clone(),
        );
        registry.register(
            "gateway_retries",
            "Attempts after the first, by route and backend",
            families.retries.clone(),
        );
        registry.register(
            "gateway_shed",
            "Calls refused because a backend was saturated",
            families.shed.clone(),
        );
        registry.register(
            "gateway_breaker_state",
            "Circuit breaker per endpoint: 0 closed, 1 half-open, 2 open, 3 not serving (health)",
            families.breaker.clone(),
        );
        registry.register("gateway_rate_limit_decisions", "Rate limiter decisions", families.limits.clone());
        registry.register(
            "gateway_split_decisions",
            "Where traffic splits sent calls",
            families.splits.clone(),
        );
        registry.register(
            "gateway_auth_refusals",
            "Requests refused for their identity, by reason",
            families.auth.clone(),
        );
        registry.register("gateway_connections", "Client connections open now", families.connections.clone());
        registry.register(
            "gateway_refused_connections",
            "Connections closed at once because the limit was reached",
            families.refused_connections.clone(),
        );
        Self { families: Arc::new(families) }
    }

    pub(crate) fn request(&self, route: &str, backend: &str, code: tonic::Code, seconds: f64) {
        let labels = RouteBackend { route: route.to_owned(), backend: backend.to_owned() };
        self.families.latency.get_or_create(&labels).observe(seconds);
        let code = format!("{code:?}");
        self.families
            .requests
            .get_or_create(&RouteCode { route: labels.route, backend: labels.backend, code })
            .inc();
    }

    pub(crate) fn retry(&self, route: &str, backend: &str) {
        self.families
            .retries
            .get_or_create(&RouteBackend { route: route.into(), backend: backend.into() })
            .inc();
    }

    pub(crate) fn shed(&self, route: &str, backend: &str) {
        self.families
            .shed
            .get_or_create(&RouteBackend { route: route.into(), backend: backend.into() })
            .inc();
    }

    pub(crate) fn breaker(&self, backend: &str, endpoint: &str, state: i64) {
        self.families
            .breaker
            .get_or_create(&Endpoint { backend: backend.into(), endpoint: endpoint.into() })
            .set(state);
    }

    pub(crate) fn rate_limit(&self, group: &str, allowed: bool, store: &str) {
        let decision = if allowed { "allowed" } else { "limited" };
        self.families
            .limits
            .get_or_create(&LimitDecision {
                group: group.into(),
                decision: decision.into(),
                store: store.into(),
            })
            .inc();
    }

    pub(crate) fn split(&self, service: &str, target: &str) {
        self.families
            .splits
            .get_or_create(&SplitDecision { service: service.into(), target: target.into() })
            .inc();
    }

    pub(crate) fn auth_refused(&self, reason: &str) {
        self.families.auth.get_or_create(&Reason { reason: reason.into() }).inc();
    }

    pub(crate) fn connection_opened(&self) {
        self.families.connections.inc();
    }

    pub(crate) fn connection_closed(&self) {
        self.families.connections.dec();
    }

    pub(crate) fn connection_refused(&self) {
        self.families.refused_connections.inc();
    }
}
