//! Domain events over Kafka (ARCHITECTURE §6), exactly once in effect.
//!
//! Producers never talk to Kafka inside a request: they [`outbox::enqueue`] the event in the
//! same PostgreSQL transaction as the state change, so an event exists if and only if the
//! change committed. The [`relay::Relay`] publishes committed rows with the idempotent
//! producer (`acks=all`) and marks them sent; a crash between publishing and marking
//! publishes the row again, which consumers absorb through their [`inbox`]: the processed
//! event id is recorded in the same transaction as the handler's effects, and offsets are
//! committed only afterwards.

pub mod cloudevents;
pub mod dead_letters;
pub mod inbox;
pub mod outbox;
pub mod relay;
pub mod topics;

pub use inbox::{EventHandler, HandlerError, InboxConsumer, ReceivedEvent};
pub use outbox::{NOTIFY_SELECT, OutboxEvent, enqueue};
pub use relay::Relay;
