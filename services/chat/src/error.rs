//! The chat service's errors and the one mapping to gRPC statuses.

use codingagent_kernel::error::{self, FieldViolation};
use std::time::Duration;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{1}")]
    Denied(&'static str, String),
    #[error("{1}")]
    FailedPrecondition(&'static str, String),
    #[error("{0}")]
    OutOfRange(String),
    #[error("{0}")]
    RateLimited(String, Duration),
    #[error(transparent)]
    Status(#[from] Box<Status>),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

pub type Result<T, E = ChatError> = std::result::Result<T, E>;

impl ChatError {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldViolation::new(field, description)])
    }

    pub fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        Self::NotFound { kind, id: id.into() }
    }
}

/// What the kernel's request validator found: `v.finish()?` in a handler.
impl From<Vec<FieldViolation>> for ChatError {
    fn from(violations: Vec<FieldViolation>) -> Self {
        Self::Invalid(violations)
    }
}

impl From<Status> for ChatError {
    fn from(status: Status) -> Self {
        Self::Status(Box::new(status))
    }
}

impl From<codingagent_kernel::idempotency::Error> for ChatError {
    fn from(error: codingagent_kernel::idempotency::Error) -> Self {
        match error {
            codingagent_kernel::idempotency::Error::Reused => {
                Self::Invalid(vec![codingagent_kernel::idempotency::reused_violation()])
            }
            codingagent_kernel::idempotency::Error::Database(error) => Self::Database(error),
        }
    }
}

impl From<ChatError> for Status {
    fn from(value: ChatError) -> Self {
        match value {
            ChatError::Invalid(violations) => error::invalid_argument(violations),
            ChatError::NotFound { kind, id } => error::not_found(kind, &id),
            ChatError::Denied(reason, message) => error::permission_denied(reason, message),
            ChatError::FailedPrecondition(reason, message) => error::failed_precondition(reason, message),
            ChatError::OutOfRange(message) => {
                error::StatusBuilder::new(tonic::Code::OutOfRange, "OUT_OF_RANGE", message).build()
            }
            ChatError::RateLimited(message, retry) => {
                error::resource_exhausted("RATE_LIMITED", message, Some(retry))
            }
            ChatError::Status(status) => *status,
            ChatError::Database(error) => error::database(&error),
        }
    }
}
