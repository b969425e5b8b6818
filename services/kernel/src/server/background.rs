//! Background tasks a service runs beside its handlers (the outbox relay, inbox consumers,
//! purge jobs), supervised by the [`super::ServiceHost`].
//!
//! A task that ends before shutdown (an error, a panic, or a plain return) used to be ignored
//! while health stayed `SERVING`. Now it is logged, counted
//! (`codingagent_background_restarts{task}`) and started again after a backoff that doubles up
//! to [`MAX_BACKOFF`]; while a *required* task is down, its health check fails, so the
//! service reports `NOT_SERVING` and load balancers route around it.

use super::DependencyCheck;
use crate::telemetry::metrics::Metrics;
use futures::FutureExt;
use futures::future::BoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The first restart waits this long; each further one twice as long, up to [`MAX_BACKOFF`].
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(100);
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A run that lasted this long resets the backoff: it was working, not crash-looping.
const STABLE_AFTER: Duration = Duration::from_secs(60);

type Start = Arc<dyn Fn(CancellationToken) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync>;

/// One supervised task: how to start it, and whether the service can serve without it.
#[derive(Clone)]
pub struct Background {
    name: String,
    required: bool,
    start: Start,
}

impl std::fmt::Debug for Background {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Background").field("name", &self.name).field("required", &self.required).finish()
    }
}

impl Background {
    /// A task the service cannot do its job without: health is `NOT_SERVING` while it is down.
    /// `start` is called again for every restart and must return a future that runs until
    /// the token is cancelled.
    pub fn required<F, Fut>(name: impl Into<String>, start: F) -> Self
    where
        F: Fn(CancellationToken) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        Self { name: name.into(), required: true, start: Arc::new(move |stop| start(stop).boxed()) }
    }

    /// A task whose absence degrades the service without making it wrong (cache upkeep).
    pub fn optional<F, Fut>(name: impl Into<String>, start: F) -> Self
    where
        F: Fn(CancellationToken) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        Self { required: false, ..Self::required(name, start) }
    }

    /// A job run every `interval` (the first run right away); a failed run is logged and the
    /// job tries again at the next tick, so it never needs a restart.
    pub fn periodic<F, Fut>(name: impl Into<String>, interval: Duration, job: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let name = name.into();
        let job = Arc::new(job);
        let label = name.clone();
        Self::optional(name, move |stop: CancellationToken| {
            let job = job.clone();
            let label = label.clone();
            async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return Ok(()),
                        _ = tick.tick() => {}
                    }
                    if let Err(error) = job().await {
                        tracing::warn!(job = %label, error = %format!("{error:#}"), "periodic job failed");
                    }
                }
            }
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabel {
    task: String,
}

/// Runs [`Background`] tasks until stopped.
#[derive(Debug)]
pub(crate) struct Supervisor {
    restarts: Family<TaskLabel, Counter>,
    service: String,
}

impl Supervisor {
    pub(crate) fn new(service: &str, metrics: &Metrics) -> Self {
        let restarts = Family::<TaskLabel, Counter>::default();
        metrics.register(
            "background_restarts",
            "Background tasks restarted after they stopped unexpectedly",
            restarts.clone(),
        );
        Self { restarts, service: service.to_owned() }
    }

    /// Starts `task` under supervision; for a required task, also the health check that
    /// fails while it is down.
    pub(crate) fn spawn(
        &self,
        task: Background,
        stop: CancellationToken,
    ) -> (tokio::task::JoinHandle<()>, Option<DependencyCheck>) {
        let up = Arc::new(AtomicBool::new(true));
        let check = task.required.then(|| {
            let up = up.clone();
            let name = task.name.clone();
            DependencyCheck::new(format!("task {}", task.name), move || {
                let healthy = up.load(Ordering::Relaxed);
                let name = name.clone();
                async move { if healthy { Ok(()) } else { Err(format!("background task {name} is down")) } }
            })
        });
        let restarts = self.restarts.get_or_create(&TaskLabel { task: task.name.clone() }).clone();
        let span = tracing::info_span!("task", service = %self.service, task = %task.name);
        let handle = tokio::spawn(supervise(task, stop, up, restarts).instrument(span));
        (handle, check)
    }
}

