//! Events a handler can never apply are set aside, and the partition moves on; an operator
//! replays them once the cause is fixed.

use crate::kafka::Fixture;
use codingagent_kernel::CancellationToken;
use codingagent_kernel::kafka::dead_letters::{self, REASON_HEADER, ReplayError};
use codingagent_kernel::kafka::{EventHandler, HandlerError, InboxConsumer, ReceivedEvent};
use codingagent_kernel::telemetry::metrics::Metrics;
use codingagent_proto::codingagent::events::v1::TaskCreated;
use codingagent_testkit::{publish_event, read_topic, unique_name};
use sqlx::PgConnection;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Applies task events, except that it refuses `refused` for good while `refuse` is set.
#[derive(Clone)]
struct Picky {
    refuse: Arc<AtomicBool>,
}

impl EventHandler for Picky {
    async fn handle(&self, conn: &mut PgConnection, event: &ReceivedEvent) -> Result<(), HandlerError> {
        let created: TaskCreated = event.decode()?;
        if created.task_id == "refused" && self.refuse.load(Ordering::SeqCst) {
            return Err(HandlerError::permanent("refused by policy"));
        }
        sqlx::query("INSERT INTO applied (event_id, event_key) VALUES ($1, $2)")
            .bind(&event.id)
            .bind(&created.task_id)
            .execute(conn)
            .await?;
        Ok(())
    }
}

async fn wait_until<F: Future<Output = bool>>(what: &str, condition: impl Fn() -> F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_and_the_next_one_is_processed() {
    let fixture = Fixture::new().await;
    let relay = fixture.relay();
    // A payload that never decodes, then events that do, on the one partition.
    publish_event(&fixture.on_broker(), "poison", "codingagent.events.v1.TaskCreated", vec![0xff; 7])
        .await
        .unwrap();
    fixture.write("refused", true).await;
    fixture.write("after-poison", true).await;
    assert_eq!(relay.relay_once().await.unwrap(), 2);

    let refuse = Arc::new(AtomicBool::new(true));
    let metrics = Metrics::new();
    let group = unique_name("kernel-test-dlq");
    let shutdown = CancellationToken::new();
    let consumer = InboxConsumer::new(fixture.pool.clone(), &fixture.kafka, &group, &[&fixture.topic])
        .unwrap()
        .with_metrics(&metrics);
    let running = tokio::spawn(consumer.run(Picky { refuse: refuse.clone() }, shutdown.clone()));
    wait_until("the event after the poison is applied", || async {
        fixture.applied().await.contains(&"after-poison".to_owned())
    })
    .await;

    let letters = dead_letters::list(&fixture.pool, Some(&group), 10).await.unwrap();
    assert_eq!(letters.len(), 2, "{letters:?}");
    let refused = letters.iter().find(|l| l.event_key.as_deref() == Some("refused")).unwrap();
    assert_eq!(refused.reason, "refused by policy");
    let poison = letters.iter().find(|l| l.event_key.as_deref() == Some("poison")).unwrap();
    assert!(poison.reason.contains("does not decode"), "{}", poison.reason);
    assert!(metrics.encode().contains("codingagent_inbox_dead_lettered_total 2"), "{}", metrics.encode());

    // Both are on `<topic>.dlq` with their reason, once the relay publishes the outbox.
    assert_eq!(relay.relay_once().await.unwrap(), 2);
    let dlq = fixture.kafka.topic(&format!("{}.dlq", fixture.topic));
    let records = read_topic(&dlq, 2, Duration::from_secs(15)).await.unwrap();
    let reasons: Vec<&str> = records.iter().map(|r| r.headers[REASON_HEADER].as_str()).collect();
    assert!(reasons.contains(&"refused by policy"), "{reasons:?}");

    // Once the cause is fixed, a replay applies the event, exactly once.
    refuse.store(false, Ordering::SeqCst);
    dead_letters::replay(&fixture.pool, refused.id).await.unwrap();
    assert!(matches!(
        dead_letters::replay(&fixture.pool, refused.id).await,
        Err(ReplayError::AlreadyReplayed(_))
    ));
    assert!(matches!(dead_letters::replay(&fixture.pool, -1).await, Err(ReplayError::NotFound(-1))));
    assert_eq!(relay.relay_once().await.unwrap(), 1);
    wait_until("the replayed event is applied", || async {
        fixture.applied().await.contains(&"refused".to_owned())
    })
    .await;
    assert_eq!(fixture.applied().await, ["after-poison", "refused"]);

    shutdown.cancel();
    running.await.unwrap();
    codingagent_testkit::delete_topic(&dlq).await.unwrap();
    fixture.finish().await;
}
