//! The llm service's domain events, written to the outbox in the caller's transaction.

use crate::convert;
use crate::registry::ProviderSync;
use codingagent_kernel::kafka::{OutboxEvent, enqueue, topics};
use codingagent_proto::codingagent::common::v1::Actor;
use codingagent_proto::codingagent::events::v1::{AbTestConcluded, InferenceCompleted, ModelRegistryChanged};
use codingagent_proto::codingagent::llm::v1 as pb;
use sqlx::PgConnection;

fn service_actor() -> Option<Actor> {
    Some(Actor::service("llm"))
}

pub(crate) async fn registry_changed(
    conn: &mut PgConnection,
    sync: &ProviderSync,
) -> Result<(), sqlx::Error> {
    let event = ModelRegistryChanged {
        provider: sync.provider.clone(),
        actor: service_actor(),
        occur_time: Some(convert::now()),
        added: sync.added.iter().map(convert::model).collect(),
        updated: sync.updated.iter().map(convert::model).collect(),
        removed_model_ids: sync.removed.clone(),
    };
    enqueue(conn, topics::LLM, &sync.provider, &event).await.map(drop)
}

/// The event for a usage record, written in the same statement as the record.
pub(crate) fn inference_completed(record: &pb::UsageRecord) -> OutboxEvent {
    let event = InferenceCompleted {
        usage_record_id: record.id.clone(),
        actor: record.caller.clone(),
        occur_time: record.create_time,
        record: Some(record.clone()),
    };
    OutboxEvent::new(topics::LLM, &record.id, &event)
}

pub(crate) async fn ab_test_concluded(
    conn: &mut PgConnection,
    actor: Actor,
    test: &pb::AbTest,
    results: &pb::AbTestResults,
) -> Result<(), sqlx::Error> {
    let event = AbTestConcluded {
        ab_test_id: test.id.clone(),
        actor: Some(actor),
        occur_time: Some(convert::now()),
        ab_test: Some(test.clone()),
        results: Some(results.clone()),
    };
    enqueue(conn, topics::LLM, &test.id, &event).await.map(drop)
}