async fn supervise(task: Background, stop: CancellationToken, up: Arc<AtomicBool>, restarts: Counter) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = tokio::time::Instant::now();
        up.store(true, Ordering::Relaxed);
        let outcome = AssertUnwindSafe((task.start)(stop.clone())).catch_unwind().await;
        if stop.is_cancelled() {
            return;
        }
        up.store(false, Ordering::Relaxed);
        restarts.inc();
        match outcome {
            Ok(Ok(())) => tracing::error!("background task stopped by itself; restarting"),
            Ok(Err(error)) => {
                tracing::error!(error = %format!("{error:#}"), "background task failed; restarting")
            }
            Err(panic) => {
                tracing::error!(panic = panic_message(&panic), "background task panicked; restarting")
            }
        }
        if started.elapsed() >= STABLE_AFTER {
            backoff = FIRST_BACKOFF;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Polls `condition` every 5 ms for up to 5 s.
    async fn eventually(condition: impl Fn() -> bool) {
        for _ in 0..1000 {
            if condition() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("condition not reached within 5 s");
    }

    #[tokio::test]
    async fn a_failing_task_is_restarted_with_growing_backoff_and_reported_down() {
        let metrics = Metrics::new();
        let supervisor = Supervisor::new("demo", &metrics);
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let task = Background::required("flaky", move |stop: CancellationToken| {
            let run = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                match run {
                    0 => anyhow::bail!("first run fails"),
                    1 => {
                        // Long enough for the test to see the task up between its failures.
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        panic!("second run panics")
                    }
                    _ => {
                        stop.cancelled().await;
                        Ok(())
                    }
                }
            }
        });
        let stop = CancellationToken::new();
        let (handle, check) = supervisor.spawn(task, stop.clone());
        let check = check.expect("required tasks have a health check");
        let started = tokio::time::Instant::now();
        eventually(|| runs.load(Ordering::SeqCst) == 1).await;
        // Down from the failure until the restart a backoff later.
        assert!((check.check)().await.is_err(), "down between the failure and the restart");
        eventually(|| runs.load(Ordering::SeqCst) == 2).await;
        assert!((check.check)().await.is_ok(), "up while the restarted task runs");
        assert!(started.elapsed() >= FIRST_BACKOFF);
        eventually(|| runs.load(Ordering::SeqCst) == 3).await;
        // First run, 100 ms backoff, 300 ms run, 200 ms backoff: the backoff doubled.
        assert!(started.elapsed() >= FIRST_BACKOFF * 3 + Duration::from_millis(300));
        assert!((check.check)().await.is_ok(), "up again once restarted");
        assert!(metrics.encode().contains("codingagent_background_restarts_total{task=\"flaky\"} 2"));
        stop.cancel();
        handle.await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 3, "not restarted after shutdown");
    }

    #[tokio::test]
    async fn periodic_jobs_survive_their_failures() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let job = Background::periodic("purge", Duration::from_millis(20), move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move { if n.is_multiple_of(2) { anyhow::bail!("failed run {n}") } else { Ok(()) } }
        });
        let metrics = Metrics::new();
        let stop = CancellationToken::new();
        let (handle, check) = Supervisor::new("demo", &metrics).spawn(job, stop.clone());
        assert!(check.is_none(), "periodic jobs are optional");
        // Every other run fails; the job keeps its schedule regardless.
        eventually(|| runs.load(Ordering::SeqCst) >= 4).await;
        stop.cancel();
        handle.await.unwrap();
        assert!(metrics.encode().contains("codingagent_background_restarts_total{task=\"purge\"} 0"));
    }
}
