//! The chat service's shared state, and what every durable change does after it commits.

use crate::attachments::Attachments;
use crate::cache::RecentMessages;
use crate::config::Config;
use crate::error::Result;
use crate::fanout::Fanout;
use crate::presence::Presence;
use crate::store;
use codingagent_kernel::idempotency::{Key, mutate};
use codingagent_proto::codingagent::chat::v1 as pb;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug)]
pub(crate) struct Engine {
    pub config: Config,
    pub pool: PgPool,
    pub fanout: Fanout,
    pub cache: RecentMessages,
    pub presence: Presence,
    pub attachments: Attachments,
}

/// A durable event recorded in a transaction, to announce once it commits.
#[derive(Debug)]
pub(crate) struct Recorded {
    conversation: Uuid,
    event: pb::ConversationEvent,
}

impl Engine {
    /// Runs one durable mutation through the kernel's idempotent [`mutate`], then announces
    /// the durable event `act` recorded (if any) once it committed.
    pub(crate) async fn mutate<R: prost::Message + Default>(
        &self,
        key: Key<'_>,
        act: impl AsyncFnOnce(&mut PgConnection) -> Result<(R, Option<Recorded>)>,
    ) -> Result<R> {
        let (response, recorded) = mutate(&self.pool, &key, act).await?;
        if let Some(recorded) = recorded.flatten() {
            self.announce(recorded).await;
        }
        Ok(response)
    }

    /// Inside the writer's transaction, after [`store::next_seq`] gave it `seq`: records
    /// `event` under that seq for replays.
    pub(crate) async fn record(
        &self,
        conn: &mut PgConnection,
        conversation: Uuid,
        seq: i64,
        event: pb::conversation_event::Event,
    ) -> Result<Recorded, sqlx::Error> {
        let event = pb::ConversationEvent { seq, time: Some(crate::convert::now()), event: Some(event) };
        store::append_event(conn, conversation, &event).await?;
        Ok(Recorded { conversation, event })
    }

    /// After the commit: the cached history is stale and every stream hears of the event.
    pub(crate) async fn announce(&self, recorded: Recorded) {
        self.cache.invalidate(recorded.conversation).await;
        self.fanout.publish(recorded.conversation, recorded.event).await;
    }

    /// Publishes an ephemeral event (typing, presence), which repeats the latest durable seq.
    pub(crate) async fn announce_ephemeral(
        &self,
        conversation: Uuid,
        last_seq: i64,
        event: pb::conversation_event::Event,
    ) {
        let event =
            pb::ConversationEvent { seq: last_seq, time: Some(crate::convert::now()), event: Some(event) };
        self.fanout.publish(conversation, event).await;
    }
}
