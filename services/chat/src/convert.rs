//! The contract's shared conversions (`codingagent_proto::helpers`), and who a caller is as
//! a participant of a conversation.

use codingagent_kernel::identity::Caller;
use codingagent_proto::codingagent::common::v1::Actor;

pub(crate) use codingagent_proto::helpers::{now, timestamp, to_chrono};

/// The person (or the assistant) behind a call, as authorship, typing and presence show
/// them: a user acting through a service (the gateway, a bot relaying what the user typed)
/// wrote it and holds the rights over it, and is one participant however they connect. Events
/// carry [`Caller::actor`], which also notes the service in between.
pub(crate) fn participant(caller: &Caller) -> Actor {
    Actor { via: String::new(), ..caller.actor() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_acting_for_a_user_is_that_user() {
        assert_eq!(participant(&Caller::service_for("gateway", "alice", vec![])), Actor::user("alice"));
        assert_eq!(participant(&Caller::user("alice")), Actor::user("alice"));
        assert_eq!(participant(&Caller::service("assistant")), Actor::service("assistant"));
        assert_eq!(Caller::service_for("gateway", "alice", vec![]).actor().via, "gateway");
    }
}
