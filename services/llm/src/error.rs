//! The llm service's errors and the one mapping to gRPC statuses.

use crate::provider::ProviderError;
use codingagent_kernel::error::{self, FieldViolation, StatusBuilder};
use std::time::Duration;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    #[error("model {model} not found")]
    UnknownModel { model: String, available: Vec<String> },
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("no model is available for this call")]
    NoModel,
    /// `used` counts the tokens charged this month and those held by calls in flight;
    /// `needed` is what this call would have reserved.
    #[error(
        "{subject} has used or reserved {used} of {limit} tokens this month; this call needs up to {needed}"
    )]
    BudgetExhausted { subject: String, limit: i64, used: i64, needed: i64, resets_in: Duration },
    #[error("{0}")]
    Unavailable(String),
    #[error("{1}")]
    FailedPrecondition(&'static str, String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("permission denied")]
    Denied(#[from] Box<Status>),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

pub type Result<T, E = LlmError> = std::result::Result<T, E>;

impl LlmError {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldViolation::new(field, description)])
    }
}

/// How long callers should wait before retrying a provider that is down.
const PROVIDER_RETRY: Duration = Duration::from_secs(5);

impl From<codingagent_kernel::idempotency::Error> for LlmError {
    fn from(error: codingagent_kernel::idempotency::Error) -> Self {
        match error {
            codingagent_kernel::idempotency::Error::Reused => {
                Self::Invalid(vec![codingagent_kernel::idempotency::reused_violation()])
            }
            codingagent_kernel::idempotency::Error::Database(error) => Self::Database(error),
        }
    }
}

impl From<LlmError> for Status {
    fn from(value: LlmError) -> Self {
        match value {
            LlmError::Invalid(violations) => error::invalid_argument(violations),
            LlmError::UnknownModel { model, available } => {
                StatusBuilder::new(Code::NotFound, "MODEL_NOT_FOUND", format!("model {model} not found"))
                    .resource("model", &model)
                    .metadata("available", available.join(","))
                    .build()
            }
            LlmError::NotFound { kind, id } => error::not_found(kind, &id),
            LlmError::NoModel => {
                error::unavailable("NO_MODEL", "no model is available for this call", PROVIDER_RETRY)
            }
            LlmError::BudgetExhausted { subject, limit, used, needed, resets_in } => StatusBuilder::new(
                Code::ResourceExhausted,
                "BUDGET_EXHAUSTED",
                format!(
                    "{subject} has used or reserved {used} of {limit} tokens this month; this call needs up to {needed}"
                ),
            )
            .metadata("limit", limit.to_string())
            .metadata("used", used.to_string())
            .metadata("needed", needed.to_string())
            .retry_after(resets_in)
            .build(),
            LlmError::Unavailable(message) => {
                error::unavailable("PROVIDER_UNAVAILABLE", message, PROVIDER_RETRY)
            }
            LlmError::FailedPrecondition(reason, message) => error::failed_precondition(reason, message),
            LlmError::AlreadyExists(what) => error::already_exists("ab_test", &what),
            LlmError::Denied(status) => *status,
            LlmError::Provider(error) => match error {
                ProviderError::Unavailable(message) | ProviderError::Stream(message) => {
                    error::unavailable("PROVIDER_UNAVAILABLE", message, PROVIDER_RETRY)
                }
                ProviderError::ModelNotFound(model) => StatusBuilder::new(
                    Code::NotFound,
                    "MODEL_NOT_FOUND",
                    format!("model {model} not found at its provider"),
                )
                .resource("model", &model)
                .build(),
                ProviderError::Rejected(message) => {
                    StatusBuilder::new(Code::InvalidArgument, "PROVIDER_REJECTED", message).build()
                }
                ProviderError::ContextExceeded(message) => {
                    StatusBuilder::new(Code::InvalidArgument, "CONTEXT_EXCEEDED", message).build()
                }
                ProviderError::Unsupported(what) => error::failed_precondition(
                    "UNSUPPORTED",
                    format!("{what} is not supported by this provider"),
                ),
            },
            LlmError::Database(error) => error::database(&error),
        }
    }
}
