//! Backend pools: the replicas of one service, each an HTTP/2 connection (a tonic
//! `Channel`, which reconnects by itself), watched through `grpc.health.v1.Health/Watch`,
//! guarded by a circuit breaker, and picked by the power of two choices: of two random
//! usable endpoints, the one with fewer calls in flight. That spreads load nearly as well as
//! least-loaded without a global scan, and never herds every gateway onto one replica.

use crate::breaker::{Breaker, State};
use crate::config::{BackendConfig, ResilienceConfig};
use crate::metrics::GatewayMetrics;
use rand::Rng;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint as TonicEndpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// How long a not-serving endpoint's watch waits for news before it is opened again.
const NOT_SERVING_REWATCH: Duration = Duration::from_secs(2);

/// One replica of a backend.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) url: String,
    pub(crate) channel: Channel,
    pub(crate) breaker: Breaker,
    /// Last answer of the health watch; optimistic until the first one.
    serving: AtomicBool,
    in_flight: AtomicUsize,
}

impl Endpoint {
    pub(crate) fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// A call's hold on an endpoint: counted in flight until dropped.
#[derive(Debug)]
pub(crate) struct Lease {
    pub(crate) endpoint: Arc<Endpoint>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why no endpoint could take a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PickError {
    /// Every endpoint is open-circuited or not serving.
    Unavailable,
    /// Usable endpoints exist but are all at `max_in_flight`.
    Saturated,
}

/// The endpoints of one backend.
#[derive(Debug)]
pub(crate) struct Pool {
    pub(crate) name: String,
    endpoints: Vec<Arc<Endpoint>>,
    max_in_flight: usize,
    metrics: GatewayMetrics,
}

impl Pool {
    pub(crate) fn new(
        name: &str,
        config: &BackendConfig,
        resilience: &ResilienceConfig,
        metrics: GatewayMetrics,
    ) -> anyhow::Result<Self> {
        let mut endpoints = Vec::new();
        for url in &config.endpoints {
            let channel = TonicEndpoint::from_shared(url.clone())?
                .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(10))
                .connect_lazy();
            endpoints.push(Arc::new(Endpoint {
                url: url.clone(),
                channel,
                breaker: Breaker::new(
                    resilience.breaker_failures,
                    Duration::from_millis(resilience.breaker_open_ms),
                ),
                serving: AtomicBool::new(true),
                in_flight: AtomicUsize::new(0),
            }));
        }
        for endpoint in &endpoints {
            metrics.breaker(name, &endpoint.url, State::Closed.gauge());
        }
        Ok(Self { name: name.to_owned(), endpoints, max_in_flight: config.max_in_flight, metrics })
    }

    /// Whether any endpoint could take a call now.
    pub(crate) fn is_usable(&self) -> bool {
        let now = Instant::now();
        self.endpoints.iter().any(|e| e.is_serving() && e.breaker.is_available(now))
    }

    /// An endpoint for one call, avoiding `avoid` (the one a retry just failed on) when
    /// another is usable. `counted` calls are held to `max_in_flight`; streams are not,
    /// since they stay open for as long as clients watch.
    pub(crate) fn pick(&self, avoid: Option<&Arc<Endpoint>>, counted: bool) -> Result<Lease, PickError> {
        let now = Instant::now();
        let usable: Vec<&Arc<Endpoint>> =
            self.endpoints.iter().filter(|e| e.is_serving() && e.breaker.is_available(now)).collect();
        let preferred: Vec<&Arc<Endpoint>> = match avoid {
            Some(avoid) if usable.len() > 1 => {
                usable.iter().copied().filter(|e| !Arc::ptr_eq(e, avoid)).collect()
            }
            _ => usable,
        };
        let choice = match preferred.len() {
            0 => return Err(PickError::Unavailable),
            1 => preferred[0],
            n => {
                let mut rng = rand::rng();
                let a = rng.random_range(0..n);
                let b = (a + rng.random_range(1..n)) % n;
                if preferred[a].in_flight() <= preferred[b].in_flight() { preferred[a] } else { preferred[b] }
            }
        };
        if counted && choice.in_flight() >= self.max_in_flight {
            return Err(PickError::Saturated);
        }
        if !choice.breaker.try_acquire(now) {
            // Another call took the half-open probe between the filter and here.
            return Err(PickError::Unavailable);
        }
        self.metrics.breaker(&self.name, &choice.url, choice.breaker.state().gauge());
        choice.in_flight.fetch_add(1, Ordering::Relaxed);
        Ok(Lease { endpoint: choice.clone() })
    }

    /// Reports a call's outcome to the endpoint's breaker.
    pub(crate) fn record(&self, endpoint: &Endpoint, success: bool) {
        let before = endpoint.breaker.state();
        let after = endpoint.breaker.record(success, Instant::now());
        if before != after {
            tracing::info!(backend = %self.name, endpoint = %endpoint.url, ?before, ?after, "breaker changed");
        }
        self.metrics.breaker(&self.name, &endpoint.url, after.gauge());
    }

    /// Watches every endpoint's health until `stop`; a watch that fails marks the endpoint
    /// not serving and is opened again after a second.
    pub(crate) fn watch_health(
        self: &Arc<Self>,
        stop: CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        self.endpoints
            .iter()
            .map(|endpoint| {
                let (pool, endpoint, stop) = (self.clone(), endpoint.clone(), stop.clone());
                tokio::spawn(async move {
                    loop {
                        let watch = pool.watch_once(&endpoint);
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = watch => {}
                        }
                        pool.set_serving(&endpoint, false);
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(Duration::from_millis(1_000 + rand::rng().random_range(0..250))) => {}
                        }
                    }
                })
            })
            .collect()
    }

    async fn watch_once(&self, endpoint: &Endpoint) {
        let mut client = HealthClient::new(endpoint.channel.clone());
        let mut stream = match client.watch(HealthCheckRequest { service: String::new() }).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                tracing::debug!(endpoint = %endpoint.url, %status, "health watch failed");
                return;
            }
        };
        let mut serving = true;
        loop {
            // While not serving, the watch is opened again every few seconds: a draining
            // server keeps its old connection (and this stream) open after it stops
            // accepting, so its last word would otherwise be NOT_SERVING forever while a
            // restarted process already serves on a new connection.
            let next = if serving {
                stream.message().await
            } else {
                match tokio::time::timeout(NOT_SERVING_REWATCH, stream.message()).await {
                    Ok(next) => next,
                    Err(_) => return,
                }
            };
            let Ok(Some(message)) = next else { return };
            serving = message.status() == ServingStatus::Serving;
            self.set_serving(endpoint, serving);
        }
    }

    fn set_serving(&self, endpoint: &Endpoint, serving: bool) {
        if endpoint.serving.swap(serving, Ordering::Relaxed) != serving {
            tracing::info!(backend = %self.name, endpoint = %endpoint.url, serving, "endpoint health changed");
        }
        let gauge = if serving { endpoint.breaker.state().gauge() } else { 3 };
        self.metrics.breaker(&self.name, &endpoint.url, gauge);
    }
}
