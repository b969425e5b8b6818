//! Request checks every RPC shares: ids this service issued, and the text rule every
//! free-text field obeys.

use crate::error::{ClassifierError, Result};
use codingagent_kernel::error::FieldViolation;
use codingagent_kernel::validate;
use uuid::Uuid;

/// `validate::text`'s violation of `value`, if any, into `violations`: NUL and other control
/// characters are refused in every free-text field (NUL would fail the statement storing it).
pub(crate) fn check_text(field: &str, value: &str, violations: &mut Vec<FieldViolation>) {
    if let Err(violation) = validate::text(field, value) {
        violations.push(violation);
    }
}

/// An id this service returned, or INVALID_ARGUMENT naming `field`.
pub(crate) fn uuid(field: &str, value: &str) -> Result<Uuid> {
    Uuid::parse_str(value).map_err(|_| ClassifierError::invalid(field, "must be an id this service returned"))
}
