//! Request limits from the contract (see the comments of `chat.proto`), each violation named
//! by its field.

use codingagent_kernel::error::FieldViolation;
use uuid::Uuid;

pub(crate) const MAX_TITLE: usize = 200;
pub(crate) const MAX_MEMBERS: usize = 50;
pub(crate) const MAX_TEXT: usize = 32_000;
pub(crate) const MAX_QUERY: usize = 500;
const MAX_USER_ID: usize = 256;

/// Collects violations, so a client learns about every bad field at once.
#[derive(Debug, Default)]
pub(crate) struct Violations(pub Vec<FieldViolation>);

impl Violations {
    pub(crate) fn add(&mut self, field: &str, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// An id this service issued; `None` (and a violation) otherwise.
    pub(crate) fn id(&mut self, field: &str, value: &str) -> Option<Uuid> {
        let parsed = Uuid::parse_str(value).ok();
        if parsed.is_none() {
            self.add(field, "must be an id this service returned");
        }
        parsed
    }

    /// An optional id: empty is `None` without a violation.
    pub(crate) fn optional_id(&mut self, field: &str, value: &str) -> Option<Uuid> {
        if value.is_empty() { None } else { self.id(field, value) }
    }

    pub(crate) fn title(&mut self, field: &str, title: &str, allow_empty: bool) {
        let chars = title.chars().count();
        if chars > MAX_TITLE {
            self.add(field, format!("at most {MAX_TITLE} characters, not {chars}"));
        } else if title.trim().is_empty() && !(allow_empty && title.is_empty()) {
            self.add(field, "must not be empty or only whitespace");
        }
    }

    pub(crate) fn members(&mut self, field: &str, members: &[String], owner: &str) {
        if members.len() > MAX_MEMBERS {
            self.add(field, format!("at most {MAX_MEMBERS} members"));
        }
        for (index, member) in members.iter().enumerate() {
            let bad = member.trim().is_empty()
                || member.len() > MAX_USER_ID
                || member == owner
                || members[..index].contains(member);
            if bad {
                self.add(
                    &format!("{field}[{index}]"),
                    "must be another user's id, listed once, not the owner",
                );
            }
        }
    }

    /// Message text: 1..32,000 characters, or empty when `may_be_empty`.
    pub(crate) fn text(&mut self, field: &str, text: &str, may_be_empty: bool) {
        let chars = text.chars().count();
        if chars > MAX_TEXT {
            self.add(field, format!("at most {MAX_TEXT} characters, not {chars}"));
        } else if text.trim().is_empty() && !may_be_empty {
            self.add(field, "must not be empty");
        }
    }

    pub(crate) fn request_id(&mut self, request_id: &str) {
        if let Err(violation) = codingagent_kernel::idempotency::validate("request_id", request_id) {
            self.0.push(violation);
        }
    }

    pub(crate) fn finish(self) -> crate::error::Result<()> {
        if self.0.is_empty() { Ok(()) } else { Err(crate::error::ChatError::Invalid(self.0)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(v: Violations) -> Vec<String> {
        v.0.into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn limits_are_counted_in_characters_and_every_field_is_named() {
        let mut v = Violations::default();
        v.title("title", &"é".repeat(200), false);
        v.text("text", &"é".repeat(32_000), false);
        assert!(v.0.is_empty(), "limits count characters, not bytes");
        v.title("title", "   ", false);
        v.title("title", "", true);
        v.text("text", "", false);
        v.text("text", "", true);
        v.text("text", &"x".repeat(32_001), true);
        v.members("member_ids", &["bob".into(), "bob".into(), "alice".into(), " ".into()], "alice");
        v.id("conversation_id", "nope");
        v.request_id("has space");
        assert_eq!(
            fields(v),
            [
                "title",
                "text",
                "text",
                "member_ids[1]",
                "member_ids[2]",
                "member_ids[3]",
                "conversation_id",
                "request_id"
            ]
        );
    }
}
