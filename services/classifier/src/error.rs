//! The classifier service's errors and the one mapping to gRPC statuses.

use codingagent_kernel::error::{self, FieldViolation, StatusBuilder};
use std::time::Duration;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum ClassifierError {
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{1}")]
    FailedPrecondition(&'static str, String),
    #[error("not enough samples to train")]
    NotEnoughSamples(Vec<(String, String)>),
    #[error("training job {0} is running")]
    TrainingInProgress(String),
    #[error("{caller} made {limit} classifications in the last minute")]
    RateLimited { caller: String, limit: u32, retry_after: Duration },
    #[error("permission denied")]
    Denied(#[from] Box<Status>),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

pub type Result<T, E = ClassifierError> = std::result::Result<T, E>;

impl ClassifierError {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldViolation::new(field, description)])
    }
}

impl From<Status> for ClassifierError {
    fn from(status: Status) -> Self {
        Self::Denied(Box::new(status))
    }
}

impl From<codingagent_kernel::idempotency::Error> for ClassifierError {
    fn from(error: codingagent_kernel::idempotency::Error) -> Self {
        match error {
            codingagent_kernel::idempotency::Error::Reused => {
                Self::Invalid(vec![codingagent_kernel::idempotency::reused_violation()])
            }
            codingagent_kernel::idempotency::Error::Database(error) => Self::Database(error),
        }
    }
}

impl From<ClassifierError> for Status {
    fn from(value: ClassifierError) -> Self {
        match value {
            ClassifierError::Invalid(violations) => error::invalid_argument(violations),
            ClassifierError::NotFound { kind, id } => error::not_found(kind, &id),
            ClassifierError::FailedPrecondition(reason, message) => {
                error::failed_precondition(reason, message)
            }
            ClassifierError::NotEnoughSamples(short) => short
                .iter()
                .fold(
                    StatusBuilder::new(
                        Code::FailedPrecondition,
                        "NOT_ENOUGH_SAMPLES",
                        format!("{} labels have too few samples to train on", short.len()),
                    ),
                    |builder, (subject, description)| {
                        builder.precondition_violation("SAMPLES", subject, description)
                    },
                )
                .build(),
            ClassifierError::TrainingInProgress(job) => StatusBuilder::new(
                Code::FailedPrecondition,
                "TRAINING_IN_PROGRESS",
                format!("training job {job} is still running"),
            )
            .metadata("job_id", job)
            .build(),
            ClassifierError::RateLimited { caller, limit, retry_after } => StatusBuilder::new(
                Code::ResourceExhausted,
                "RATE_LIMITED",
                format!("{caller} made {limit} classifications in the last minute"),
            )
            .metadata("limit", limit.to_string())
            .retry_after(retry_after)
            .build(),
            ClassifierError::Denied(status) => *status,
            ClassifierError::Database(error) => error::database(&error),
        }
    }
}
