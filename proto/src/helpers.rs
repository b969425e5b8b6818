//! Small conversions every service needs between the contract's well-known types and Rust's,
//! written once: timestamps and durations, actors, and the task outcome two consumers decode.

use crate::codingagent::common::v1::{Actor, ActorKind};
use crate::codingagent::events::v1::{TaskExecutionSummary, TaskFailed, TaskSucceeded};
use chrono::{DateTime, Utc};
use prost::{Message, Name};

/// A protobuf timestamp of `at`.
pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: at.timestamp(), nanos: at.timestamp_subsec_nanos() as i32 }
}

/// The current time as a protobuf timestamp.
pub fn now() -> prost_types::Timestamp {
    timestamp(Utc::now())
}

/// `at` as a chrono time; `None` when it is out of range (negative nanos, a far year).
pub fn to_chrono(at: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?)
}

/// A protobuf duration of `d` (saturating at `i64::MAX` seconds).
pub fn duration(d: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos() as i32,
    }
}

impl Actor {
    /// A person.
    pub fn user(id: impl Into<String>) -> Self {
        Self { kind: ActorKind::User as i32, id: id.into(), via: String::new() }
    }

    /// A service on its own account (the assistant posting its reply).
    pub fn service(name: impl Into<String>) -> Self {
        Self { kind: ActorKind::Service as i32, id: name.into(), via: String::new() }
    }

    /// A person, through a service acting for them: the person is the actor, so rights and
    /// authorship follow them; the service is noted.
    pub fn user_via(id: impl Into<String>, service: impl Into<String>) -> Self {
        Self { via: service.into(), ..Self::user(id) }
    }
}

/// How a finished task ended, from either of its terminal events.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOutcome {
    pub task_id: String,
    pub succeeded: bool,
    pub summary: Option<TaskExecutionSummary>,
}

impl TaskOutcome {
    /// `Some` for a `TaskSucceeded` or `TaskFailed` payload, `None` for any other event type
    /// (the task topic carries every task event); an error when the payload does not decode.
    pub fn decode(event_type: &str, payload: &[u8]) -> Result<Option<Self>, prost::DecodeError> {
        if event_type == TaskSucceeded::full_name() {
            let event = TaskSucceeded::decode(payload)?;
            Ok(Some(Self { task_id: event.task_id, succeeded: true, summary: event.summary }))
        } else if event_type == TaskFailed::full_name() {
            let event = TaskFailed::decode(payload)?;
            Ok(Some(Self { task_id: event.task_id, succeeded: false, summary: event.summary }))
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_and_bad_ones_are_none() {
        let at = DateTime::from_timestamp(1_790_000_000, 123_000_000).unwrap();
        assert_eq!(to_chrono(&timestamp(at)), Some(at));
        assert_eq!(to_chrono(&prost_types::Timestamp { seconds: 0, nanos: -1 }), None);
        assert_eq!(
            duration(std::time::Duration::from_millis(1_500)),
            prost_types::Duration { seconds: 1, nanos: 500_000_000 }
        );
    }

    #[test]
    fn task_outcomes_come_from_either_terminal_event() {
        let summary = TaskExecutionSummary { model: "m".into(), ..Default::default() };
        let ok = TaskSucceeded { task_id: "t1".into(), summary: Some(summary.clone()), ..Default::default() };
        let outcome = TaskOutcome::decode(&TaskSucceeded::full_name(), &ok.encode_to_vec()).unwrap().unwrap();
        assert_eq!(outcome, TaskOutcome { task_id: "t1".into(), succeeded: true, summary: Some(summary) });
        let failed = TaskFailed { task_id: "t2".into(), ..Default::default() };
        assert!(
            !TaskOutcome::decode(&TaskFailed::full_name(), &failed.encode_to_vec())
                .unwrap()
                .unwrap()
                .succeeded
        );
        assert_eq!(TaskOutcome::decode("codingagent.events.v1.TaskCreated", b"").unwrap(), None);
        assert!(TaskOutcome::decode(&TaskFailed::full_name(), &[0xff, 0xff]).is_err());
    }

    #[test]
    fn an_actor_acting_through_a_service_is_the_user() {
        let actor = Actor::user_via("alice", "chat");
        assert_eq!(
            (actor.kind, actor.id.as_str(), actor.via.as_str()),
            (ActorKind::User as i32, "alice", "chat")
        );
    }
}
