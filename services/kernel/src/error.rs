//! Building `tonic::Status` values that clients can act on.
//!
//! Every error carries a `google.rpc.ErrorInfo` with a stable machine-readable reason, and
//! where it helps a `BadRequest` (which fields are wrong and why), `ResourceInfo` or
//! `RetryInfo` (when to try again). They travel in `grpc-status-details-bin`, which grpcurl,
//! grpc-web and every gRPC SDK can decode. Internal causes are logged here once and never
//! shown to clients.

use std::collections::HashMap;
use std::fmt::Display;
use std::time::Duration;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `domain` of every `ErrorInfo` CodingAgent emits.
pub const ERROR_DOMAIN: &str = "codingagent";

/// Accumulates the details of one error status.
#[derive(Debug)]
pub struct StatusBuilder {
    code: Code,
    message: String,
    reason: &'static str,
    metadata: HashMap<String, String>,
    details: ErrorDetails,
}

impl StatusBuilder {
    /// `reason` is an UPPER_SNAKE_CASE constant clients may match on.
    pub fn new(code: Code, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), reason, metadata: HashMap::new(), details: ErrorDetails::new() }
    }

    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    pub fn field_violation(mut self, field: impl Into<String>, description: impl Into<String>) -> Self {
        self.details.add_bad_request_violation(field, description);
        self
    }

    /// A `PreconditionFailure` violation: what state (`kind`, e.g. `SAMPLES`) of which
    /// `subject` keeps the call from succeeding.
    pub fn precondition_violation(
        mut self,
        kind: impl Into<String>,
        subject: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        self.details.add_precondition_failure_violation(kind, subject, description);
        self
    }

    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.details.set_retry_info(Some(delay));
        self
    }

    pub fn resource(mut self, resource_type: impl Into<String>, name: impl Into<String>) -> Self {
        self.details.set_resource_info(resource_type, name, "", "");
        self
    }

    pub fn build(mut self) -> Status {
        self.details.set_error_info(self.reason, ERROR_DOMAIN, self.metadata);
        Status::with_error_details(self.code, self.message, self.details)
    }
}

/// A handler's result as tonic wants it: the message in a `Response`, or the service's
/// error turned into its status through the service's one `From<…> for Status` table.
pub fn respond<T, E: Into<Status>>(result: Result<T, E>) -> Result<tonic::Response<T>, Status> {
    result.map(tonic::Response::new).map_err(Into::into)
}

/// One invalid field of a request: its path (`budget.max_tokens`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self { field: field.into(), description: description.into() }
    }
}

/// `INVALID_ARGUMENT` listing every violation, so a client can fix all fields at once.
pub fn invalid_argument(violations: impl IntoIterator<Item = FieldViolation>) -> Status {
    let violations: Vec<FieldViolation> = violations.into_iter().collect();
    let message = match violations.as_slice() {
        [only] => format!("invalid {}: {}", only.field, only.description),
        many => format!("{} invalid fields", many.len()),
    };
    violations
        .into_iter()
        .fold(StatusBuilder::new(Code::InvalidArgument, "INVALID_ARGUMENT", message), |builder, v| {
            builder.field_violation(v.field, v.description)
        })
        .build()
}

/// `NOT_FOUND`. Also the answer for resources the caller may not see, so that probing ids
/// reveals nothing about other users' data.
pub fn not_found(resource_type: &str, id: &str) -> Status {
    StatusBuilder::new(Code::NotFound, "NOT_FOUND", format!("{resource_type} {id} not found"))
        .resource(resource_type, id)
        .build()
}

pub fn already_exists(resource_type: &str, id: &str) -> Status {
    StatusBuilder::new(Code::AlreadyExists, "ALREADY_EXISTS", format!("{resource_type} {id} already exists"))
        .resource(resource_type, id)
        .build()
}

pub fn unauthenticated(message: impl Into<String>) -> Status {
    StatusBuilder::new(Code::Unauthenticated, "UNAUTHENTICATED", message).build()
}

pub fn permission_denied(reason: &'static str, message: impl Into<String>) -> Status {
    StatusBuilder::new(Code::PermissionDenied, reason, message).build()
}

pub fn failed_precondition(reason: &'static str, message: impl Into<String>) -> Status {
    StatusBuilder::new(Code::FailedPrecondition, reason, message).build()
}

/// `RESOURCE_EXHAUSTED` for quotas, budgets and rate limits, with when to retry if known.
pub fn resource_exhausted(
    reason: &'static str,
    message: impl Into<String>,
    retry_after: Option<Duration>,
) -> Status {
    let builder = StatusBuilder::new(Code::ResourceExhausted, reason, message);
    match retry_after {
        Some(delay) => builder.retry_after(delay),
        None => builder,
    }
    .build()
}

/// `UNAVAILABLE`: a dependency is down; the call is safe to retry after `retry_after`.
pub fn unavailable(reason: &'static str, message: impl Into<String>, retry_after: Duration) -> Status {
    StatusBuilder::new(Code::Unavailable, reason, message).retry_after(retry_after).build()
}

/// `INTERNAL` with a generic message; the cause is logged here, once, with an id the client
/// also receives so the two can be matched.
pub fn internal(cause: &dyn Display) -> Status {
    let incident = uuid::Uuid::new_v4().to_string();
    tracing::error!(incident = %incident, error = %cause, "internal error");
    StatusBuilder::new(Code::Internal, "INTERNAL", "internal error").metadata("incident", incident).build()
}

