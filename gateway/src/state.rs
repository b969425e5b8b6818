//! Everything a request needs, built once at start-up and shared by every connection.

use crate::auth::Authenticator;
use crate::auth::signin::DevSigner;
use crate::config::{Config, ServiceRoute};
use crate::contracts::Contracts;
use crate::metrics::GatewayMetrics;
use crate::pool::Pool;
use crate::ratelimit::Limiter;
use crate::retry::RetryBudget;
use codingagent_kernel::identity::TokenMinter;
use codingagent_kernel::server::StreamSlots;
use codingagent_kernel::telemetry::metrics::Metrics;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use tokio_util::sync::CancellationToken;

/// The gateway's shared state.
#[derive(Debug)]
pub(crate) struct Gateway {
    pub(crate) config: Config,
    pub(crate) contracts: Contracts,
    routes: RwLock<Arc<BTreeMap<String, ServiceRoute>>>,
    pub(crate) pools: HashMap<String, Arc<Pool>>,
    pub(crate) auth: Arc<Authenticator>,
    pub(crate) signer: Option<DevSigner>,
    pub(crate) minter: TokenMinter,
    pub(crate) limiter: Limiter,
    pub(crate) budget: RetryBudget,
    pub(crate) streams: StreamSlots,
    pub(crate) metrics: GatewayMetrics,
    pub(crate) registry: Metrics,
    /// Cancelled when shutdown starts: open streams end, readiness turns off.
    pub(crate) shutdown: CancellationToken,
}

impl Gateway {
    pub(crate) fn new(
        config: Config,
        redis: Option<codingagent_kernel::redis::RedisClient>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let registry = Metrics::for_service("gateway");
        let metrics = GatewayMetrics::register(&registry);
        let mut pools = HashMap::new();
        for (name, backend) in &config.backends {
            pools.insert(
                name.clone(),
                Arc::new(Pool::new(name, backend, &config.resilience, metrics.clone())?),
            );
        }
        let signer = if config.auth.dev_sign_in.enabled {
            Some(DevSigner::new(&config.auth.dev_sign_in)?)
        } else {
            None
        };
        Ok(Self {
            contracts: Contracts::compiled(),
            routes: RwLock::new(Arc::new(config.services.clone())),
            pools,
            auth: Arc::new(Authenticator::new(&config.auth)?),
            signer,
            minter: TokenMinter::new(&config.identity),
            limiter: Limiter::new(&config.rate_limits, redis, metrics.clone()),
            budget: RetryBudget::new(
                config.resilience.retry_budget_percent,
                config.resilience.retry_min_per_sec,
            ),
            streams: StreamSlots::new(config.server.max_streams_per_caller),
            metrics,
            registry,
            shutdown,
            config,
        })
    }

    /// The routes in force now.
    pub(crate) fn routes(&self) -> Arc<BTreeMap<String, ServiceRoute>> {
        self.routes.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the routes (a configuration reload); returns whether anything changed.
    pub(crate) fn set_routes(&self, routes: BTreeMap<String, ServiceRoute>) -> bool {
        let mut current = self.routes.write().unwrap_or_else(|e| e.into_inner());
        if **current == routes {
            return false;
        }
        *current = Arc::new(routes);
        true
    }

    /// Methods callable without a token.
    pub(crate) fn is_public(&self, path: &str) -> bool {
        self.config.auth.public_methods.iter().any(|prefix| path.starts_with(prefix.as_str()))
    }
}
