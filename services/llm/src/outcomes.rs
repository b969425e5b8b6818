//! Learns from orchestration: every finished task says which model it used and whether it
//! succeeded, which is what the learned selector ranks models by.

use crate::store;
use codingagent_kernel::kafka::{EventHandler, HandlerError, ReceivedEvent};
use codingagent_proto::codingagent::events::v1::TaskExecutionSummary;
use codingagent_proto::helpers::TaskOutcome;
use sqlx::PgConnection;

#[derive(Debug, Clone, Copy)]
pub(crate) struct TaskOutcomes;

impl EventHandler for TaskOutcomes {
    async fn handle(&self, conn: &mut PgConnection, event: &ReceivedEvent) -> Result<(), HandlerError> {
        // Other task events carry nothing to learn from.
        let Some(TaskOutcome { task_id, succeeded: success, summary }) =
            TaskOutcome::decode(&event.event_type, &event.payload).map_err(HandlerError::permanent)?
        else {
            return Ok(());
        };
        let Some(summary) = summary.filter(|s: &TaskExecutionSummary| !s.model.is_empty()) else {
            return Ok(());
        };
        let classification = summary.classification.unwrap_or_default();
        let tokens = summary.token_usage.map_or(0, |u| u.input_tokens + u.output_tokens);
        let cost = summary.cost.map_or(0, |c| c.micros);
        store::insert_model_outcome(
            conn,
            &task_id,
            &summary.model,
            classification.task_type,
            classification.complexity,
            classification.language,
            success,
            tokens,
            cost,
        )
        .await?;
        Ok(())
    }
}
