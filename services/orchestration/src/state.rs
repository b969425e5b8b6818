//! The task lifecycle of ARCHITECTURE §7 as one state machine: every state change in the
//! service asks [`check`] first, so an illegal transition is FAILED_PRECONDITION wherever it
//! would have happened, and the allowed set is written down once.
//!
//! PENDING → CLASSIFIED → QUEUED → RUNNING ⇄ VALIDATING → PR_OPENED → SUCCEEDED;
//! VALIDATING → SUCCEEDED for local repositories; any unfinished state → FAILED | CANCELLED;
//! FAILED | CANCELLED → QUEUED (RetryTask). A run lost with its worker goes RUNNING/VALIDATING
//! → RUNNING again, which is the resumption, not a new transition, and is allowed as one.

use crate::error::OrchestrationError;
use codingagent_proto::codingagent::orchestration::v1::TaskState;

/// Whether the state is final until a retry.
pub(crate) fn is_terminal(state: TaskState) -> bool {
    matches!(state, TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled)
}

/// Whether a run has started (title and text are then fixed).
pub(crate) fn has_started(state: TaskState) -> bool {
    !matches!(state, TaskState::Pending | TaskState::Classified | TaskState::Queued)
}

/// Whether `from → to` is a transition of the lifecycle.
pub(crate) fn allowed(from: TaskState, to: TaskState) -> bool {
    use TaskState::*;
    match (from, to) {
        (Pending, Classified) | (Classified, Queued) | (Queued, Running) => true,
        (Running, Validating) | (Validating, Running) | (Running, Running) | (Validating, Validating) => true,
        (Validating, PrOpened) | (Validating, Succeeded) | (PrOpened, Succeeded) => true,
        (Failed | Cancelled, Queued) => true,
        (from, Failed | Cancelled) => !is_terminal(from) && from != Unspecified,
        _ => false,
    }
}

/// `Ok` for an allowed transition, FAILED_PRECONDITION naming both states otherwise.
pub(crate) fn check(from: TaskState, to: TaskState) -> Result<(), OrchestrationError> {
    if allowed(from, to) {
        Ok(())
    } else {
        Err(OrchestrationError::precondition(
            "ILLEGAL_TRANSITION",
            format!("a task in state {} cannot become {}", name(from), name(to)),
        ))
    }
}

/// `RUNNING`, not `TASK_STATE_RUNNING`: what people read in messages and logs.
pub(crate) fn name(state: TaskState) -> &'static str {
    state.as_str_name().trim_start_matches("TASK_STATE_")
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskState::*;

    const ALL: [TaskState; 10] = [
        Unspecified,
        Pending,
        Classified,
        Queued,
        Running,
        Validating,
        PrOpened,
        Succeeded,
        Failed,
        Cancelled,
    ];

    #[test]
    fn the_happy_paths_are_allowed() {
        for path in [
            &[Pending, Classified, Queued, Running, Validating, PrOpened, Succeeded][..],
            &[Pending, Classified, Queued, Running, Validating, Running, Validating, Succeeded],
            &[Pending, Classified, Queued, Running, Failed, Queued, Running, Cancelled, Queued],
        ] {
            for pair in path.windows(2) {
                assert!(allowed(pair[0], pair[1]), "{:?} → {:?}", pair[0], pair[1]);
            }
        }
    }

    #[test]
    fn finished_tasks_only_go_back_to_the_queue() {
        for to in ALL {
            assert!(!allowed(Succeeded, to), "SUCCEEDED → {to:?}");
            assert_eq!(allowed(Failed, to), to == Queued, "FAILED → {to:?}");
            assert_eq!(allowed(Cancelled, to), to == Queued, "CANCELLED → {to:?}");
        }
    }

    #[test]
    fn every_unfinished_state_can_fail_or_be_cancelled_but_not_skip_ahead() {
        for from in [Pending, Classified, Queued, Running, Validating, PrOpened] {
            assert!(allowed(from, Failed) && allowed(from, Cancelled), "{from:?}");
        }
        for (from, to) in [(Pending, Queued), (Pending, Running), (Queued, Succeeded), (Running, PrOpened)] {
            assert!(!allowed(from, to), "{from:?} → {to:?}");
        }
        assert!(ALL.iter().all(|&from| !allowed(from, Unspecified) && !allowed(from, Pending)));
    }

    #[test]
    fn an_illegal_transition_is_a_failed_precondition_naming_both_states() {
        let error = check(Succeeded, Running).unwrap_err();
        assert!(
            matches!(&error, OrchestrationError::FailedPrecondition("ILLEGAL_TRANSITION", m) if m.contains("SUCCEEDED") && m.contains("RUNNING"))
        );
    }
}
