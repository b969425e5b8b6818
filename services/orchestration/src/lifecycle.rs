//! The one way a task changes state: the state machine's check, the row change, the audit
//! record WatchTasks replays, and `TaskStateChanged` in the outbox — all in the caller's
//! transaction, so the stored state, the change feed and Kafka always agree. Milestone
//! events (TaskQueued, TaskSucceeded, …) are added by the caller in the same transaction.

use crate::convert;
use crate::error::Result;
use crate::state;
use crate::store::tasks::{self, Change, TaskRow};
use codingagent_kernel::kafka::{enqueue, topics};
use codingagent_proto::codingagent::common::v1::Actor;
use codingagent_proto::codingagent::events::v1 as events;
use codingagent_proto::codingagent::orchestration::v1::TaskState;
use codingagent_proto::helpers::now;
use sqlx::PgConnection;

/// `kind:id` or `kind:id via service`, as the audit trail stores actors.
pub(crate) fn actor_label(actor: &Actor) -> String {
    let kind = if actor.kind == codingagent_proto::codingagent::common::v1::ActorKind::Service as i32 {
        "service"
    } else {
        "user"
    };
    if actor.via.is_empty() {
        format!("{kind}:{}", actor.id)
    } else {
        format!("{kind}:{} via {}", actor.id, actor.via)
    }
}

/// Moves the locked `task` to `to` with `change`, recording who and why.
pub(crate) async fn transition(
    conn: &mut PgConnection,
    task: &TaskRow,
    to: TaskState,
    mut change: Change,
    actor: &Actor,
    reason: &str,
) -> Result<TaskRow> {
    let from = task.state();
    state::check(from, to)?;
    change.state = Some(to);
    if to == TaskState::Running && from == TaskState::Queued {
        change.started = true;
    }
    if state::is_terminal(to) {
        change.ended = Some(true);
    } else if state::is_terminal(from) {
        change.ended = Some(false);
    }
    let row = tasks::apply(conn, task.id, &change).await?;
    record(conn, &row, from, actor, reason).await?;
    Ok(row)
}

/// Records a change of `row` (already stored) in the feed and as `TaskStateChanged`.
pub(crate) async fn record(
    conn: &mut PgConnection,
    row: &TaskRow,
    from: TaskState,
    actor: &Actor,
    reason: &str,
) -> Result<()> {
    let task = convert::task(row);
    tasks::record_change(conn, &task, from, &actor_label(actor), reason).await?;
    let event = events::TaskStateChanged {
        task_id: task.id.clone(),
        actor: Some(actor.clone()),
        occur_time: Some(now()),
        owner: task.owner.clone(),
        previous_state: from as i32,
        state: task.state,
        run_id: task.current_run_id.clone(),
        iterations: task.iterations,
        token_usage: task.token_usage,
    };
    enqueue(conn, topics::TASK, &task.id, &event).await?;
    Ok(())
}

/// Adds a milestone event of the task to the outbox.
pub(crate) async fn publish<M: prost::Message + prost::Name>(
    conn: &mut PgConnection,
    row: &TaskRow,
    event: &M,
) -> Result<()> {
    enqueue(conn, topics::TASK, &row.id.to_string(), event).await?;
    Ok(())
}
