//! Who may see and change a task. Anyone who may not see it gets NOT_FOUND, so ids cannot be
//! probed. Owners may do everything; operators may read, list, stream and cancel any task
//! (to stop a runaway run) but not change what someone else asked for.

use crate::error::{OrchestrationError, Result};
use crate::store::tasks::{self, TaskRow};
use codingagent_kernel::identity::Caller;
use sqlx::PgConnection;
use uuid::Uuid;

/// What the caller wants to do with a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Get, stream, list runs, diff, search the log.
    Read,
    Cancel,
    /// Update, delete, retry.
    Change,
}

/// Whether `caller` may perform `action` on a task owned by `owner`.
pub(crate) fn may(caller: &Caller, owner: &str, action: Action) -> bool {
    if caller.user_id() == Some(owner) {
        return true;
    }
    caller.has_role(codingagent_kernel::identity::OPERATOR_ROLE) && action != Action::Change
}

/// The live task `id` if the caller may perform `action` on it; NOT_FOUND otherwise.
pub(crate) async fn find(
    conn: &mut PgConnection,
    caller: &Caller,
    id: Uuid,
    action: Action,
    lock: bool,
) -> Result<TaskRow> {
    match tasks::get(conn, id, lock).await? {
        Some(task) if may(caller, &task.owner, action) => Ok(task),
        _ => Err(OrchestrationError::not_found("task", id.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_do_everything_operators_read_and_cancel_others_nothing() {
        let operator = Caller::user("root").with_roles(["operator"]);
        for action in [Action::Read, Action::Cancel, Action::Change] {
            assert!(may(&Caller::user("alice"), "alice", action));
            assert!(may(&Caller::service_for("chat", "alice", vec![]), "alice", action));
            assert!(!may(&Caller::user("bob"), "alice", action));
            assert!(!may(&Caller::service_for("chat", "bob", vec![]), "alice", action));
            assert_eq!(may(&operator, "alice", action), action != Action::Change);
        }
        // A service on its own account is no user: it sees nobody's tasks through the API.
        assert!(!may(&Caller::service("cicd"), "alice", Action::Read));
    }
}
