//! Request limits from the contract (see the comments of `chat.proto`), each violation named
//! by its field. The collector and the free-text rule (no NUL, no control characters but tab
//! and line breaks) are the kernel's; the limits only chat has are an extension of it here.

use codingagent_kernel::validate::Violations;

pub(crate) const MAX_TITLE: usize = 200;
pub(crate) const MAX_MEMBERS: usize = 50;
pub(crate) const MAX_TEXT: usize = 32_000;
pub(crate) const MAX_QUERY: usize = 500;
pub(crate) const MAX_TASK_ID: usize = 128;
const MAX_USER_ID: usize = 256;

/// Chat's own checks, on the kernel's collector.
pub(crate) trait ChatChecks {
    /// A conversation title: 1..200 characters, not only whitespace (empty when `allow_empty`).
    fn title(&mut self, field: &str, title: &str, allow_empty: bool);
    /// Other users' ids, each listed once, not the owner, at most 50.
    fn members(&mut self, field: &str, members: &[String], owner: &str);
    /// Message text: 1..32,000 characters, or empty when `may_be_empty`.
    fn message_text(&mut self, field: &str, text: &str, may_be_empty: bool);
}

impl ChatChecks for Violations {
    fn title(&mut self, field: &str, title: &str, allow_empty: bool) {
        if title.trim().is_empty() && !(allow_empty && title.is_empty()) {
            self.add(field, "must not be empty or only whitespace");
        } else {
            self.text(field, title, MAX_TITLE);
        }
    }

    fn members(&mut self, field: &str, members: &[String], owner: &str) {
        if members.len() > MAX_MEMBERS {
            self.add(field, format!("at most {MAX_MEMBERS} members"));
        }
        for (index, member) in members.iter().enumerate() {
            let field = format!("{field}[{index}]");
            let bad = member.trim().is_empty()
                || member.chars().count() > MAX_USER_ID
                || member == owner
                || members[..index].contains(member);
            if bad {
                self.add(&field, "must be another user's id, listed once, not the owner");
            } else {
                self.text(&field, member, MAX_USER_ID);
            }
        }
    }

    fn message_text(&mut self, field: &str, text: &str, may_be_empty: bool) {
        if text.trim().is_empty() && !may_be_empty {
            self.add(field, "must not be empty");
        } else {
            self.text(field, text, MAX_TEXT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_counted_in_characters_and_every_field_is_named() {
        let mut v = Violations::new();
        v.title("title", &"é".repeat(200), false);
        v.message_text("text", &"é".repeat(32_000), false);
        assert!(v.is_empty(), "limits count characters, not bytes");
        v.title("title", "   ", false);
        v.title("title", "", true);
        v.message_text("text", "", false);
        v.message_text("text", "", true);
        v.message_text("text", &"x".repeat(32_001), true);
        v.members("member_ids", &["bob".into(), "bob".into(), "alice".into(), " ".into()], "alice");
        v.id("conversation_id", "nope");
        v.request_id("has space");
        assert_eq!(
            v.fields().collect::<Vec<_>>(),
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

    #[test]
    fn control_characters_are_refused_in_titles_texts_and_member_ids() {
        let mut v = Violations::new();
        v.title("title", "tabs\tand\nbreaks are fine", false);
        v.message_text("text", "line one\r\n\tline two", false);
        assert!(v.is_empty());
        v.title("title", "nul\0", false);
        v.message_text("text", "mark\u{2}ed\u{3}", false);
        v.members("member_ids", &["bob".into(), "eve\0".into()], "alice");
        assert_eq!(v.fields().collect::<Vec<_>>(), ["title", "text", "member_ids[1]"]);
    }
}