/// What a database error means to a caller, decided from its SQLSTATE or driver error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbErrorKind {
    /// 23505: the row already exists.
    UniqueViolation,
    /// 23503: a referenced row is missing.
    ForeignKeyViolation,
    /// 23514 / 23502 / 22xxx: the value breaks a constraint or cannot be represented.
    InvalidValue,
    /// 40001 / 40P01: the transaction lost a race; retrying is safe.
    Conflict,
    /// 57014: the statement was cancelled (usually a timeout).
    Cancelled,
    /// Connection-level trouble (08xxx, 53xxx, 57P0x, pool timeouts, I/O): the database is
    /// unreachable or overloaded.
    Unavailable,
    /// A query that must return a row returned none.
    RowNotFound,
    /// Anything else: a bug or an unexpected state.
    Other,
}

impl DbErrorKind {
    pub fn of(error: &sqlx::Error) -> Self {
        match error {
            sqlx::Error::RowNotFound => Self::RowNotFound,
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_) => Self::Unavailable,
            sqlx::Error::Database(db) => Self::of_sqlstate(db.code().as_deref().unwrap_or("")),
            _ => Self::Other,
        }
    }

    pub fn of_sqlstate(code: &str) -> Self {
        match code {
            "23505" => Self::UniqueViolation,
            "23503" => Self::ForeignKeyViolation,
            "23514" | "23502" => Self::InvalidValue,
            "40001" | "40P01" => Self::Conflict,
            "57014" => Self::Cancelled,
            code if code.starts_with("22") => Self::InvalidValue,
            code if code.starts_with("08") || code.starts_with("53") || code.starts_with("57P") => {
                Self::Unavailable
            }
            _ => Self::Other,
        }
    }

    /// The gRPC code a handler answers with when it has no more specific mapping.
    pub fn code(self) -> Code {
        match self {
            Self::UniqueViolation => Code::AlreadyExists,
            Self::ForeignKeyViolation => Code::FailedPrecondition,
            Self::InvalidValue => Code::InvalidArgument,
            Self::Conflict => Code::Aborted,
            Self::Cancelled => Code::DeadlineExceeded,
            Self::Unavailable => Code::Unavailable,
            Self::RowNotFound => Code::NotFound,
            Self::Other => Code::Internal,
        }
    }
}

/// A status for a database error the handler did not expect: transient failures become
/// retryable statuses, everything else is logged as internal.
pub fn database(error: &sqlx::Error) -> Status {
    match DbErrorKind::of(error) {
        DbErrorKind::Unavailable => {
            tracing::warn!(error = %error, "database unavailable");
            unavailable("DATABASE_UNAVAILABLE", "the database is unavailable", Duration::from_secs(1))
        }
        DbErrorKind::Conflict => {
            StatusBuilder::new(Code::Aborted, "CONFLICT", "concurrent update, retry").build()
        }
        DbErrorKind::Cancelled => {
            StatusBuilder::new(Code::DeadlineExceeded, "QUERY_CANCELLED", "the query took too long").build()
        }
        DbErrorKind::UniqueViolation
        | DbErrorKind::ForeignKeyViolation
        | DbErrorKind::InvalidValue
        | DbErrorKind::RowNotFound
        | DbErrorKind::Other => internal(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_lists_every_field() {
        let status = invalid_argument([
            FieldViolation::new("text", "must not be empty"),
            FieldViolation::new("page_size", "must not be negative"),
        ]);
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let fields: Vec<_> =
            details.bad_request().unwrap().field_violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["text", "page_size"]);
        assert_eq!(details.error_info().unwrap().domain, ERROR_DOMAIN);
    }

    #[test]
    fn single_violation_is_named_in_the_message() {
        let status = invalid_argument([FieldViolation::new("text", "must not be empty")]);
        assert_eq!(status.message(), "invalid text: must not be empty");
    }

    #[test]
    fn retry_info_is_attached() {
        let status = resource_exhausted("RATE_LIMITED", "slow down", Some(Duration::from_secs(3)));
        let details = status.get_error_details();
        assert_eq!(details.retry_info().unwrap().retry_delay, Some(Duration::from_secs(3)));
        assert_eq!(details.error_info().unwrap().reason, "RATE_LIMITED");
    }

    #[test]
    fn internal_hides_the_cause() {
        let status = internal(&"password authentication failed for user x");
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
        assert!(status.get_error_details().error_info().unwrap().metadata.contains_key("incident"));
    }

    #[test]
    fn sqlstates_map_to_codes() {
        for (state, code) in [
            ("23505", Code::AlreadyExists),
            ("23503", Code::FailedPrecondition),
            ("23514", Code::InvalidArgument),
            ("22P02", Code::InvalidArgument),
            ("40001", Code::Aborted),
            ("40P01", Code::Aborted),
            ("57014", Code::DeadlineExceeded),
            ("08006", Code::Unavailable),
            ("53300", Code::Unavailable),
            ("57P01", Code::Unavailable),
            ("42P01", Code::Internal),
        ] {
            assert_eq!(DbErrorKind::of_sqlstate(state).code(), code, "{state}");
        }
        assert_eq!(DbErrorKind::of(&sqlx::Error::PoolTimedOut).code(), Code::Unavailable);
        assert_eq!(DbErrorKind::of(&sqlx::Error::RowNotFound).code(), Code::NotFound);
    }
}
