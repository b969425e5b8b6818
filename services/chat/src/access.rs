//! Who may do what with a conversation. Anyone who cannot see it gets NOT_FOUND, so ids cannot
//! be probed; members who can see it but may not change it get PERMISSION_DENIED.

use crate::error::{ChatError, Result};
use crate::store::{self, Conversation};
use codingagent_kernel::identity::Caller;
use codingagent_proto::codingagent::common::v1::Actor;
use sqlx::PgConnection;
use uuid::Uuid;

/// The caller's standing in one conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Owner,
    Member,
    /// A service acting on its own account (the assistant): may read and post everywhere.
    Service,
}

/// The caller's role, or NOT_FOUND when the conversation is not theirs to see.
pub(crate) fn role(conversation: &Conversation, caller: &Caller) -> Result<Role> {
    match caller.user_id() {
        None if caller.is_service() => Ok(Role::Service),
        Some(user) if user == conversation.owner => Ok(Role::Owner),
        Some(user) if conversation.member_ids.iter().any(|m| m == user) => Ok(Role::Member),
        _ => Err(ChatError::not_found("conversation", conversation.id.to_string())),
    }
}

/// The live conversation `id` and the caller's role in it; NOT_FOUND when it does not exist
/// or is not theirs to see (the two look alike on purpose). `lock` takes its row lock, as
/// every change of the conversation or its messages must.
pub(crate) async fn find(
    conn: &mut PgConnection,
    id: Uuid,
    caller: &Caller,
    lock: bool,
) -> Result<(Conversation, Role)> {
    let conversation = store::conversation_by_id(conn, id, lock)
        .await?
        .ok_or_else(|| ChatError::not_found("conversation", id.to_string()))?;
    let role = role(&conversation, caller)?;
    Ok((conversation, role))
}

/// Owner-only changes: members are told they may not; services may not either.
pub(crate) fn require_owner(conversation: &Conversation, caller: &Caller) -> Result<()> {
    match role(conversation, caller)? {
        Role::Owner => Ok(()),
        Role::Member | Role::Service => {
            Err(ChatError::Denied("OWNER_REQUIRED", "only the conversation's owner may do this".into()))
        }
    }
}

/// Whether `actor` wrote the message with `author`.
pub(crate) fn is_author(author: Option<&Actor>, actor: &Actor) -> bool {
    author.is_some_and(|a| a.kind == actor.kind && a.id == actor.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn conversation() -> Conversation {
        Conversation {
            id: Uuid::nil(),
            owner: "alice".into(),
            member_ids: vec!["bob".into()],
            proto: Default::default(),
        }
    }

    #[test]
    fn roles_follow_ownership_and_membership() {
        let c = conversation();
        assert_eq!(role(&c, &Caller::user("alice")).unwrap(), Role::Owner);
        assert_eq!(role(&c, &Caller::user("bob")).unwrap(), Role::Member);
        assert_eq!(role(&c, &Caller::service("assistant")).unwrap(), Role::Service);
        assert_eq!(role(&c, &Caller::service_for("gateway", "alice", vec![])).unwrap(), Role::Owner);
        assert!(matches!(role(&c, &Caller::user("carol")), Err(ChatError::NotFound { .. })));
        assert!(matches!(
            role(&c, &Caller::service_for("gateway", "carol", vec![])),
            Err(ChatError::NotFound { .. })
        ));
    }

    #[test]
    fn only_the_owner_administers() {
        let c = conversation();
        assert!(require_owner(&c, &Caller::user("alice")).is_ok());
        assert!(matches!(require_owner(&c, &Caller::user("bob")), Err(ChatError::Denied(..))));
        assert!(matches!(require_owner(&c, &Caller::user("carol")), Err(ChatError::NotFound { .. })));
    }
}
