//! The orchestration service's errors and the one mapping to gRPC statuses.

use codingagent_kernel::error::{self, FieldViolation};
use std::time::Duration;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum OrchestrationError {
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
    #[error("{1}")]
    Exhausted(&'static str, String, Option<Duration>),
    #[error(transparent)]
    Status(#[from] Box<Status>),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

pub type Result<T, E = OrchestrationError> = std::result::Result<T, E>;

impl OrchestrationError {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldViolation::new(field, description)])
    }

    pub fn not_found(kind: &'static str, id: impl Into<String>) -> Self {
        Self::NotFound { kind, id: id.into() }
    }

    pub fn precondition(reason: &'static str, message: impl Into<String>) -> Self {
        Self::FailedPrecondition(reason, message.into())
    }
}

/// What the kernel's request validator found: `v.finish()?` in a handler.
impl From<Vec<FieldViolation>> for OrchestrationError {
    fn from(violations: Vec<FieldViolation>) -> Self {
        Self::Invalid(violations)
    }
}

impl From<Status> for OrchestrationError {
    fn from(status: Status) -> Self {
        Self::Status(Box::new(status))
    }
}

impl From<codingagent_kernel::idempotency::Error> for OrchestrationError {
    fn from(error: codingagent_kernel::idempotency::Error) -> Self {
        Self::Status(Box::new(error.into()))
    }
}

/// A database error as the status a stream ends with (streams yield statuses, not this enum).
pub(crate) fn db_status(error: sqlx::Error) -> Status {
    error::database(&error)
}

impl From<OrchestrationError> for Status {
    fn from(value: OrchestrationError) -> Self {
        match value {
            OrchestrationError::Invalid(violations) => error::invalid_argument(violations),
            OrchestrationError::NotFound { kind, id } => error::not_found(kind, &id),
            OrchestrationError::Denied(reason, message) => error::permission_denied(reason, message),
            OrchestrationError::FailedPrecondition(reason, message) => {
                error::failed_precondition(reason, message)
            }
            OrchestrationError::OutOfRange(message) => {
                error::StatusBuilder::new(tonic::Code::OutOfRange, "OUT_OF_RANGE", message).build()
            }
            OrchestrationError::Exhausted(reason, message, retry) => {
                error::resource_exhausted(reason, message, retry)
            }
            OrchestrationError::Status(status) => *status,
            OrchestrationError::Database(error) => error::database(&error),
        }
    }
}
