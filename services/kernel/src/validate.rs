//! Request validation every service shares: a [`Violations`] collector, so a client learns
//! about every bad field at once (`INVALID_ARGUMENT` with one `BadRequest` field violation
//! each), and the text rule every free-text field obeys.
//!
//! Text may not hold NUL or other control characters except tab and newline (LF, CR): NUL
//! makes PostgreSQL fail the whole statement, and characters such as U+0002/U+0003 are the
//! highlight markers of search snippets, so a message carrying them could forge highlights.

use crate::error::FieldViolation;
use uuid::Uuid;

/// Collects field violations for one request.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, field: &str, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    pub fn push(&mut self, violation: FieldViolation) {
        self.0.push(violation);
    }

    /// Records `result`'s violation, if any.
    pub fn check(&mut self, result: Result<(), FieldViolation>) {
        if let Err(violation) = result {
            self.0.push(violation);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The fields named so far, in order (for tests and logs).
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|v| v.field.as_str())
    }

    /// An id this service issued; `None` (and a violation) otherwise.
    pub fn id(&mut self, field: &str, value: &str) -> Option<Uuid> {
        let parsed = Uuid::parse_str(value).ok();
        if parsed.is_none() {
            self.add(field, "must be an id this service returned");
        }
        parsed
    }

    /// An optional id: empty is `None` without a violation.
    pub fn optional_id(&mut self, field: &str, value: &str) -> Option<Uuid> {
        if value.is_empty() { None } else { self.id(field, value) }
    }

    /// An optional idempotency key (see [`crate::idempotency::validate`]).
    pub fn request_id(&mut self, request_id: &str) {
        self.check(crate::idempotency::validate("request_id", request_id));
    }

    /// Free text of at most `max_chars` characters (not bytes) that obeys [`text`].
    pub fn text(&mut self, field: &str, value: &str, max_chars: usize) {
        let chars = value.chars().count();
        if chars > max_chars {
            self.add(field, format!("at most {max_chars} characters, not {chars}"));
        } else {
            self.check(text(field, value));
        }
    }

    /// `Ok` when nothing was found, else the violations for `INVALID_ARGUMENT`.
    pub fn finish(self) -> Result<(), Vec<FieldViolation>> {
        if self.0.is_empty() { Ok(()) } else { Err(self.0) }
    }
}

/// Refuses NUL and control characters other than tab, LF and CR in free text.
pub fn text(field: &str, value: &str) -> Result<(), FieldViolation> {
    match value.char_indices().find(|(_, c)| c.is_control() && !matches!(c, '\t' | '\n' | '\r')) {
        None => Ok(()),
        Some((at, c)) => Err(FieldViolation::new(
            field,
            format!("must not contain control characters (U+{:04X} at byte {at})", u32::from(c)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_refuses_nul_and_control_characters_but_keeps_whitespace() {
        assert!(text("t", "line one\n\tline two\r\n").is_ok());
        assert!(text("t", "ünïcödé 🦀 and \u{200b}").is_ok());
        for bad in ["nul\0", "start\u{2}highlight\u{3}", "bell\u{7}", "del\u{7f}", "c1\u{85}"] {
            let violation = text("t", bad).unwrap_err();
            assert!(violation.description.contains("control characters"), "{bad:?}");
        }
    }

    #[test]
    fn every_violation_is_named_by_its_field() {
        let mut v = Violations::new();
        v.text("title", &"é".repeat(10), 10);
        assert!(v.is_empty(), "limits count characters, not bytes");
        v.text("title", &"é".repeat(11), 10);
        v.text("text", "a\0b", 100);
        v.id("conversation_id", "nope");
        assert_eq!(v.optional_id("after_id", ""), None);
        v.request_id("has space");
        assert_eq!(v.fields().collect::<Vec<_>>(), ["title", "text", "conversation_id", "request_id"]);
        assert_eq!(v.finish().unwrap_err().len(), 4);
    }
}
