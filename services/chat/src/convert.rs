//! Small conversions between storage, identity and the contract.

use codingagent_kernel::identity::Caller;
use codingagent_proto::codingagent::common::v1::{Actor, ActorKind};

pub(crate) fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: at.timestamp(), nanos: at.timestamp_subsec_nanos() as i32 }
}

pub(crate) fn now() -> prost_types::Timestamp {
    timestamp(chrono::Utc::now())
}

pub(crate) fn to_chrono(at: &prost_types::Timestamp) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).ok()?)
}

/// The actor a caller acts as: the user, also when a service acts on the user's behalf (the
/// gateway, a bot relaying what the user typed): the user wrote it and holds the rights over
/// it. Only a service acting on its own account (the assistant) is the service.
///
/// The contract's `Actor` has no room for the service in between; it is logged by
/// [`via`] where a change is made on someone's behalf.
pub(crate) fn actor(caller: &Caller) -> Actor {
    match caller.user_id() {
        Some(user) => Actor { kind: ActorKind::User as i32, id: user.to_owned() },
        None => Actor { kind: ActorKind::Service as i32, id: caller.subject.clone() },
    }
}

/// The service acting for a user, if the caller is one (for logs and audits).
pub(crate) fn via(caller: &Caller) -> Option<&str> {
    (caller.is_service() && caller.on_behalf_of.is_some()).then_some(caller.subject.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_acting_for_a_user_acts_as_that_user() {
        let user = |id: &str| Actor { kind: ActorKind::User as i32, id: id.into() };
        assert_eq!(actor(&Caller::user("alice")), user("alice"));
        assert_eq!(actor(&Caller::service_for("gateway", "alice", vec![])), user("alice"));
        assert_eq!(via(&Caller::service_for("gateway", "alice", vec![])), Some("gateway"));
        assert_eq!(
            actor(&Caller::service("assistant")),
            Actor { kind: ActorKind::Service as i32, id: "assistant".into() }
        );
        assert_eq!(via(&Caller::service("assistant")), None);
        assert_eq!(via(&Caller::user("alice")), None);
    }
}
