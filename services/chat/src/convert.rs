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

/// The actor a caller acts as: the user, or the service (the assistant posts as itself).
pub(crate) fn actor(caller: &Caller) -> Actor {
    match caller.user_id() {
        Some(user) if !caller.is_service() => Actor { kind: ActorKind::User as i32, id: user.to_owned() },
        _ => Actor { kind: ActorKind::Service as i32, id: caller.subject.clone() },
    }
}
