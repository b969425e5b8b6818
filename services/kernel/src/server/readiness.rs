//! Health follows the dependencies: a service reports `SERVING` only while every dependency
//! check passes, so load balancers and orchestrators send traffic only to instances that can
//! answer it, and `NOT_SERVING` again from the moment shutdown starts.

use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// A dependency probe: `Ok` when the dependency answers, otherwise what is wrong.
pub type CheckFn = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// A named dependency check.
#[derive(Clone)]
pub struct DependencyCheck {
    pub name: String,
    pub check: CheckFn,
}

impl std::fmt::Debug for DependencyCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DependencyCheck").field("name", &self.name).finish_non_exhaustive()
    }
}

impl DependencyCheck {
    pub fn new<F, Fut>(name: impl Into<String>, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Self { name: name.into(), check: Arc::new(move || Box::pin(check())) }
    }
}

/// Each check gets this long before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The health reporter plus the names it reports on.
#[derive(Clone)]
pub(crate) struct Readiness {
    reporter: HealthReporter,
    services: Arc<Vec<String>>,
}

impl Readiness {
    /// Every service (and the whole server, `""`) starts `NOT_SERVING`.
    pub(crate) async fn new(reporter: HealthReporter, services: Vec<String>) -> Self {
        let readiness = Self { reporter, services: Arc::new(services) };
        readiness.set(ServingStatus::NotServing).await;
        readiness
    }

    pub(crate) async fn set(&self, status: ServingStatus) {
        self.reporter.set_service_status("", status).await;
        for service in self.services.iter() {
            self.reporter.set_service_status(service, status).await;
        }
    }

    /// Re-evaluates the checks every `interval` until `stop` is cancelled.
    pub(crate) async fn watch(
        self,
        checks: Vec<DependencyCheck>,
        interval: Duration,
        stop: CancellationToken,
    ) {
        let mut serving = false;
        loop {
            let failures = run_checks(&checks).await;
            let healthy = failures.is_empty();
            if stop.is_cancelled() {
                return;
            }
            if healthy != serving {
                if healthy {
                    tracing::info!("dependencies answer; serving");
                } else {
                    tracing::warn!(failures = ?failures, "dependency checks failed; not serving");
                }
                self.set(if healthy { ServingStatus::Serving } else { ServingStatus::NotServing }).await;
                serving = healthy;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}

async fn run_checks(checks: &[DependencyCheck]) -> Vec<String> {
    let results = futures::future::join_all(checks.iter().map(|c| async move {
        match tokio::time::timeout(CHECK_TIMEOUT, (c.check)()).await {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(format!("{}: {error}", c.name)),
            Err(_) => Some(format!("{}: no answer within {CHECK_TIMEOUT:?}", c.name)),
        }
    }))
    .await;
    results.into_iter().flatten().collect()
}
